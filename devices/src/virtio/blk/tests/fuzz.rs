//! Property ("fuzz") tests: arbitrary descriptor tables, available rings, headers,
//! sectors and segments must never panic the device, never write outside the disk, and
//! never change a read-only disk. Kept fast (proptest's default 256 cases).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use proptest::prelude::*;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::support::{CountingInterrupt, TestQueue};
use oxvm_api::{CacheMode, DiscardMode};
use vmm_sys_util::tempdir::TempDir;

use crate::block::aio::direct_io_dir;
use crate::block::{DiskBackend, DiskOptions, MemDisk, RawDisk};
use crate::virtio::blk::execute::Executor;
use crate::virtio::blk::metrics::BlkMetrics;
use crate::virtio::blk::request::{parse, RequestKind, RequestLimits};
use crate::virtio::blk::worker::QueueWorker;
use crate::virtio::blk::worker_async::AsyncWorker;
use crate::virtio::GuestMemoryMmap;

const MEM: u64 = 0x40000;
const SLOT: u64 = 0x1000;
const SLOTS: u64 = 8;
const QSIZE: u16 = 16;
const DISK: usize = 64 * 1024;
const CAP: u64 = DISK as u64 / 512;

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (1..=SLOTS).prop_map(|k| k * SLOT),
        2 => (1..=SLOTS, 0..SLOT).prop_map(|(k, o)| k * SLOT + o),
        1 => MEM - 0x200..MEM + 0x200,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
}

fn len() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(16),
        Just(32),
        Just(512),
        Just(1024),
        Just(4096),
        Just(4097),
        0u32..0x3000,
        any::<u32>(),
        Just(u32::MAX),
    ]
}

fn descriptor() -> impl Strategy<Value = Descriptor> {
    // flags: NEXT 1, WRITE 2, INDIRECT 4 (and sometimes garbage bits).
    (
        addr(),
        len(),
        prop_oneof![0u16..8, any::<u16>()],
        0u16..QSIZE + 4,
    )
        .prop_map(|(a, l, f, n)| Descriptor::new(a, l, f, n))
}

fn req_type() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(4),
        Just(8),
        Just(11),
        Just(13),
        any::<u32>()
    ]
}

fn sector() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0..CAP + 2,
        Just(CAP - 1),
        Just(CAP),
        any::<u64>(),
        Just(u64::MAX)
    ]
}

/// What a slot of guest memory holds: a header and a discard/write-zeroes segment.
fn slot_content() -> impl Strategy<Value = (u32, u64, u64, u32, u32)> {
    (
        req_type(),
        sector(),
        sector(),
        prop_oneof![0u32..4, Just(CAP as u32), any::<u32>()],
        prop_oneof![Just(0u32), Just(1), any::<u32>()],
    )
}

#[derive(Debug, Clone)]
struct Case {
    table: Vec<Descriptor>,
    heads: Vec<u16>,
    avail_idx: Option<u16>,
    slots: Vec<(u32, u64, u64, u32, u32)>,
    read_only: bool,
    discard: bool,
    write_zeroes: bool,
    event_idx: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(descriptor(), 1..=QSIZE as usize),
        prop::collection::vec(0u16..QSIZE + 4, 0..=QSIZE as usize),
        prop_oneof![4 => Just(None), 1 => any::<u16>().prop_map(Some)],
        prop::collection::vec(slot_content(), SLOTS as usize),
        any::<(bool, bool, bool, bool)>(),
    )
        .prop_map(
            |(table, heads, avail_idx, slots, (read_only, discard, write_zeroes, event_idx))| {
                Case {
                    table,
                    heads,
                    avail_idx,
                    slots,
                    read_only,
                    discard,
                    write_zeroes,
                    event_idx,
                }
            },
        )
}

