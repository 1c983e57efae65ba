//! The whole device: activate with a mock queue, kick, watch the used ring and the disk
//! file, reset, activate again.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxvm_api::{CacheMode, DiscardMode, DiskBus, DiskConfig, DiskFormat, IoMode, IoTune};
use virtio_bindings::virtio_blk::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::support::*;
use crate::block::{DiskOptions, MemDisk, RawDisk, Throttle, Throttled};
use crate::virtio::blk::request::{S_IOERR, S_OK};
use crate::virtio::blk::VirtioBlk;
use crate::virtio::{
    ActiveQueue, GuestMemoryMmap, VirtioDevice, F_RING_EVENT_IDX, F_VERSION_1, TYPE_BLOCK,
};

/// Activate `dev` with the mock queue; returns the kick eventfd's other end.
fn activate(
    dev: &mut VirtioBlk,
    mem: &GuestMemoryMmap,
    vq: &TestQueue,
    irq: Arc<CountingInterrupt>,
    extra_features: u64,
) -> EventFd {
    let features = dev.device_features() | extra_features;
    let queue = vq.queue();
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let kick2 = kick.try_clone().unwrap();
    dev.activate(
        mem.clone(),
        irq,
        features,
        vec![ActiveQueue {
            index: 0,
            queue,
            kick,
        }],
    )
    .unwrap();
    kick2
}

/// Wait until the used ring's index reaches `n`.
fn wait_used(vq: &TestQueue, n: u16) {
    let start = Instant::now();
    while vq.used_idx() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "request not completed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn raw_file(dir: &TempDir, size: usize) -> std::path::PathBuf {
    let path = dir.as_path().join("disk.raw");
    fs::write(&path, pattern(size, 1)).unwrap();
    path
}

#[test]
fn device_serves_requests_on_its_worker_and_resets() {
    let dir = TempDir::new().unwrap();
    let path = raw_file(&dir, 1 << 20);
    let raw = RawDisk::open(&path, DiskOptions::default()).unwrap();
    let mut dev = VirtioBlk::new("vda", Box::new(raw), Some("disk-serial".into()));

    assert_eq!(dev.device_type(), TYPE_BLOCK);
    assert_eq!(dev.queue_max_sizes(), vec![256]);
    let features = dev.device_features();
    assert_ne!(features & F_VERSION_1, 0);
    assert_eq!(
        features & (1 << VIRTIO_BLK_F_DISCARD),
        0,
        "discard=ignore offers no discard"
    );
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);
    let mut past = [0xffu8; 4];
    dev.read_config(94, &mut past);
    assert_eq!(past, [0, 0, 0, 0]);
    dev.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0; 4]);
    dev.write_config(0, &[1, 2, 3]);
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);

    let mem = mem();
    let vq = TestQueue::new(&mem, 0, 256);
    let irq = Arc::new(CountingInterrupt::default());
    let kick = activate(&mut dev, &mem, &vq, irq.clone(), features);
    assert!(dev.is_active());

    // Write 4 KiB at sector 8.
    let payload = pattern(4096, 77);
    mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 8);
    vq.add(
        0,
        &[desc(HDR, 16, R), desc(DATA, 4096, R), desc(STATUS, 1, W)],
    );
    kick.write(1).unwrap();
    wait_used(&vq, 1);
    assert_eq!(vq.used_entry(0), (0, 1));
    assert_eq!(status_at(&mem, STATUS), S_OK);

    // Flush, then the data is in the file.
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_FLUSH, 0);
    vq.add(3, &[desc(HDR + 0x100, 16, R), desc(STATUS + 1, 1, W)]);
    kick.write(1).unwrap();
    wait_used(&vq, 2);
    assert_eq!(status_at(&mem, STATUS + 1), S_OK);
    assert_eq!(fs::read(&path).unwrap()[4096..8192], payload[..]);

    // Two requests with one kick: read it back, and one out of range.
    header(&mem, HDR + 0x200, VIRTIO_BLK_T_IN, 8);
    vq.add(
        5,
        &[
            desc(HDR + 0x200, 16, R),
            desc(DATA + 0x10000, 4096, W),
            desc(STATUS + 2, 1, W),
        ],
    );
    header(&mem, HDR + 0x300, VIRTIO_BLK_T_IN, 2047);
    vq.add(
        8,
        &[
            desc(HDR + 0x300, 16, R),
            desc(DATA + 0x20000, 1024, W),
            desc(STATUS + 3, 1, W),
        ],
    );
    kick.write(1).unwrap();
    wait_used(&vq, 4);
    assert_eq!(vq.used_entry(2), (5, 4097));
    assert_eq!(vq.used_entry(3), (8, 1));
    assert_eq!(status_at(&mem, STATUS + 2), S_OK);
    assert_eq!(status_at(&mem, STATUS + 3), S_IOERR);
    let mut back = vec![0u8; 4096];
    mem.read_slice(&mut back, GuestAddress(DATA + 0x10000))
        .unwrap();
    assert_eq!(back, payload);
    assert!(irq.queue_count() >= 1);

    let m = dev.metrics().snapshot();
    assert_eq!(
        (
            m.write_ops,
            m.write_bytes,
            m.read_ops,
            m.flushes,
            m.invalid_requests
        ),
        (1, 4096, 1, 1, 1)
    );
    assert_serialize(&m);

    // Reset stops the worker and keeps the disk; a new activation works.
    dev.reset();
    assert!(!dev.is_active());
    let vq2 = TestQueue::new(&mem, 0, 256);
    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    vq2.add(
        0,
        &[desc(HDR, 16, R), desc(DATA, 20, W), desc(STATUS, 1, W)],
    );
    // Queued before activation: served without a kick.
    let _kick = activate(&mut dev, &mem, &vq2, irq.clone(), features);
    wait_used(&vq2, 1);
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..11], b"disk-serial");
    dev.reset();
    dev.reset();
}

