//! virtio-net tests. A [`DriverQueue`] plays the driver on each queue; `device` also
//! uses real taps (root, /dev/net/tun) and a private /24 on them.

mod chain;
pub(crate) mod device;
mod fuzz;
mod queues;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::super::{GuestMemoryMmap, VirtioInterrupt};

pub(super) const MEM_SIZE: u64 = 0x10_0000;
pub(super) const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub(super) const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub(super) const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// 1 MiB of guest memory at 0. Rings live below 0x1_0000, buffers above.
pub(super) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

pub(super) fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// A split virtqueue laid out as a driver lays it out, in guest memory at `base`:
/// descriptor table, available ring (flags, idx, ring, used_event), used ring (flags,
/// idx, ring, avail_event). The tests play the driver through it.
///
/// Not `virtio_queue::mock::MockSplitQueue`: in virtio-queue 0.18 its
/// `SplitQueueRing::end()` adds the ring's element *count* instead of its byte size, so
/// the mock's used ring starts inside the available ring. Offering more than size/2
/// chains, or setting `used_event`, then overwrites the used ring (and vice versa).
pub(super) struct DriverQueue<'a> {
    mem: &'a GuestMemoryMmap,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

impl<'a> DriverQueue<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        let q = Self {
            mem,
            size,
            desc: base,
            avail,
            used,
        };
        let zeros = vec![0u8; (used + 6 + 8 * n - base) as usize];
        mem.write_slice(&zeros, GuestAddress(base)).unwrap();
        q
    }

    /// The device's view: a ready `Queue` on these rings.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }

    pub fn set_desc(&self, index: u16, d: RawDescriptor) {
        let addr = self.desc + 16 * u64::from(index % self.size);
        self.mem.write_obj(d, GuestAddress(addr)).unwrap();
    }

    /// Write available-ring slot `slot` (mod size).
    pub fn set_avail(&self, slot: u16, head: u16) {
        let addr = self.avail + 4 + 2 * u64::from(slot % self.size);
        self.mem.write_obj(head, GuestAddress(addr)).unwrap();
    }

    pub fn avail_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap()
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// `used_event`: "interrupt me once the used index passes this".
    pub fn set_used_event(&self, value: u16) {
        let addr = self.avail + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(value, GuestAddress(addr)).unwrap();
    }

    /// Store `descs` from table index `first` and offer every chain in them (a chain
    /// starts where the previous descriptor has no NEXT flag); `next` fields are kept.
    pub fn add_chains(&self, descs: &[RawDescriptor], first: u16) {
        let mut idx = self.avail_idx();
        let mut starts_chain = true;
        for (i, d) in descs.iter().enumerate() {
            let index = first + i as u16;
            self.set_desc(index, *d);
            if starts_chain {
                self.set_avail(idx, index);
                idx = idx.wrapping_add(1);
            }
            starts_chain = SplitDescriptor::from(*d).flags() & NEXT == 0;
        }
        self.set_avail_idx(idx);
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// The used ring's `(id, len)` elements from position `from` up to its index.
    pub fn used(&self, from: u16) -> Vec<(u32, u32)> {
        let idx = self.used_idx();
        let mut out = Vec::new();
        let mut i = from;
        while i != idx {
            let at = self.used + 4 + 8 * u64::from(i % self.size);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            i = i.wrapping_add(1);
        }
        out
    }
}

/// Records interrupts.
#[derive(Default)]
pub(super) struct TestInterrupt {
    pub queues: Mutex<Vec<u16>>,
    pub configs: AtomicUsize,
}

impl TestInterrupt {
    pub fn count(&self, queue: u16) -> usize {
        self.queues
            .lock()
            .unwrap()
            .iter()
            .filter(|&&q| q == queue)
            .count()
    }
}

impl VirtioInterrupt for TestInterrupt {
    fn notify_queue(&self, queue: u16) {
        self.queues.lock().unwrap().push(queue);
    }

    fn notify_config(&self) {
        self.configs.fetch_add(1, Ordering::SeqCst);
    }
}

/// Poll `cond` for up to `secs` seconds.
pub(super) fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}
