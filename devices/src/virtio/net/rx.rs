//! Receive: frames from the tap into the guest's receive buffers.
//!
//! A frame is read from the tap whole (virtio-net header included) into a bounce buffer,
//! then copied into one receive chain or, with VIRTIO_NET_F_MRG_RXBUF, spread over as
//! many chains as it needs; the header's `num_buffers` tells the driver how many.
//! Chains are popped from the available ring only as needed and kept (checked, in
//! `stash`) until a frame fills them, so a frame that has to wait for more buffers does
//! not hand anything back half-filled. If the guest has no buffers, the frame waits
//! here and the worker stops reading the tap until the guest adds some and kicks: the
//! kernel queues (and, past the tap's queue length, drops) what arrives meanwhile, as
//! with a physical NIC whose ring is full. A frame is dropped here only if it can never
//! fit: larger than one buffer without mergeable buffers, or larger than all the
//! buffers the guest can possibly offer at once.
//!
//! When the device stops for a save, chains waiting in the stash go back to the
//! available ring ([`RxQueue::release_stash`]): none of them holds anything yet.

use std::collections::VecDeque;

use virtio_queue::{Queue, QueueT};

use super::super::GuestMemoryMmap;
use super::chain::{parse_chain, scatter, table_entries, Limits, Segment};
use super::metrics::NetMetrics;
use super::used::UsedRing;
use crate::net::VNET_HDR_LEN;

/// Byte offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// A checked receive chain waiting for a frame.
#[derive(Debug)]
struct RxBuffer {
    head: u16,
    segments: Vec<Segment>,
    capacity: usize,
    /// Descriptor-table entries the chain holds (see `table_entries`).
    entries: usize,
    /// Its position in the available ring.
    pos: u16,
}

/// What became of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxOutcome {
    /// In the guest, spread over `buffers` chains.
    Delivered { buffers: u16 },
    /// Not enough buffers yet; offer the same frame again when the guest kicks.
    NeedBuffers,
    /// A ring's worth of malformed chains was returned without finding enough good
    /// ones; offer the same frame again soon (bounds the work one call does).
    Retry,
    /// Can never fit (or guest memory failed); counted and discarded.
    Dropped,
}

/// The receive queue of one queue pair.
pub(crate) struct RxQueue {
    queue: Queue,
    used: UsedRing,
    mergeable: bool,
    stash: VecDeque<RxBuffer>,
    stash_bytes: usize,
    stash_entries: usize,
    warned: bool,
}

impl RxQueue {
    pub fn new(queue: Queue, mergeable: bool) -> Self {
        Self {
            used: UsedRing::new(&queue),
            queue,
            mergeable,
            stash: VecDeque::new(),
            stash_bytes: 0,
            stash_entries: 0,
            warned: false,
        }
    }

    /// Put `frame` (virtio-net header + Ethernet frame, as read from the tap) into the
    /// guest. Fills in the header's `num_buffers`.
    pub fn deliver(
        &mut self,
        mem: &GuestMemoryMmap,
        frame: &mut [u8],
        metrics: &NetMetrics,
    ) -> RxOutcome {
        let len = frame.len();
        if len < VNET_HDR_LEN {
            metrics.add_rx_errors(1);
            return RxOutcome::Dropped;
        }
        let count = if self.mergeable {
            while self.stash_bytes < len {
                // Holding every descriptor the queue has: the guest cannot add more.
                if self.stash_entries >= usize::from(self.queue.size()) {
                    return self.drop_frame(len, metrics);
                }
                if let Some(outcome) = self.take_buffer(mem, metrics) {
                    return outcome;
                }
            }
            let mut count = 0;
            let mut room = 0;
            while room < len {
                room += self.stash[count].capacity;
                count += 1;
            }
            count
        } else {
            if self.stash.is_empty() {
                if let Some(outcome) = self.take_buffer(mem, metrics) {
                    return outcome;
                }
            }
            // Without mergeable buffers the driver posts buffers of one size: one too
            // small now stays too small. Keep it for the next (smaller) frame.
            if self.stash[0].capacity < len {
                return self.drop_frame(len, metrics);
            }
            1
        };
        // count <= queue size <= 32768.
        let buffers = count as u16;
        frame[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&buffers.to_le_bytes());

        let mut elems = Vec::with_capacity(count);
        let mut off = 0;
        let mut failed = false;
        for buf in self.stash.drain(..count) {
            self.stash_bytes -= buf.capacity;
            self.stash_entries -= buf.entries;
            match scatter(mem, &buf.segments, &frame[off..]) {
                Ok(n) => {
                    elems.push((buf.head, n as u32));
                    off += n;
                }
                Err(e) => {
                    tracing::debug!("rx: cannot write guest buffer {}: {e}", buf.head);
                    elems.push((buf.head, 0));
                    failed = true;
                }
            }
        }
        if let Err(e) = self.used.publish(&mut self.queue, mem, &elems) {
            tracing::warn!("rx: cannot update the used ring: {e}");
            failed = true;
        }
        if failed {
            metrics.add_rx_errors(1);
            return RxOutcome::Dropped;
        }
        metrics.add_rx_packets(1);
        metrics.add_rx_bytes((len - VNET_HDR_LEN) as u64);
        RxOutcome::Delivered { buffers }
    }