/// The snapshot is what the API will serve.
fn assert_serialize<T: serde::Serialize>(_: &T) {}

#[test]
fn event_idx_suppresses_and_requests_notifications() {
    let mem = mem();
    let vq = TestQueue::new(&mem, 0, 16);
    let mut dev = VirtioBlk::new("vdb", Box::new(MemDisk::new(1 << 20)), None);
    let irq = Arc::new(CountingInterrupt::default());
    // used_event (after the avail ring) asks for an interrupt only after entry 1.
    vq.set_used_event(1);
    let kick = activate(&mut dev, &mem, &vq, irq.clone(), F_RING_EVENT_IDX);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    vq.add(0, &[desc(HDR, 16, R), desc(STATUS, 1, W)]);
    kick.write(1).unwrap();
    wait_used(&vq, 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(irq.queue_count(), 0, "interrupt despite used_event");
    vq.add(2, &[desc(HDR, 16, R), desc(STATUS + 1, 1, W)]);
    kick.write(1).unwrap();
    wait_used(&vq, 2);
    let start = Instant::now();
    while irq.queue_count() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no interrupt");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_broken_available_ring_stalls_only_this_queue_until_reset() {
    let mem = mem();
    let vq = TestQueue::new(&mem, 0, 16);
    let mut dev = VirtioBlk::new("vdc", Box::new(MemDisk::new(1 << 20)), None);
    let irq = Arc::new(CountingInterrupt::default());
    let kick = activate(&mut dev, &mem, &vq, irq, 0);
    // The available index runs 1000 entries ahead of a 16-entry queue.
    vq.set_avail_idx(1000);
    kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(vq.used_idx(), 0);
    let start = Instant::now();
    dev.reset();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!dev.is_active());
}

#[test]
fn reset_does_not_wait_for_throttling() {
    let mem = mem();
    let vq = TestQueue::new(&mem, 0, 16);
    // 512 bytes per second: the second 64 KiB write would wait two minutes.
    let tune = IoTune {
        total_bytes_sec: 512,
        ..Default::default()
    };
    let throttle = Throttle::new(&tune).unwrap().unwrap();
    let disk = Throttled::new(MemDisk::new(1 << 20), throttle);
    let mut dev = VirtioBlk::new("vdd", Box::new(disk), None);
    let irq = Arc::new(CountingInterrupt::default());
    let kick = activate(&mut dev, &mem, &vq, irq.clone(), 0);
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    vq.add(
        0,
        &[desc(HDR, 16, R), desc(DATA, 65536, R), desc(STATUS, 1, W)],
    );
    vq.add(
        3,
        &[
            desc(HDR, 16, R),
            desc(DATA, 65536, R),
            desc(STATUS + 1, 1, W),
        ],
    );
    kick.write(1).unwrap();
    wait_used(&vq, 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(vq.used_idx(), 1, "the second write was not throttled");
    // The first completion was signalled although the second request is still waiting.
    assert!(irq.queue_count() >= 1);
    let start = Instant::now();
    dev.reset();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "reset waited for the throttle"
    );
    // Activating again works, and waits are possible again.
    let vq2 = TestQueue::new(&mem, 0, 16);
    let irq = Arc::new(CountingInterrupt::default());
    let _kick = activate(&mut dev, &mem, &vq2, irq, 0);
    dev.reset();
}

