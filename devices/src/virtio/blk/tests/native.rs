//! io=native: the async worker on a real O_DIRECT file and a driver-side queue, driven
//! step by step (pump, then wait for completions) so that "in flight" is observable
//! without timing; and the device with its thread.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxvm_api::{CacheMode, DiscardMode, DiskBus, DiskConfig, DiskFormat, IoMode, IoTune};
use virtio_bindings::virtio_blk::*;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::support::*;
use crate::block::aio::direct_io_dir;
use crate::block::{DiskBackend, DiskOptions, RawDisk, Throttle, Throttled};
use crate::virtio::blk::execute::Executor;
use crate::virtio::blk::metrics::{BlkMetrics, BlkMetricsSnapshot};
use crate::virtio::blk::request::{S_IOERR, S_OK};
use crate::virtio::blk::worker::{QueueWorker, StopMode, Worker};
use crate::virtio::blk::worker_async::AsyncWorker;
use crate::virtio::blk::VirtioBlk;
use crate::virtio::{ActiveQueue, GuestMemoryMmap, VirtioDevice};

const DISK: usize = 1 << 20;
/// Each request slot: its header at HDR + 0x40 * slot, data at DATA + 0x2000 * slot
/// (at most 8 KiB), status at STATUS + slot, descriptors from 3 * slot.
const SLOT_DATA: u64 = 0x2000;

struct Rig {
    _dir: TempDir,
    path: PathBuf,
    mem: GuestMemoryMmap,
    metrics: Arc<BlkMetrics>,
    irq: Arc<CountingInterrupt>,
}

impl Rig {
    fn new() -> Self {
        let dir = direct_io_dir();
        let path = dir.as_path().join("native.raw");
        fs::write(&path, pattern(DISK, 1)).unwrap();
        Rig {
            _dir: dir,
            path,
            mem: mem(),
            metrics: Arc::default(),
            irq: Arc::default(),
        }
    }

    /// The raw disk with cache=none, offered for AIO when `native`.
    fn disk(&self, native: bool) -> RawDisk {
        let opts = DiskOptions {
            cache: CacheMode::None,
            discard: DiscardMode::Unmap,
            ..Default::default()
        };
        let disk = RawDisk::open(&self.path, opts).unwrap();
        if native {
            disk.with_native_io()
        } else {
            disk
        }
    }

    fn base(&self, vq: &TestQueue, disk: Box<dyn DiskBackend>) -> QueueWorker {
        let lim = limits(disk.as_ref());
        QueueWorker {
            id: "native".into(),
            mem: self.mem.clone(),
            queue: vq.queue(),
            index: 0,
            interrupt: self.irq.clone(),
            executor: Executor::new(
                "native".into(),
                disk,
                lim,
                serial("N"),
                self.metrics.clone(),
            ),
            stop: Arc::new(AtomicBool::new(false)),
            broken: false,
        }
    }

    fn worker(&self, vq: &TestQueue, disk: Box<dyn DiskBackend>) -> AsyncWorker {
        let base = self.base(vq, disk);
        let native = base.executor.native_io().expect("disk offers AIO");
        AsyncWorker::new(base, native).map_err(|(e, _)| e).unwrap()
    }

    fn file(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap()
    }

    /// Queue a write of `data` at `sector` in request slot `slot`.
    fn write(&self, vq: &TestQueue, slot: u16, sector: u64, data: &[u8]) {
        let (h, d, s) = addrs(slot);
        header(&self.mem, h, VIRTIO_BLK_T_OUT, sector);
        self.mem.write_slice(data, GuestAddress(d)).unwrap();
        self.mem.write_obj(0xaau8, GuestAddress(s)).unwrap();
        vq.add(
            3 * slot,
            &[desc(h, 16, R), desc(d, data.len() as u32, R), desc(s, 1, W)],
        );
    }

