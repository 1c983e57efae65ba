//! Shared test helpers: guest memory, descriptors, a recording interrupt, a failing disk.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::block::{DiskBackend, MemDisk};
use crate::virtio::blk::execute::Executor;
use crate::virtio::blk::metrics::BlkMetrics;
use crate::virtio::blk::request::{RequestLimits, ID_BYTES};
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

pub(super) const MEM_SIZE: usize = 0x100_0000;

/// Where tests put request headers, data and status bytes (the queue lives at 0).
pub(super) const HDR: u64 = 0x10_0000;
pub(super) const DATA: u64 = 0x20_0000;
pub(super) const STATUS: u64 = 0x30_0000;

pub(super) const R: u16 = 0;
pub(super) const W: u16 = VRING_DESC_F_WRITE as u16;

pub(super) fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

pub(super) fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

pub(super) fn header(mem: &GuestMemoryMmap, addr: u64, req_type: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&req_type.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(addr)).unwrap();
}

pub(super) fn segment(mem: &GuestMemoryMmap, addr: u64, sector: u64, num: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&num.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&s, GuestAddress(addr)).unwrap();
}

pub(super) fn status_at(mem: &GuestMemoryMmap, addr: u64) -> u8 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// Everything negotiated, capacity from the disk.
pub(super) fn limits(disk: &dyn DiskBackend) -> RequestLimits {
    RequestLimits {
        capacity_sectors: disk.size() / 512,
        read_only: disk.is_read_only(),
        discard: true,
        write_zeroes: true,
        max_discard_sectors: 1 << 21,
        max_write_zeroes_sectors: 1 << 17,
    }
}

pub(super) fn serial(s: &str) -> [u8; ID_BYTES] {
    let mut id = [0u8; ID_BYTES];
    id[..s.len()].copy_from_slice(s.as_bytes());
    id
}

pub(super) fn executor(
    disk: Box<dyn DiskBackend>,
    limits: RequestLimits,
) -> (Executor, Arc<BlkMetrics>) {
    let metrics = Arc::new(BlkMetrics::default());
    let ex = Executor::new("test".into(), disk, limits, serial("SN-1"), metrics.clone());
    (ex, metrics)
}

/// Serve the chain made of `descs` (NEXT flags and indices are filled in) on `disk`.
/// Returns the used length and the metrics.
pub(super) fn serve(
    mem: &GuestMemoryMmap,
    disk: MemDisk,
    descs: &[RawDescriptor],
) -> (u32, Arc<BlkMetrics>) {
    let lim = limits(&disk);
    serve_with(mem, Box::new(disk), lim, descs)
}

pub(super) fn serve_with(
    mem: &GuestMemoryMmap,
    disk: Box<dyn DiskBackend>,
    limits: RequestLimits,
    descs: &[RawDescriptor],
) -> (u32, Arc<BlkMetrics>) {
    let vq = MockSplitQueue::new(mem, 256);
    let chain = vq.build_desc_chain(descs).unwrap();
    let (mut ex, metrics) = executor(disk, limits);
    (ex.serve(chain, mem), metrics)
}

/// The driver's side of a split queue at `base`, laid out as the virtio spec says (the
/// mock's layout overlaps the rings of larger queues): descriptor table, available ring
/// with `used_event`, used ring with `avail_event`.
pub(super) struct TestQueue<'a> {
    mem: &'a GuestMemoryMmap,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

impl<'a> TestQueue<'a> {
    pub(super) fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        let end = used + 6 + 8 * u64::from(size);
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .unwrap();
        TestQueue {
            mem,
            size,
            desc,
            avail,
            used,
        }
    }

    /// A ready `Queue` for the device side.
    pub(super) fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_ready(true);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q
    }

    pub(super) fn store_desc(&self, index: u16, d: RawDescriptor) {
        self.mem
            .write_obj(d, GuestAddress(self.desc + 16 * u64::from(index)))
            .unwrap();
    }

    /// Write avail ring entry `slot` (modulo the size).
    pub(super) fn set_avail_entry(&self, slot: u16, head: u16) {
        let at = self.avail + 4 + 2 * u64::from(slot % self.size);
        self.mem.write_obj(head, GuestAddress(at)).unwrap();
    }

    pub(super) fn avail_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap()
    }

    pub(super) fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    pub(super) fn set_used_event(&self, v: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    /// Write `descs` at table index `first` on, linked with NEXT, and make the chain
    /// available.
    pub(super) fn add(&self, first: u16, descs: &[RawDescriptor]) {
        for (i, d) in descs.iter().enumerate() {
            let d = Descriptor::from(*d);
            let last = i == descs.len() - 1;
            let (flags, next) = if last {
                (d.flags() & !(VRING_DESC_F_NEXT as u16), 0)
            } else {
                (d.flags() | VRING_DESC_F_NEXT as u16, first + i as u16 + 1)
            };
            self.store_desc(
                first + i as u16,
                RawDescriptor::from(Descriptor::new(d.addr().0, d.len(), flags, next)),
            );
        }
        let idx = self.avail_idx();
        self.set_avail_entry(idx, first);
        self.set_avail_idx(idx.wrapping_add(1));
    }

    pub(super) fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// Used ring entry `i`: (descriptor id, length).
    pub(super) fn used_entry(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }
}

/// Counts queue notifications.
#[derive(Debug, Default)]
pub(super) struct CountingInterrupt {
    pub queue: AtomicUsize,
    pub config: AtomicUsize,
}

impl CountingInterrupt {
    pub(super) fn queue_count(&self) -> usize {
        self.queue.load(Ordering::SeqCst)
    }
}

impl VirtioInterrupt for CountingInterrupt {
    fn notify_queue(&self, _queue: u16) {
        self.queue.fetch_add(1, Ordering::SeqCst);
    }
    fn notify_config(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }
}

/// A disk whose every operation fails, as a broken host disk would.
pub(super) struct FailingDisk;

impl DiskBackend for FailingDisk {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn write_zeroes(&mut self, _: u64, _: u64, _: bool) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn has_volatile_cache(&self) -> bool {
        true
    }
    fn is_read_only(&self) -> bool {
        false
    }
}
