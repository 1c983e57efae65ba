//! virtio-net tests. The queues are `virtio_queue::mock::MockSplitQueue`s playing the
//! driver; `device` also uses real taps (root, /dev/net/tun) and a private /24 on them.

mod chain;
mod device;
mod fuzz;
mod queues;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

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

/// The used ring's `(id, len)` elements from position `from` up to its index.
pub(super) fn used_elems(
    mock: &MockSplitQueue<'_, GuestMemoryMmap>,
    size: u16,
    from: u16,
) -> Vec<(u32, u32)> {
    let idx = mock.used().idx().load();
    let mut out = Vec::new();
    let mut i = from;
    while i != idx {
        let e = mock
            .used()
            .ring()
            .ref_at(usize::from(i % size))
            .unwrap()
            .load();
        out.push((e.id(), e.len()));
        i = i.wrapping_add(1);
    }
    out
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
