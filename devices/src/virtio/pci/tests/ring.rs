//! The driver's side of a split virtqueue in guest memory, laid out as the spec says
//! (descriptor table, available ring with `used_event`, used ring with `avail_event`).

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use vm_memory::{Bytes, GuestAddress};

use crate::virtio::GuestMemoryMmap;

pub(super) struct DriverRing {
    mem: GuestMemoryMmap,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
}

impl DriverRing {
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        mem.write_slice(
            &vec![0u8; (used + 6 + 8 * n - base) as usize],
            GuestAddress(base),
        )
        .unwrap();
        DriverRing {
            mem: mem.clone(),
            size,
            desc: base,
            avail,
            used,
            next_desc: 0,
        }
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// (descriptor table, available ring, used ring).
    pub fn addrs(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    /// Offer a chain of (address, length, device-writable) buffers; returns its head.
    /// Like Linux, the driver has consumed the used ring so far and (with EVENT_IDX)
    /// asks for an interrupt at the next used entry.
    pub fn add(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let used_event = self.avail + 4 + 2 * u64::from(self.size);
        self.mem
            .write_obj(self.used_idx(), GuestAddress(used_event))
            .unwrap();
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let mut next = 0;
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
                next = (index + 1) % self.size;
            }
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            self.mem
                .write_obj(d, GuestAddress(self.desc + 16 * u64::from(index)))
                .unwrap();
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        let idx = self.avail_idx();
        let slot = self.avail + 4 + 2 * u64::from(idx % self.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    pub fn avail_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap()
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// Used ring entry `i`: (descriptor id, length).
    pub fn used_entry(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        let id = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }
}
