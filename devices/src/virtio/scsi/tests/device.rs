//! The whole device: config space, activation, a worker serving mock queues, reset.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use oxvm_api::IoTune;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_bindings::virtio_scsi::{VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_OK};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{cmd_req, lun_field, read_resp, DiskSpec, DiskState};
use crate::block::{Throttle, Throttled};
use crate::virtio::scsi::{LunConfig, ScsiError, VirtioScsi, MAX_TARGETS};
use crate::virtio::{
    ActivateError, ActiveQueue, GuestMemoryMmap, VirtioDevice, VirtioInterrupt, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_SCSI,
};

/// Records queue notifications and lets a test wait for them.
#[derive(Default)]
struct TestInterrupt {
    queues: Mutex<Vec<u16>>,
    cond: Condvar,
}

impl VirtioInterrupt for TestInterrupt {
    fn notify_queue(&self, queue: u16) {
        self.queues.lock().unwrap().push(queue);
        self.cond.notify_all();
    }

    fn notify_config(&self) {}
}

impl TestInterrupt {
    fn wait_for(&self, queue: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut q = self.queues.lock().unwrap();
        while !q.contains(&queue) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("timed out waiting for an interrupt");
            q = self.cond.wait_timeout(q, left).unwrap().0;
        }
        q.retain(|&x| x != queue);
    }
}

fn disks(n: usize) -> (Vec<LunConfig>, Vec<Arc<Mutex<DiskState>>>) {
    (0..n)
        .map(|i| DiskSpec::default().config(&format!("disk{i}")))
        .unzip()
}

/// Queue rings at 0x0, 0x4000, 0x8000; buffers from 1 MiB on.
fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

fn ring_addr(q: u16) -> GuestAddress {
    GuestAddress(0x4000 * u64::from(q))
}

const FEATURES: u64 = F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC;

fn activate(
    dev: &mut VirtioScsi,
    mem: &GuestMemoryMmap,
    mocks: &[MockSplitQueue<'_, GuestMemoryMmap>],
    features: u64,
) -> Result<(Arc<TestInterrupt>, Vec<EventFd>), ActivateError> {
    let interrupt = Arc::new(TestInterrupt::default());
    let mut kicks = Vec::new();
    let mut queues = Vec::new();
    for (i, m) in mocks.iter().enumerate() {
        let kick = EventFd::new(0).unwrap();
        kicks.push(kick.try_clone().unwrap());
        queues.push(ActiveQueue {
            index: i as u16,
            queue: m.create_queue::<Queue>().unwrap(),
            kick,
        });
    }
    dev.activate(mem.clone(), interrupt.clone(), features, queues)?;
    Ok((interrupt, kicks))
}

/// Put one chain of (addr, len, device-writable) buffers at descriptor `first`.
fn add_chain(vq: &MockSplitQueue<'_, GuestMemoryMmap>, first: u16, bufs: &[(u64, u32, bool)]) {
    let descs: Vec<RawDescriptor> = bufs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, writable))| {
            let last = i + 1 == bufs.len();
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { first + i as u16 + 1 };
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect();
    vq.add_desc_chains(&descs, first).unwrap();
}

/// Wait until the used ring of `vq` has `n` entries and return entry `n - 1`
/// as (id, len).
fn wait_used(vq: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while vq.used().idx().load() < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for used entry {n}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let e = vq.used().ring().ref_at(usize::from(n - 1)).unwrap().load();
    (e.id(), e.len())
}

#[test]
fn identity_queues_features() {
    let (configs, _) = disks(1);
    let dev = VirtioScsi::new(configs).unwrap();
    assert_eq!(dev.device_type(), TYPE_SCSI);
    assert_eq!(dev.queue_max_sizes(), vec![128, 128, 128]);
    assert_eq!(dev.device_features(), FEATURES);
    assert_eq!(dev.num_disks(), 1);
}