    /// Queue a read of `len` bytes at `sector` in request slot `slot`.
    fn read(&self, vq: &TestQueue, slot: u16, sector: u64, len: u32) {
        let (h, d, s) = addrs(slot);
        header(&self.mem, h, VIRTIO_BLK_T_IN, sector);
        self.mem.write_obj(0xaau8, GuestAddress(s)).unwrap();
        vq.add(3 * slot, &[desc(h, 16, R), desc(d, len, W), desc(s, 1, W)]);
    }

    /// Queue a request of `t` without data (flush) in slot `slot`.
    fn bare(&self, vq: &TestQueue, slot: u16, t: u32) {
        let (h, _, s) = addrs(slot);
        header(&self.mem, h, t, 0);
        self.mem.write_obj(0xaau8, GuestAddress(s)).unwrap();
        vq.add(3 * slot, &[desc(h, 16, R), desc(s, 1, W)]);
    }

    fn status(&self, slot: u16) -> u8 {
        status_at(&self.mem, addrs(slot).2)
    }

    fn data(&self, slot: u16, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(addrs(slot).1))
            .unwrap();
        v
    }
}

fn addrs(slot: u16) -> (u64, u64, u64) {
    let s = u64::from(slot);
    (HDR + 0x40 * s, DATA + SLOT_DATA * s, STATUS + s)
}

/// The used ring's entries so far as (slot, length).
fn used(vq: &TestQueue) -> Vec<(u16, u32)> {
    (0..vq.used_idx())
        .map(|i| {
            let (id, len) = vq.used_entry(i);
            ((id / 3) as u16, len)
        })
        .collect()
}

fn wait_until_idle(w: &mut AsyncWorker) {
    while w.in_flight() > 0 {
        w.wait_for_completions();
    }
}

#[test]
fn many_requests_in_flight_complete_with_their_statuses() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let mut w = rig.worker(&vq, Box::new(rig.disk(true)));
    // 32 writes of 8 KiB to the first 256 KiB, 32 reads of 4 KiB from 512 KiB on.
    for i in 0..32u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, i as u8));
    }
    for i in 32..64u16 {
        rig.read(&vq, i, 1024 + 8 * u64::from(i - 32), 4096);
    }
    w.pump();
    assert_eq!(w.in_flight(), 64, "every request is in flight at once");
    assert_eq!(
        vq.used_idx(),
        0,
        "nothing completes before its event is reaped"
    );
    wait_until_idle(&mut w);

    let used = used(&vq);
    assert_eq!(used.len(), 64);
    let original = pattern(DISK, 1);
    let file = rig.file();
    for (slot, len) in used {
        assert_eq!(rig.status(slot), S_OK, "slot {slot}");
        if slot < 32 {
            assert_eq!(len, 1);
            let at = 8192 * usize::from(slot);
            assert_eq!(file[at..at + 8192], pattern(8192, slot as u8));
        } else {
            assert_eq!(len, 4097);
            let at = (1024 + 8 * usize::from(slot - 32)) * 512;
            assert_eq!(rig.data(slot, 4096), original[at..at + 4096]);
        }
    }
    let m = rig.metrics.snapshot();
    assert_eq!(
        (m.write_ops, m.write_bytes, m.read_ops, m.read_bytes),
        (32, 32 * 8192, 32, 32 * 4096)
    );
}

#[test]
fn a_flush_completes_only_after_the_writes_before_it() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let mut w = rig.worker(&vq, Box::new(rig.disk(true)));
    for i in 0..8u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, 40 + i as u8));
    }
    rig.bare(&vq, 8, VIRTIO_BLK_T_FLUSH);
    for i in 9..11u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, 40 + i as u8));
    }
    w.pump();
    // The flush waited for the eight writes, ran, and the two after it went out.
    let used = used(&vq);
    assert_eq!(used.len(), 9);
    let mut writes: Vec<u16> = used[..8].iter().map(|&(s, _)| s).collect();
    writes.sort();
    assert_eq!(writes, (0..8).collect::<Vec<_>>());
    assert_eq!(used[8], (8, 1));
    assert_eq!(rig.status(8), S_OK);
    assert_eq!(rig.metrics.snapshot().flushes, 1);
    assert_eq!(w.in_flight(), 2);
    wait_until_idle(&mut w);
    assert_eq!(vq.used_idx(), 11);
    assert!((0..11).all(|s| rig.status(s) == S_OK));
}