    /// Ask the guest to kick when it adds buffers. True if buffers arrived meanwhile
    /// (then no kick will come: look again).
    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        self.queue.enable_notification(mem).unwrap_or(false)
    }

    /// We are not waiting for buffers: spare the guest the kicks.
    pub fn disable_notification(&mut self, mem: &GuestMemoryMmap) {
        let _ = self.queue.disable_notification(mem);
    }

    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        self.used.needs_notification(&self.queue, mem)
    }

    #[cfg(test)]
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Give up the chains taken for a frame that has not come (the device stops
    /// with the queue kept): they hold nothing yet. Normally they are the last chains
    /// taken from the available ring, and stepping the ring position back puts them
    /// back untouched. If a malformed chain (already returned) sits between them, only
    /// a driver offering bad chains does that, they are returned empty instead.
    pub fn release_stash(&mut self, mem: &GuestMemoryMmap) {
        let Some(first) = self.stash.front() else {
            return;
        };
        let start = first.pos;
        let taken = self.queue.next_avail().wrapping_sub(start);
        let contiguous = usize::from(taken) == self.stash.len()
            && self
                .stash
                .iter()
                .enumerate()
                .all(|(i, b)| b.pos == start.wrapping_add(i as u16));
        if contiguous {
            self.queue.set_next_avail(start);
        } else {
            tracing::warn!(
                "rx: returning {} unfilled receive buffer(s) empty",
                self.stash.len()
            );
            let elems: Vec<(u16, u32)> = self.stash.iter().map(|b| (b.head, 0)).collect();
            if let Err(e) = self.used.publish(&mut self.queue, mem, &elems) {
                tracing::warn!("rx: cannot update the used ring: {e}");
            }
        }
        self.stash.clear();
        self.stash_bytes = 0;
        self.stash_entries = 0;
    }

    /// The queue, positioned after what was delivered (see `release_stash`).
    pub fn into_queue(self) -> Queue {
        self.queue
    }

    fn drop_frame(&mut self, len: usize, metrics: &NetMetrics) -> RxOutcome {
        tracing::debug!(
            "rx: dropping a {len}-byte frame: larger than the guest's receive buffers ({} bytes)",
            if self.mergeable {
                self.stash_bytes
            } else {
                self.stash.front().map_or(0, |b| b.capacity)
            }
        );
        metrics.add_rx_dropped(1);
        RxOutcome::Dropped
    }

    /// Pop the next usable chain into the stash (None); malformed ones go straight back
    /// to the guest with length 0. `NeedBuffers` when the available ring is empty,
    /// `Retry` after a ring's worth of malformed chains.
    fn take_buffer(&mut self, mem: &GuestMemoryMmap, metrics: &NetMetrics) -> Option<RxOutcome> {
        for _ in 0..self.queue.size() {
            let Some(chain) = self.queue.pop_descriptor_chain(mem) else {
                return Some(RxOutcome::NeedBuffers);
            };
            let head = chain.head_index();
            let pos = self.queue.next_avail().wrapping_sub(1);
            let limits = Limits {
                max_readable: 0,
                max_writable: usize::MAX,
            };
            let reason = match parse_chain(mem, chain, limits) {
                Ok(p) if p.writable_len >= VNET_HDR_LEN => {
                    let entries = table_entries(mem, &self.queue, head, p.descriptors);
                    self.stash_bytes += p.writable_len;
                    self.stash_entries += entries;
                    self.stash.push_back(RxBuffer {
                        head,
                        segments: p.writable,
                        capacity: p.writable_len,
                        entries,
                        pos,
                    });
                    return None;
                }
                Ok(_) => "smaller than the virtio-net header".to_string(),
                Err(e) => e.to_string(),
            };
            self.reject(mem, head, &reason, metrics);
        }
        Some(RxOutcome::Retry)
    }

    fn reject(&mut self, mem: &GuestMemoryMmap, head: u16, reason: &str, metrics: &NetMetrics) {
        if !self.warned {
            self.warned = true;
            tracing::warn!("rx: malformed receive chain {head} returned unused: {reason}");
        } else {
            tracing::debug!("rx: malformed receive chain {head} returned unused: {reason}");
        }
        metrics.add_rx_errors(1);
        if let Err(e) = self.used.publish(&mut self.queue, mem, &[(head, 0)]) {
            tracing::warn!("rx: cannot update the used ring: {e}");
        }
    }
}