#[test]
fn config_space_is_byte_exact() {
    let (configs, _) = disks(3);
    let dev = VirtioScsi::new(configs).unwrap();
    let mut b = [0xEEu8; 40];
    dev.read_config(0, &mut b);
    let expected: [u8; 40] = [
        1, 0, 0, 0, // num_queues
        126, 0, 0, 0, // seg_max
        0xFF, 0xFF, 0, 0, // max_sectors
        128, 0, 0, 0, // cmd_per_lun
        16, 0, 0, 0, // event_info_size
        96, 0, 0, 0, // sense_size
        32, 0, 0, 0, // cdb_size
        0, 0, // max_channel
        2, 0, // max_target
        0, 0, 0, 0, // max_lun
        0, 0, 0, 0, // past the end
    ];
    assert_eq!(b, expected);
    let mut one = [0u8; 2];
    dev.read_config(30, &mut one);
    assert_eq!(one, [2, 0]);
    dev.read_config(u64::MAX, &mut one);
    assert_eq!(one, [0, 0]);
}

#[test]
fn driver_may_write_only_the_header_sizes() {
    let (configs, _) = disks(1);
    let mut dev = VirtioScsi::new(configs).unwrap();
    dev.write_config(20, &64u32.to_le_bytes());
    dev.write_config(24, &[16]);
    dev.write_config(0, &[9, 9, 9, 9]);
    dev.write_config(30, &[7, 7]);
    let mut b = [0u8; 36];
    dev.read_config(0, &mut b);
    assert_eq!(b[0..4], [1, 0, 0, 0]);
    assert_eq!(b[20..28], [64, 0, 0, 0, 16, 0, 0, 0]);
    assert_eq!(b[30..32], [0, 0]);
    dev.reset();
    dev.read_config(0, &mut b);
    assert_eq!(b[20..28], [96, 0, 0, 0, 32, 0, 0, 0]);
}

#[test]
fn constructor_checks_the_disks() {
    let too_many = (0..MAX_TARGETS + 1)
        .map(|i| DiskSpec::default().config(&format!("d{i}")).0)
        .collect();
    assert!(matches!(
        VirtioScsi::new(too_many),
        Err(ScsiError::TooManyDisks(257))
    ));
    let dup = vec![
        DiskSpec::default().config("a").0,
        DiskSpec::default().config("a").0,
    ];
    assert!(matches!(
        VirtioScsi::new(dup),
        Err(ScsiError::DuplicateId(_))
    ));
    let tiny = DiskSpec {
        size: 511,
        ..Default::default()
    };
    assert!(matches!(
        VirtioScsi::new(vec![tiny.config("t").0]),
        Err(ScsiError::TooSmall { size: 511, .. })
    ));
    for serial in ["", "tab\there", &"x".repeat(65), "é"] {
        let spec = DiskSpec {
            serial: Some(serial.into()),
            ..Default::default()
        };
        assert!(
            matches!(
                VirtioScsi::new(vec![spec.config("s").0]),
                Err(ScsiError::InvalidSerial { .. })
            ),
            "{serial:?}"
        );
    }
    assert!(VirtioScsi::new(Vec::new()).is_ok());
}

#[test]
fn activation_errors() {
    let mem = memory();
    let mocks: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem, ring_addr(q), 128))
        .collect();
    let (configs, _) = disks(1);
    let mut dev = VirtioScsi::new(configs).unwrap();
    assert!(matches!(
        activate(&mut dev, &mem, &mocks, F_RING_EVENT_IDX),
        Err(ActivateError::MissingFeatures(F_VERSION_1))
    ));
    let four: Vec<_> = (0..4)
        .map(|q| MockSplitQueue::create(&mem, ring_addr(q), 128))
        .collect();
    assert!(matches!(
        activate(&mut dev, &mem, &four, FEATURES),
        Err(ActivateError::BadQueue(3, _))
    ));
    assert!(!dev.is_active());
    activate(&mut dev, &mem, &mocks, FEATURES).unwrap();
    assert!(matches!(
        activate(&mut dev, &mem, &mocks, FEATURES),
        Err(ActivateError::Other(_))
    ));
    dev.reset();
    assert!(!dev.is_active());
}

