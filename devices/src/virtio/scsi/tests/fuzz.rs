//! Property-based fuzzing of everything a guest controls: descriptor chains (addresses,
//! lengths, flags, order, indirect tables, avail ring), header sizes, LUN fields and
//! CDBs. The properties: nothing panics (the in-memory disk also panics on any
//! out-of-range backend call), every chain terminates, and the used length never
//! exceeds the writable buffers.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use proptest::prelude::*;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{cmd_req, guest_memory, lun_field, DiskSpec};
use crate::virtio::scsi::control::process_control;
use crate::virtio::scsi::lun::Lun;
use crate::virtio::scsi::process::{process_command, HeaderSizes};
use crate::virtio::scsi::worker::serve_queue;
use crate::virtio::scsi::{CONTROL_QUEUE, REQUEST_QUEUE};
use crate::virtio::{ActiveQueue, GuestMemoryMmap, VirtioInterrupt};

const REQ: u64 = 0x1000;
const RESP: u64 = 0x8000;
const SCRATCH_TABLE: u64 = 0xC000;

/// Opcodes the device implements, so that fuzzing reaches their field checks.
const OPCODES: &[u8] = &[
    0x00, 0x03, 0x08, 0x0A, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x35, 0x41, 0x42, 0x5A, 0x88,
    0x8A, 0x91, 0x93, 0x9E, 0xA0,
];

fn cdb() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![3 => prop::sample::select(OPCODES), 1 => any::<u8>()];
    // Small values often, so LBAs and lengths land inside the small disk.
    let byte = prop_oneof![4 => Just(0u8), 3 => 0u8..4, 2 => any::<u8>()];
    (opcode, prop::collection::vec(byte, 31)).prop_map(|(op, rest)| {
        let mut c = vec![op];
        c.extend(rest);
        c
    })
}

fn lun() -> impl Strategy<Value = [u8; 8]> {
    prop_oneof![
        4 => (0u8..3).prop_map(|t| lun_field(t, 0)),
        1 => (0u8..3, any::<u16>()).prop_map(|(t, l)| lun_field(t, l & 0x3fff)),
        1 => any::<[u8; 8]>(),
    ]
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0x1000u64..0xF_0000,           // first region
        1 => 0xF_F000u64..0x10_1000,        // its end and the hole
        1 => 0x2F_F000u64..0x30_1000,       // end of the second region
        1 => any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..256, 3 => 0u32..8192, 1 => any::<u32>()]
}

type Chain = Vec<(u64, u32, bool)>;

/// A request header + data-out, then a response header + data-in, as a driver builds.
fn well_formed() -> impl Strategy<Value = Chain> {
    (0u32..4096, 0u32..4096)
        .prop_map(|(out, inn)| vec![(REQ, 51 + out, false), (RESP, 108 + inn, true)])
}

fn random_chain() -> impl Strategy<Value = Chain> {
    prop::collection::vec((addr(), len(), any::<bool>()), 0..12)
}

/// (address, length, device-writable) triples.
fn chain() -> impl Strategy<Value = Chain> {
    prop_oneof![
        2 => well_formed(),
        2 => random_chain(),
        // A good start with a random tail.
        2 => (well_formed(), random_chain()).prop_map(|(mut a, b)| { a.extend(b); a }),
    ]
}

fn sizes() -> impl Strategy<Value = HeaderSizes> {
    prop_oneof![
        6 => Just(HeaderSizes { cdb_size: 32, sense_size: 96 }),
        1 => (0u32..64, 0u32..256).prop_map(|(c, s)| HeaderSizes { cdb_size: c, sense_size: s }),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(c, s)| HeaderSizes { cdb_size: c, sense_size: s }),
    ]
}