fn fill_slots(mem: &GuestMemoryMmap, slots: &[(u32, u64, u64, u32, u32)]) {
    for (k, &(t, sector, seg_sector, num, flags)) in slots.iter().enumerate() {
        let base = GuestAddress((k as u64 + 1) * SLOT);
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&t.to_le_bytes());
        b[8..16].copy_from_slice(&sector.to_le_bytes());
        b[16..24].copy_from_slice(&seg_sector.to_le_bytes());
        b[24..28].copy_from_slice(&num.to_le_bytes());
        b[28..32].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&b, base).unwrap();
    }
}

fn limits(c: &Case) -> RequestLimits {
    RequestLimits {
        capacity_sectors: CAP,
        read_only: c.read_only,
        discard: c.discard,
        write_zeroes: c.write_zeroes,
        max_discard_sectors: 1 << 21,
        max_write_zeroes_sectors: 1 << 17,
    }
}

fn disk(read_only: bool) -> MemDisk {
    let data = (0..DISK).map(|i| (i % 251) as u8).collect();
    let d = MemDisk::from_bytes(data);
    if read_only {
        d.read_only()
    } else {
        d
    }
}

proptest! {
    // Found cases become unit tests; no regression files in the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// The queue worker on an arbitrary queue: no panic, no write past the disk, no
    /// change to a read-only disk, never more used entries than available ones.
    #[test]
    fn arbitrary_queues_never_panic(c in case()) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        fill_slots(&mem, &c.slots);
        let vq = TestQueue::new(&mem, 0, QSIZE);
        for (i, d) in c.table.iter().enumerate() {
            vq.store_desc(i as u16, RawDescriptor::from(*d));
        }
        for (i, &h) in c.heads.iter().enumerate() {
            vq.set_avail_entry(i as u16, h);
        }
        let avail = c.avail_idx.unwrap_or(c.heads.len() as u16);
        vq.set_avail_idx(avail);

        let mut queue = vq.queue();
        queue.set_event_idx(c.event_idx);
        let d = disk(c.read_only);
        let before = d.contents();
        let irq = Arc::new(CountingInterrupt::default());
        let mut worker = QueueWorker {
            id: "fuzz".into(),
            mem: mem.clone(),
            queue,
            index: 0,
            interrupt: irq,
            executor: Executor::new("fuzz".into(), Box::new(d.clone()), limits(&c), [0; 20], Arc::new(BlkMetrics::default())),
            stop: Arc::new(AtomicBool::new(false)),
            broken: false,
        };
        worker.process_queue();
        worker.process_queue();

        let used = vq.used_idx();
        if c.avail_idx.is_none() {
            // Every chain is answered except those whose head is past the queue.
            let valid = c.heads.iter().filter(|&&h| h < QSIZE).count();
            prop_assert_eq!(used as usize, valid);
            prop_assert!(!worker.broken);
        } else {
            prop_assert!(used <= QSIZE);
        }
        prop_assert_eq!(d.size(), DISK as u64);
        if c.read_only {
            prop_assert_eq!(d.contents(), before);
        }
    }

    /// The parser on arbitrary descriptor lists: accepted requests stay inside the
    /// disk and guest memory; executing them never panics.
    #[test]
    fn arbitrary_descriptor_lists(
        descs in prop::collection::vec(descriptor(), 0..12),
        slots in prop::collection::vec(slot_content(), SLOTS as usize),
        flags in any::<(bool, bool, bool)>(),
    ) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        fill_slots(&mem, &slots);
        let c = Case {
            table: vec![],
            heads: vec![],
            avail_idx: None,
            slots: vec![],
            read_only: flags.0,
            discard: flags.1,
            write_zeroes: flags.2,
            event_idx: false,
        };
        // Indirect descriptors only make sense inside a queue.
        let descs: Vec<Descriptor> = descs
            .into_iter()
            .map(|d| Descriptor::new(d.addr().0, d.len(), d.flags() & !4, d.next()))
            .collect();
        let lim = limits(&c);
        if let Ok(req) = parse(descs.iter().copied(), &mem, &lim) {
            prop_assert!(req.status.0 < MEM);
            let in_disk = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|e| e <= DISK as u64);
            match &req.kind {
                RequestKind::In { offset, data } | RequestKind::Out { offset, data } => {
                    prop_assert!(in_disk(*offset, data.len()));
                    prop_assert_eq!(data.len() % 512, 0);
                }
                RequestKind::Discard { offset, len } | RequestKind::WriteZeroes { offset, len, .. } => {
                    prop_assert!(in_disk(*offset, *len));
                    prop_assert!(!lim.read_only);
                }
                RequestKind::Flush | RequestKind::GetId { .. } => {}
            }
            if matches!(req.kind, RequestKind::Out { .. }) {
                prop_assert!(!lim.read_only);
            }
        }
        let d = disk(lim.read_only);
        let mut ex = Executor::new("fuzz".into(), Box::new(d.clone()), lim, [0; 20], Arc::new(BlkMetrics::default()));
        let used = ex.serve(descs.into_iter(), &mem);
        prop_assert!(used as u64 <= u64::from(u32::MAX));
        prop_assert_eq!(d.size(), DISK as u64);
    }
}