#[test]
fn a_malformed_chain_fails_only_that_request() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let mut w = rig.worker(&vq, Box::new(rig.disk(true)));
    rig.write(&vq, 0, 0, &pattern(4096, 7));
    // Past the end of the disk.
    rig.write(&vq, 1, (DISK / 512) as u64, &pattern(4096, 8));
    // No status byte: returned unanswered.
    let (h, d, _) = addrs(2);
    header(&rig.mem, h, VIRTIO_BLK_T_IN, 0);
    vq.add(6, &[desc(h, 16, R), desc(d, 4096, R)]);
    rig.write(&vq, 3, 64, &pattern(4096, 9));
    // A length that is not a multiple of 512.
    rig.write(&vq, 4, 128, &pattern(700, 10));
    w.pump();
    assert_eq!(w.in_flight(), 2);
    wait_until_idle(&mut w);

    let mut used = used(&vq);
    used.sort();
    assert_eq!(used, vec![(0, 1), (1, 1), (2, 0), (3, 1), (4, 1)]);
    assert_eq!(
        [rig.status(0), rig.status(1), rig.status(3), rig.status(4)],
        [S_OK, S_IOERR, S_OK, S_IOERR]
    );
    let file = rig.file();
    assert_eq!(file[..4096], pattern(4096, 7));
    assert_eq!(file[32768..36864], pattern(4096, 9));
    assert_eq!(file[65536..66236], pattern(DISK, 1)[65536..66236]);
    assert_eq!(rig.metrics.snapshot().invalid_requests, 3);
}

#[test]
fn unaligned_requests_are_served_synchronously_after_what_is_in_flight() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let mut w = rig.worker(&vq, Box::new(rig.disk(true)));
    // An aligned 8 KiB write, then 512 bytes into its second block: the unaligned one
    // must not run (read-modify-write of the block) before the first has landed.
    rig.write(&vq, 0, 0, &pattern(8192, 3));
    rig.write(&vq, 1, 9, &pattern(512, 4));
    // A read whose buffer is not page-aligned in guest memory.
    let (h, d, s) = addrs(2);
    header(&rig.mem, h, VIRTIO_BLK_T_IN, 0);
    vq.add(6, &[desc(h, 16, R), desc(d + 512, 4096, W), desc(s, 1, W)]);
    w.pump();
    assert_eq!(w.in_flight(), 0);
    assert_eq!(used(&vq), vec![(0, 1), (1, 1), (2, 4097)]);
    let mut expect = pattern(8192, 3);
    expect[4608..5120].copy_from_slice(&pattern(512, 4));
    assert_eq!(rig.file()[..8192], expect[..]);
    let mut got = vec![0u8; 4096];
    rig.mem.read_slice(&mut got, GuestAddress(d + 512)).unwrap();
    assert_eq!(got, expect[..4096]);
}

#[test]
fn stopping_completes_every_request_in_flight() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let mut w = rig.worker(&vq, Box::new(rig.disk(true)));
    for i in 0..64u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, 100 + i as u8));
    }
    w.pump();
    assert_eq!(w.in_flight(), 64);
    let backend = w.into_backend();
    assert_eq!(backend.size(), DISK as u64);
    assert_eq!(vq.used_idx(), 64);
    assert!((0..64).all(|s| rig.status(s) == S_OK));
    let file = rig.file();
    for i in 0..64usize {
        assert_eq!(file[8192 * i..8192 * (i + 1)], pattern(8192, 100 + i as u8));
    }
}