fn luns(discard: bool, read_only: bool, volatile_cache: bool) -> Vec<Mutex<Lun>> {
    (0..2)
        .map(|i| {
            let spec = DiskSpec {
                size: 64 * 1024,
                discard,
                read_only,
                volatile_cache,
                serial: if i == 0 { Some("FUZZ".into()) } else { None },
            };
            Mutex::new(Lun::new(i, spec.config(&format!("disk{i}")).0))
        })
        .collect()
}

struct NoInterrupt;

impl VirtioInterrupt for NoInterrupt {
    fn notify_queue(&self, _: u16) {}
    fn notify_config(&self) {}
}

/// Lay out a request header and data-out at REQ (as most chains point there).
fn write_request(mem: &GuestMemoryMmap, lun: [u8; 8], cdb: &[u8], data_out: &[u8]) {
    let mut r = cmd_req(lun, 1, &[]);
    r[19..51].copy_from_slice(cdb);
    r.extend_from_slice(data_out);
    mem.write_slice(&r, GuestAddress(REQ)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_chains_and_cdbs_never_panic(
        descs in chain(),
        lun in lun(),
        cdb in cdb(),
        data_out in prop::collection::vec(any::<u8>(), 0..4096),
        sizes in sizes(),
        flags in any::<(bool, bool, bool)>(),
    ) {
        let mem = guest_memory();
        write_request(&mem, lun, &cdb, &data_out);
        let luns = luns(flags.0, flags.1, flags.2);
        let descriptors: Vec<Descriptor> = descs
            .iter()
            .map(|&(a, l, w)| if w { super::wr(a, l) } else { super::rd(a, l) })
            .collect();
        let writable: u64 = descs.iter().filter(|d| d.2).map(|d| u64::from(d.1)).sum();

        let used = process_command(&mem, descriptors.iter().copied(), &luns, sizes, &mut Vec::new());
        prop_assert!(u64::from(used) <= writable, "used {} > writable {}", used, writable);

        let used = process_control(&mem, descriptors, &luns);
        prop_assert!(u64::from(used) <= writable);
    }

    #[test]
    fn arbitrary_rings_never_panic_or_hang(
        table in prop::collection::vec((addr(), len(), any::<u16>(), 0u16..20), 16),
        avail in prop::collection::vec(0u16..20, 16),
        avail_idx in prop_oneof![3 => 0u16..20, 1 => any::<u16>()],
        indirect in prop::collection::vec(any::<u8>(), 256),
        control in any::<bool>(),
        cdb in cdb(),
        lun in lun(),
    ) {
        let mem = guest_memory();
        write_request(&mem, lun, &cdb, &[0x5A; 1024]);
        mem.write_slice(&indirect, GuestAddress(SCRATCH_TABLE)).unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x10_0000 - 0x2000), 16);
        for (i, &(a, l, flags, next)) in table.iter().enumerate() {
            // Point some descriptors at the random "indirect table".
            let a = if flags & 0x8000 != 0 { SCRATCH_TABLE } else { a };
            let d = Descriptor::new(a, l, flags & 0x7, next);
            vq.desc_table().store(i as u16, RawDescriptor::from(d)).unwrap();
        }
        for (i, &head) in avail.iter().enumerate() {
            vq.avail().ring().ref_at(i).unwrap().store(head);
        }
        vq.avail().idx().store(avail_idx);

        let mut aq = ActiveQueue {
            index: if control { CONTROL_QUEUE } else { REQUEST_QUEUE },
            queue: vq.create_queue::<Queue>().unwrap(),
            kick: EventFd::new(0).unwrap(),
        };
        let luns = luns(true, false, true);
        let sizes = HeaderSizes { cdb_size: 32, sense_size: 96 };
        serve_queue(&mem, &NoInterrupt, &mut aq, &luns, sizes, &mut Vec::new(), &AtomicBool::new(false));
        // Serving again (a second kick) must also return.
        serve_queue(&mem, &NoInterrupt, &mut aq, &luns, sizes, &mut Vec::new(), &AtomicBool::new(false));
    }
}