/// A raw file with the fuzz disk's contents, opened with cache=none for io=native.
fn native_disk(dir: &TempDir, read_only: bool) -> (std::path::PathBuf, RawDisk) {
    let path = dir.as_path().join("fuzz.raw");
    std::fs::write(&path, disk(false).contents()).unwrap();
    let opts = DiskOptions {
        readonly: read_only,
        cache: CacheMode::None,
        discard: DiscardMode::Unmap,
    };
    (
        path.clone(),
        RawDisk::open(&path, opts).unwrap().with_native_io(),
    )
}

proptest! {
    // Real O_DIRECT files: fewer cases than above.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// The io=native worker on an arbitrary queue: the same guarantees as the queue
    /// worker, and it always comes back to nothing in flight.
    #[test]
    fn arbitrary_queues_never_panic_with_io_native(c in case()) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        fill_slots(&mem, &c.slots);
        let vq = TestQueue::new(&mem, 0, QSIZE);
        for (i, d) in c.table.iter().enumerate() {
            vq.store_desc(i as u16, RawDescriptor::from(*d));
        }
        for (i, &h) in c.heads.iter().enumerate() {
            vq.set_avail_entry(i as u16, h);
        }
        vq.set_avail_idx(c.avail_idx.unwrap_or(c.heads.len() as u16));
        let mut queue = vq.queue();
        queue.set_event_idx(c.event_idx);
        let dir = direct_io_dir();
        let (path, d) = native_disk(&dir, c.read_only);
        let before = std::fs::read(&path).unwrap();
        let base = QueueWorker {
            id: "fuzz".into(),
            mem: mem.clone(),
            queue,
            index: 0,
            interrupt: Arc::new(CountingInterrupt::default()),
            executor: Executor::new("fuzz".into(), Box::new(d), limits(&c), [0; 20], Arc::new(BlkMetrics::default())),
            stop: Arc::new(AtomicBool::new(false)),
            broken: false,
        };
        let native = base.executor.native_io().unwrap();
        let mut w = AsyncWorker::new(base, native).map_err(|(e, _)| e).unwrap();
        // As the thread does: start what fits, complete, start more, until idle.
        for round in 0.. {
            prop_assert!(round <= QSIZE as usize + 1, "the worker keeps finding work");
            w.pump();
            if w.in_flight() == 0 {
                break;
            }
            while w.in_flight() > 0 {
                w.wait_for_completions();
            }
        }
        let used = vq.used_idx();
        if c.avail_idx.is_none() {
            let valid = c.heads.iter().filter(|&&h| h < QSIZE).count();
            prop_assert_eq!(used as usize, valid);
            prop_assert!(!w.base().broken);
        } else {
            prop_assert!(used <= QSIZE);
        }
        drop(w.into_backend());
        let after = std::fs::read(&path).unwrap();
        prop_assert_eq!(after.len(), DISK);
        if c.read_only {
            prop_assert!(after == before, "a read-only disk changed");
        }
    }
}
