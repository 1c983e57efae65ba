//! Returning buffers to the guest (the used ring) and deciding when to interrupt it.
//!
//! `Queue::add_used` publishes each element as it is added (it bumps the used index
//! every time). A received frame spread over several mergeable buffers must appear all
//! at once: the Linux driver reads `num_buffers` from the first buffer and counts the
//! frame as an error if the others are not in the used ring yet. So elements are
//! written first and the index is published once, and the interrupt decision (which
//! `Queue::needs_notification` bases on its private count of `add_used` calls) is made
//! here from the used index at the previous decision.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::super::GuestMemoryMmap;

/// Per-queue bookkeeping of what the guest has been told about.
#[derive(Debug, Default)]
pub(crate) struct UsedRing {
    /// The used index when we last decided about an interrupt.
    signalled: Wrapping<u16>,
}

impl UsedRing {
    /// Start from the queue's current position (a fresh queue starts at 0).
    pub fn new(queue: &Queue) -> Self {
        Self {
            signalled: Wrapping(queue.next_used()),
        }
    }

    /// Put `(head, len)` elements in the used ring, then publish them with one index
    /// update. Heads outside the queue (only a confused guest offers them) cannot be
    /// returned and are skipped.
    pub fn publish(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        elems: &[(u16, u32)],
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let size = queue.size();
        if size == 0 {
            return Ok(());
        }
        let ring = GuestAddress(queue.used_ring());
        let mut idx = Wrapping(queue.next_used());
        for &(head, len) in elems {
            if head >= size {
                continue;
            }
            // flags(2) + idx(2), then 8-byte {id: u32, len: u32} elements.
            let offset = 4 + u64::from(idx.0 % size) * 8;
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            let addr = ring
                .checked_add(offset)
                .ok_or(vm_memory::GuestMemoryError::InvalidGuestAddress(ring))?;
            mem.write_slice(&elem, addr)?;
            idx += Wrapping(1);
        }
        if idx.0 != queue.next_used() {
            // Release: the elements (and the buffers' contents) before the index.
            let addr = ring
                .checked_add(2)
                .ok_or(vm_memory::GuestMemoryError::InvalidGuestAddress(ring))?;
            mem.store(u16::to_le(idx.0), addr, Ordering::Release)?;
            queue.set_next_used(idx.0);
        }
        Ok(())
    }

    /// Whether the guest wants an interrupt for what was published since the last call
    /// (with EVENT_IDX: whether the used index passed the guest's `used_event`).
    pub fn needs_notification(&mut self, queue: &Queue, mem: &GuestMemoryMmap) -> bool {
        let new = Wrapping(queue.next_used());
        let old = self.signalled;
        if new == old {
            return false;
        }
        self.signalled = new;
        if !queue.event_idx_enabled() {
            return true;
        }
        // Order the used-index store before reading `used_event` (virtio 1.x §2.7.10).
        fence(Ordering::SeqCst);
        let used_event_addr =
            GuestAddress(queue.avail_ring()).checked_add(4 + 2 * u64::from(queue.size()));
        let Some(used_event) = used_event_addr
            .and_then(|a| mem.load::<u16>(a, Ordering::Acquire).ok())
            .map(|v| Wrapping(u16::from_le(v)))
        else {
            return true;
        };
        new - used_event - Wrapping(1) < new - old
    }
}
