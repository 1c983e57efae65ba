//! Shared test helpers: guest memory, descriptors, a recording interrupt, a failing disk.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
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
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
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

pub(super) fn executor(disk: Box<dyn DiskBackend>, limits: RequestLimits) -> (Executor, Arc<BlkMetrics>) {
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

/// Put a request (descriptors at table index `first` on) on the mock queue's
/// available ring, linking the descriptors with NEXT.
pub(super) fn add_request(vq: &MockSplitQueue<GuestMemoryMmap>, first: u16, descs: &[RawDescriptor]) {
    let linked: Vec<RawDescriptor> = descs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = Descriptor::from(*d);
            let last = i == descs.len() - 1;
            let flags = if last {
                d.flags() & !(VRING_DESC_F_NEXT as u16)
            } else {
                d.flags() | VRING_DESC_F_NEXT as u16
            };
            let next = if last { 0 } else { first + i as u16 + 1 };
            RawDescriptor::from(Descriptor::new(d.addr().0, d.len(), flags, next))
        })
        .collect();
    vq.add_desc_chains(&linked, first).unwrap();
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