#[test]
fn a_throttled_request_waits_without_blocking_and_is_dropped_at_stop() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    // 64 KiB/s: the first 64 KiB write goes, the second would wait about a second.
    let tune = IoTune {
        total_bytes_sec: 65536,
        ..Default::default()
    };
    let disk = Throttled::new(rig.disk(true), Throttle::new(&tune).unwrap().unwrap());
    let mut w = rig.worker(&vq, Box::new(disk));
    for i in 0..2u16 {
        let (h, _, s) = addrs(i);
        header(&rig.mem, h, VIRTIO_BLK_T_OUT, 128 * u64::from(i));
        vq.add(
            3 * i,
            &[
                desc(h, 16, R),
                desc(DATA + 0x80000, 65536, R),
                desc(s, 1, W),
            ],
        );
    }
    rig.read(&vq, 2, 0, 4096);
    w.pump();
    assert_eq!(w.in_flight(), 1);
    assert!(
        w.is_parked(),
        "the second write waits, and the read behind it"
    );
    // The thread is free: the first write completes while the second waits.
    w.wait_for_completions();
    assert_eq!(used(&vq), vec![(0, 1)]);
    let start = Instant::now();
    drop(w.into_backend());
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(vq.used_idx(), 1, "the parked request was never started");
}

#[test]
fn quiescing_completes_what_is_in_flight_signals_it_and_keeps_the_queue() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let mut w = rig.worker(&vq, Box::new(rig.disk(true)));
    for i in 0..64u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, 50 + i as u8));
    }
    w.pump();
    assert_eq!(w.in_flight(), 64);
    assert_eq!(vq.used_idx(), 0);
    let (_backend, queue) = w.into_parts(StopMode::Quiesce);
    assert_eq!(vq.used_idx(), 64);
    assert!((0..64).all(|s| rig.status(s) == S_OK));
    assert_eq!((queue.next_avail(), queue.next_used()), (64, 64));
    // Unlike a reset, the driver is told (a saved guest goes on waiting otherwise).
    assert!(rig.irq.queue_count() >= 1);
}

#[test]
fn quiescing_puts_a_throttled_request_back_in_the_ring() {
    let rig = Rig::new();
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let tune = IoTune {
        total_bytes_sec: 65536,
        ..Default::default()
    };
    let disk = Throttled::new(rig.disk(true), Throttle::new(&tune).unwrap().unwrap());
    let mut w = rig.worker(&vq, Box::new(disk));
    for i in 0..2u16 {
        // 64 KiB each, in buffers of their own (slots hold 8 KiB).
        let (h, _, s) = addrs(i);
        let buf = DATA + 0x8_0000 + 0x1_0000 * u64::from(i);
        header(&rig.mem, h, VIRTIO_BLK_T_OUT, 128 * u64::from(i));
        rig.mem
            .write_slice(&pattern(65536, 60 + i as u8), GuestAddress(buf))
            .unwrap();
        rig.mem.write_obj(0xaau8, GuestAddress(s)).unwrap();
        vq.add(3 * i, &[desc(h, 16, R), desc(buf, 65536, R), desc(s, 1, W)]);
    }
    rig.read(&vq, 2, 0, 4096);
    w.pump();
    assert!(w.is_parked());
    w.wait_for_completions();
    assert_eq!(used(&vq), vec![(0, 1)]);
    let start = Instant::now();
    let (_backend, queue) = w.into_parts(StopMode::Quiesce);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no wait for the throttle"
    );
    // The parked write was taken but never started: it is back in the ring.
    assert_eq!((queue.next_avail(), queue.next_used()), (1, 1));
    assert_eq!(rig.status(1), 0xaa);

    // Served again (after a restore, say, where the config has no iotune).
    let mut base = rig.base(&vq, Box::new(rig.disk(true)));
    base.queue = queue;
    let native = base.executor.native_io().unwrap();
    let mut w = AsyncWorker::new(base, native).map_err(|(e, _)| e).unwrap();
    w.pump();
    wait_until_idle(&mut w);
    let mut done = used(&vq);
    done.sort();
    assert_eq!(done, vec![(0, 1), (1, 1), (2, 4097)]);
    assert_eq!(rig.status(1), S_OK);
    assert_eq!(rig.file()[65536..131072], pattern(65536, 61)[..]);
}