#[test]
fn activation_refuses_bad_queues() {
    let mem = mem();
    let mut dev = VirtioBlk::new("vde", Box::new(MemDisk::new(4096)), None);
    let irq: Arc<CountingInterrupt> = Arc::default();
    // No queues.
    assert!(dev.activate(mem.clone(), irq.clone(), 0, vec![]).is_err());
    // Rings outside guest memory.
    let mut queue = Queue::new(16).unwrap();
    queue.set_size(16);
    queue.set_ready(true);
    queue.set_desc_table_address(Some(0xffff_0000), Some(0x10));
    queue.set_avail_ring_address(Some(0x1000), Some(0));
    queue.set_used_ring_address(Some(0x2000), Some(0));
    let aq = ActiveQueue {
        index: 0,
        queue,
        kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    };
    assert!(dev.activate(mem.clone(), irq.clone(), 0, vec![aq]).is_err());
    // The backend is still there: a good activation works.
    let vq = TestQueue::new(&mem, 0, 16);
    let _kick = activate(&mut dev, &mem, &vq, irq, 0);
    assert!(dev.is_active());
}

#[test]
fn from_config_opens_a_qcow2_overlay_read_only() {
    let dir = TempDir::new().unwrap();
    let base = dir.as_path().join("base.raw");
    fs::write(&base, pattern(1 << 20, 5)).unwrap();
    let top = dir.as_path().join("top.qcow2");
    crate::block::Qcow2Disk::create(&top, 1 << 20, Some(("base.raw", DiskFormat::Raw))).unwrap();
    let cfg = DiskConfig {
        id: "root".into(),
        path: top,
        format: None,
        bus: DiskBus::Virtio,
        readonly: true,
        cache: CacheMode::Writethrough,
        io: IoMode::Native,
        discard: DiscardMode::Unmap,
        serial: Some("ROOT".into()),
        iotune: Some(IoTune {
            read_iops_sec: 1000,
            ..Default::default()
        }),
    };
    let mut dev = VirtioBlk::from_config(&cfg).unwrap();
    assert!(dev.is_read_only());
    assert_eq!(dev.capacity(), 2048);
    assert_ne!(dev.device_features() & (1 << VIRTIO_BLK_F_RO), 0);
    let mem = mem();
    let vq = TestQueue::new(&mem, 0, 16);
    let irq = Arc::new(CountingInterrupt::default());
    let kick = activate(&mut dev, &mem, &vq, irq, 0);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    vq.add(
        0,
        &[desc(HDR, 16, R), desc(DATA, 512, W), desc(STATUS, 1, W)],
    );
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_OUT, 1);
    vq.add(
        3,
        &[
            desc(HDR + 0x100, 16, R),
            desc(DATA + 4096, 512, R),
            desc(STATUS + 1, 1, W),
        ],
    );
    kick.write(1).unwrap();
    wait_used(&vq, 2);
    assert_eq!(status_at(&mem, STATUS), S_OK);
    assert_eq!(status_at(&mem, STATUS + 1), S_IOERR);
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, pattern(1 << 20, 5)[512..1024]);
}

#[test]
fn from_config_errors_name_the_disk() {
    let dir = TempDir::new().unwrap();
    let cfg = |path: std::path::PathBuf, iotune: Option<IoTune>| DiskConfig {
        id: "data7".into(),
        path,
        format: None,
        bus: DiskBus::Virtio,
        readonly: false,
        cache: CacheMode::Writeback,
        io: IoMode::Threads,
        discard: DiscardMode::Ignore,
        serial: None,
        iotune,
    };
    let missing = dir.as_path().join("nope.raw");
    let err = VirtioBlk::from_config(&cfg(missing, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("data7") && err.contains("nope.raw"), "{err}");

    let top = dir.as_path().join("orphan.qcow2");
    crate::block::Qcow2Disk::create(&top, 1 << 20, Some(("lost-base.qcow2", DiskFormat::Qcow2)))
        .unwrap();
    let err = VirtioBlk::from_config(&cfg(top, None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data7") && err.contains("backing file") && err.contains("lost-base.qcow2"),
        "{err}"
    );

    let raw = raw_file(&dir, 4096);
    let mut c = cfg(raw.clone(), None);
    c.format = Some(DiskFormat::Qcow2);
    let err = VirtioBlk::from_config(&c).unwrap_err().to_string();
    assert!(err.contains("qcow2 magic"), "{err}");

    let bad = IoTune {
        total_bytes_sec: 1,
        write_bytes_sec: 1,
        ..Default::default()
    };
    let err = VirtioBlk::from_config(&cfg(raw, Some(bad)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data7") && err.contains("total_bytes_sec"),
        "{err}"
    );
}
