//! Transmit: frames from the guest's transmit chains to the tap.
//!
//! A transmit chain is driver-readable only: the 12-byte virtio-net header, then the
//! Ethernet frame, split over descriptors however the driver likes. It is gathered into
//! a bounce buffer (bounded by `MAX_FRAME_LEN`: header + 64 KiB GSO packet) and
//! written to the tap in one `write`, which the tap takes as one frame; the header goes
//! through unchanged, so the kernel does the checksum/segmentation the guest asked for.
//! A malformed chain (outside guest memory, device-writable parts, too long, too short
//! to hold a header and an Ethernet header, broken links) is returned unused and
//! counted; the queue goes on with the next one.

use std::io;

use virtio_queue::{Queue, QueueT};

use super::super::GuestMemoryMmap;
use super::chain::{gather, parse_chain, Limits};
use super::metrics::NetMetrics;
use super::used::UsedRing;
use super::MAX_FRAME_LEN;
use crate::net::VNET_HDR_LEN;

const ETH_HLEN: usize = 14;

/// Where transmit processing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxStatus {
    /// The available ring is empty (and guest kicks are enabled again).
    Done,
    /// The budget ran out with chains left: call again (no kick will come).
    More,
    /// The tap would block: call again when it is writable.
    Blocked,
}

enum Pop {
    Frame,
    Malformed,
    Empty,
}

/// The transmit queue of one queue pair.
pub(crate) struct TxQueue {
    queue: Queue,
    used: UsedRing,
    /// The frame being sent, and its chain (kept when the tap would block).
    frame: Vec<u8>,
    pending: Option<u16>,
    warned: bool,
}

impl TxQueue {
    pub fn new(queue: Queue) -> Self {
        Self {
            used: UsedRing::new(&queue),
            queue,
            frame: Vec::new(),
            pending: None,
            warned: false,
        }
    }

    /// Handle up to `budget` chains, sending frames through `write` (one call each).
    pub fn process(
        &mut self,
        mem: &GuestMemoryMmap,
        metrics: &NetMetrics,
        budget: usize,
        write: &mut dyn FnMut(&[u8]) -> io::Result<usize>,
    ) -> TxStatus {
        // Kicks are pointless while we are draining the ring anyway.
        let _ = self.queue.disable_notification(mem);
        let mut rechecked = false;
        for _ in 0..budget {
            if self.pending.is_none() {
                match self.pop_frame(mem, metrics) {
                    Pop::Frame => rechecked = false,
                    Pop::Malformed => continue,
                    // Empty: re-enable kicks, unless chains raced in meanwhile.
                    Pop::Empty => match self.queue.enable_notification(mem) {
                        Ok(true) if !rechecked => {
                            rechecked = true;
                            let _ = self.queue.disable_notification(mem);
                            continue;
                        }
                        Ok(true) => {
                            // Still nothing to pop although the index says otherwise:
                            // the index is bogus (more than a ring ahead). Wait for a
                            // kick instead of spinning on it.
                            self.warn_once("available ring index is invalid");
                            return TxStatus::Done;
                        }
                        _ => return TxStatus::Done,
                    },
                }
            }
            let Some(head) = self.pending else {
                continue;
            };
            match write_frame(write, &self.frame) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TxStatus::Blocked,
                Ok(()) => {
                    metrics.add_tx_packets(1);
                    metrics.add_tx_bytes((self.frame.len() - VNET_HDR_LEN) as u64);
                }
                Err(e) => {
                    tracing::debug!("tx: tap write failed: {e}");
                    metrics.add_tx_errors(1);
                }
            }
            self.pending = None;
            self.complete(mem, head);
        }
        TxStatus::More
    }

    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        self.used.needs_notification(&self.queue, mem)
    }

    /// The queue, for a stop that keeps it. A frame still waiting for the tap is not
    /// sent; its chain was the last one taken (nothing is taken while one waits), so
    /// stepping the ring position back puts it back, to be sent when the queue is
    /// served again.
    pub fn into_queue(mut self) -> Queue {
        if self.pending.take().is_some() {
            let next = self.queue.next_avail().wrapping_sub(1);
            self.queue.set_next_avail(next);
        }
        self.queue
    }

    /// Pop one chain: a well-formed frame goes to `self.frame` (its head to
    /// `self.pending`), a malformed chain straight back to the guest.
    fn pop_frame(&mut self, mem: &GuestMemoryMmap, metrics: &NetMetrics) -> Pop {
        let Some(chain) = self.queue.pop_descriptor_chain(mem) else {
            return Pop::Empty;
        };
        let head = chain.head_index();
        let limits = Limits {
            max_readable: MAX_FRAME_LEN,
            max_writable: 0,
        };
        let reason = match parse_chain(mem, chain, limits) {
            Ok(p) if p.readable_len < VNET_HDR_LEN + ETH_HLEN => {
                format!("{} bytes: too short for a frame", p.readable_len)
            }
            Ok(p) => {
                self.frame.resize(p.readable_len, 0);
                match gather(mem, &p.readable, &mut self.frame) {
                    Ok(()) => {
                        self.pending = Some(head);
                        return Pop::Frame;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        self.warn_once(&format!(
            "malformed transmit chain {head} dropped: {reason}"
        ));
        metrics.add_tx_errors(1);
        self.complete(mem, head);
        Pop::Malformed
    }

    /// The first guest error is worth a warning; repeats would flood the log.
    fn warn_once(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!("tx: {what}");
        } else {
            tracing::debug!("tx: {what}");
        }
    }

    /// Return a chain to the guest (transmit chains carry nothing back: length 0).
    fn complete(&mut self, mem: &GuestMemoryMmap, head: u16) {
        if let Err(e) = self.used.publish(&mut self.queue, mem, &[(head, 0)]) {
            tracing::warn!("tx: cannot update the used ring: {e}");
        }
    }
}

fn write_frame(write: &mut dyn FnMut(&[u8]) -> io::Result<usize>, frame: &[u8]) -> io::Result<()> {
    loop {
        match write(frame) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A tap takes a frame whole or not at all.
            Ok(n) if n == frame.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "short write: {n} of {} bytes",
                    frame.len()
                )))
            }
            Err(e) => return Err(e),
        }
    }
}