#[test]
fn requests_complete_through_the_worker() {
    let mem = memory();
    let mocks: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem, ring_addr(q), 128))
        .collect();
    let (configs, states) = disks(2);
    let mut dev = VirtioScsi::new(configs).unwrap();
    let metrics = dev.metrics();
    let (interrupt, kicks) = activate(&mut dev, &mem, &mocks, FEATURES).unwrap();
    let req_q = &mocks[2];

    // WRITE(10) of 2 blocks to target 1.
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let mut readable = cmd_req(lun_field(1, 0), 1, &[0x2A, 0, 0, 0, 0, 9, 0, 0, 2, 0]);
    readable.extend_from_slice(&data);
    mem.write_slice(&readable, GuestAddress(0x10_0000)).unwrap();
    add_chain(
        req_q,
        0,
        &[
            (0x10_0000, 51, false),
            (0x10_0000 + 51, 1024, false),
            (0x11_0000, 108, true),
        ],
    );
    kicks[2].write(1).unwrap();
    assert_eq!(wait_used(req_q, 1), (0, 108));
    interrupt.wait_for(2);
    let r = read_resp(&mem, 0x11_0000);
    assert_eq!((r.response, r.status), (VIRTIO_SCSI_S_OK as u8, 0));
    assert_eq!(states[1].lock().unwrap().writes, vec![(9 * 512, 1024)]);

    // READ(16) it back, plus a request for a missing target, in one kick.
    let cdb = [0x88, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0];
    mem.write_slice(&cmd_req(lun_field(1, 0), 2, &cdb), GuestAddress(0x12_0000))
        .unwrap();
    add_chain(
        req_q,
        3,
        &[
            (0x12_0000, 51, false),
            (0x13_0000, 108, true),
            (0x14_0000, 1024, true),
        ],
    );
    mem.write_slice(
        &cmd_req(lun_field(5, 0), 3, &[0, 0, 0, 0, 0, 0]),
        GuestAddress(0x15_0000),
    )
    .unwrap();
    add_chain(req_q, 6, &[(0x15_0000, 51, false), (0x16_0000, 108, true)]);
    kicks[2].write(1).unwrap();
    assert_eq!(wait_used(req_q, 2), (3, 108 + 1024));
    assert_eq!(wait_used(req_q, 3), (6, 108));
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back, GuestAddress(0x14_0000)).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        read_resp(&mem, 0x16_0000).response,
        VIRTIO_SCSI_S_BAD_TARGET as u8
    );

    // A TMF on the control queue.
    let mut tmf = Vec::new();
    tmf.extend_from_slice(&0u32.to_le_bytes());
    tmf.extend_from_slice(&5u32.to_le_bytes()); // LOGICAL UNIT RESET
    tmf.extend_from_slice(&lun_field(0, 0));
    tmf.extend_from_slice(&0u64.to_le_bytes());
    mem.write_slice(&tmf, GuestAddress(0x17_0000)).unwrap();
    mem.write_slice(&[0xAA], GuestAddress(0x18_0000)).unwrap();
    add_chain(
        &mocks[0],
        0,
        &[(0x17_0000, 24, false), (0x18_0000, 1, true)],
    );
    kicks[0].write(1).unwrap();
    assert_eq!(wait_used(&mocks[0], 1), (0, 1));
    interrupt.wait_for(0);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x18_0000)).unwrap(), 0);

    // Event queue buffers are held, not completed.
    add_chain(&mocks[1], 0, &[(0x19_0000, 16, true)]);
    kicks[1].write(1).unwrap();

    let snap = metrics.snapshot();
    assert_eq!(snap.luns.len(), 2);
    assert_eq!(snap.luns[1].id, "disk1");
    assert_eq!(snap.luns[1].target, 1);
    assert_eq!(
        (snap.luns[1].write_ops, snap.luns[1].write_bytes),
        (1, 1024)
    );
    assert_eq!((snap.luns[1].read_ops, snap.luns[1].read_bytes), (1, 1024));
    assert_serialize(&snap);
    assert!(scsi_thread_exists());

    // Reset joins the worker; the held event buffer was never completed.
    dev.reset();
    assert!(!dev.is_active());
    assert_eq!(mocks[1].used().idx().load(), 0);

    // The device can be activated again with fresh queues.
    let mem2 = memory();
    let mocks2: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem2, ring_addr(q), 128))
        .collect();
    let (_, kicks2) = activate(&mut dev, &mem2, &mocks2, FEATURES).unwrap();
    mem2.write_slice(
        &cmd_req(lun_field(0, 0), 1, &[0, 0, 0, 0, 0, 0]),
        GuestAddress(0x10_0000),
    )
    .unwrap();
    add_chain(
        &mocks2[2],
        0,
        &[(0x10_0000, 51, false), (0x11_0000, 108, true)],
    );
    kicks2[2].write(1).unwrap();
    assert_eq!(wait_used(&mocks2[2], 1), (0, 108));
    // Dropping an active device stops its worker too.
    drop(dev);
    let snap = metrics.snapshot();
    assert_eq!(
        snap.luns[0].check_conditions, 0,
        "TEST UNIT READY succeeded"
    );
}