/// The same requests through io=threads and io=native give the same counters.
#[test]
fn both_modes_count_alike() {
    let run = |native: bool| -> BlkMetricsSnapshot {
        let rig = Rig::new();
        let vq = TestQueue::new(&rig.mem, 0, 256);
        rig.write(&vq, 0, 0, &pattern(8192, 1));
        rig.write(&vq, 1, 17, &pattern(512, 2));
        rig.read(&vq, 2, 0, 8192);
        rig.read(&vq, 3, 1, 1024);
        rig.bare(&vq, 4, VIRTIO_BLK_T_FLUSH);
        rig.write(&vq, 5, (DISK / 512) as u64, &pattern(512, 3));
        rig.bare(&vq, 6, 99);
        let mut base = rig.base(&vq, Box::new(rig.disk(native)));
        if native {
            let n = base.executor.native_io().unwrap();
            let mut w = AsyncWorker::new(base, n).map_err(|(e, _)| e).unwrap();
            w.pump();
            wait_until_idle(&mut w);
        } else {
            assert!(base.executor.native_io().is_none());
            base.process_queue();
        }
        assert_eq!(vq.used_idx(), 7);
        rig.metrics.snapshot()
    };
    let threads = run(false);
    assert_eq!(
        (threads.read_ops, threads.write_ops, threads.flushes),
        (2, 2, 1)
    );
    assert_eq!((threads.invalid_requests, threads.unsupported), (1, 1));
    assert_eq!(run(true), threads);
}

/// Activate `dev` on `vq`; returns the kick eventfd's other end.
fn activate(dev: &mut VirtioBlk, mem: &GuestMemoryMmap, vq: &TestQueue) -> EventFd {
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let other = kick.try_clone().unwrap();
    let irq: Arc<CountingInterrupt> = Arc::default();
    let features = dev.device_features();
    let queue = vq.queue();
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
    other
}

#[test]
fn the_device_runs_io_native_and_resets_with_requests_in_flight() {
    let rig = Rig::new();
    let cfg = DiskConfig {
        id: "aio".into(),
        path: rig.path.clone(),
        format: Some(DiskFormat::Raw),
        bus: DiskBus::Virtio,
        readonly: false,
        cache: CacheMode::None,
        io: IoMode::Native,
        discard: DiscardMode::Ignore,
        serial: None,
        iotune: None,
    };
    let mut dev = VirtioBlk::from_config(&cfg).unwrap();
    let base = rig.base(
        &TestQueue::new(&rig.mem, 0, 16),
        crate::block::open_disk(&cfg).unwrap(),
    );
    assert!(matches!(Worker::new(base), Worker::Native(_)));

    let vq = TestQueue::new(&rig.mem, 0, 256);
    let kick = activate(&mut dev, &rig.mem, &vq);
    for i in 0..64u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, 50 + i as u8));
    }
    kick.write(1).unwrap();
    // Reset at once: whatever was popped completes before reset returns.
    dev.reset();
    let done = vq.used_idx();
    let file = rig.file();
    for (slot, len) in used(&vq) {
        assert_eq!((len, rig.status(slot)), (1, S_OK));
        let at = 8192 * usize::from(slot);
        assert_eq!(file[at..at + 8192], pattern(8192, 50 + slot as u8));
    }

    // Active again on a fresh ring: the rest is written and read back.
    let vq = TestQueue::new(&rig.mem, 0, 256);
    let kick = activate(&mut dev, &rig.mem, &vq);
    for i in 0..64u16 {
        rig.write(&vq, i, 16 * u64::from(i), &pattern(8192, 50 + i as u8));
    }
    kick.write(1).unwrap();
    let start = Instant::now();
    while vq.used_idx() < 64 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "requests not completed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let m = dev.metrics().snapshot();
    assert_eq!(m.write_ops, 64 + u64::from(done));
    dev.reset();
    let file = rig.file();
    for i in 0..64usize {
        assert_eq!(file[8192 * i..8192 * (i + 1)], pattern(8192, 50 + i as u8));
    }
}