#[test]
fn requests_queued_before_activation_are_served() {
    let mem = memory();
    let mocks: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem, ring_addr(q), 128))
        .collect();
    mem.write_slice(
        &cmd_req(lun_field(0, 0), 1, &[0, 0, 0, 0, 0, 0]),
        GuestAddress(0x10_0000),
    )
    .unwrap();
    add_chain(
        &mocks[2],
        0,
        &[(0x10_0000, 51, false), (0x11_0000, 108, true)],
    );
    let (configs, _) = disks(1);
    let mut dev = VirtioScsi::new(configs).unwrap();
    let (interrupt, _kicks) = activate(&mut dev, &mem, &mocks, FEATURES).unwrap();
    assert_eq!(wait_used(&mocks[2], 1), (0, 108));
    interrupt.wait_for(2);
    dev.reset();
}

#[test]
fn a_corrupt_avail_index_does_not_wedge_the_worker() {
    let mem = memory();
    let mocks: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem, ring_addr(q), 128))
        .collect();
    let (configs, _) = disks(1);
    let mut dev = VirtioScsi::new(configs).unwrap();
    let (_, kicks) = activate(&mut dev, &mem, &mocks, FEATURES).unwrap();
    // avail.idx 1000 ahead of next_avail: no chain can be popped.
    mocks[2].avail().idx().store(1000);
    kicks[2].write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // Reset must still return promptly.
    let start = Instant::now();
    dev.reset();
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn reset_does_not_wait_for_throttling() {
    let mem = memory();
    let mocks: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem, ring_addr(q), 128))
        .collect();
    // 512 bytes per second: the second 64 KiB write would wait two minutes.
    let tune = IoTune {
        total_bytes_sec: 512,
        ..Default::default()
    };
    let (mut config, state) = DiskSpec::default().config("slow");
    config.backend = Box::new(Throttled::new(
        config.backend,
        Throttle::new(&tune).unwrap().unwrap(),
    ));
    let mut dev = VirtioScsi::new(vec![config]).unwrap();
    let (_, kicks) = activate(&mut dev, &mem, &mocks, FEATURES).unwrap();
    // Two WRITE(10)s of 128 blocks to LBA 0 and 128.
    for (i, lba) in [0u8, 128].into_iter().enumerate() {
        let at = 0x10_0000 + 0x1000 * i as u64;
        let cdb = [0x2A, 0, 0, 0, 0, lba, 0, 0, 128, 0];
        mem.write_slice(&cmd_req(lun_field(0, 0), i as u64, &cdb), GuestAddress(at))
            .unwrap();
        add_chain(
            &mocks[2],
            3 * i as u16,
            &[
                (at, 51, false),
                (0x20_0000, 65536, false),
                (at + 0x800, 108, true),
            ],
        );
    }
    kicks[2].write(1).unwrap();
    assert_eq!(wait_used(&mocks[2], 1), (0, 108));
    // The disk records each admission before the throttle decides: once the second is
    // recorded, the worker is in (or entering) its two-minute wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.lock().unwrap().admitted.len() < 2 {
        assert!(Instant::now() < deadline, "second write never admitted");
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    dev.reset();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "reset waited for the throttle"
    );
    // Activating again works: waits are re-armed, and a command completes.
    let mem2 = memory();
    let mocks2: Vec<_> = (0..3)
        .map(|q| MockSplitQueue::create(&mem2, ring_addr(q), 128))
        .collect();
    let (_, kicks2) = activate(&mut dev, &mem2, &mocks2, FEATURES).unwrap();
    mem2.write_slice(
        &cmd_req(lun_field(0, 0), 1, &[0, 0, 0, 0, 0, 0]),
        GuestAddress(0x10_0000),
    )
    .unwrap();
    add_chain(
        &mocks2[2],
        0,
        &[(0x10_0000, 51, false), (0x11_0000, 108, true)],
    );
    kicks2[2].write(1).unwrap();
    assert_eq!(wait_used(&mocks2[2], 1), (0, 108));
    dev.reset();
}

/// Whether a thread named `scsi-req` exists in this process (tests run in parallel,
/// so only its presence while our device is active means something).
fn scsi_thread_exists() -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "scsi-req")
            })
        })
        .unwrap_or(false)
}

fn assert_serialize<T: serde::Serialize>(_: &T) {}
