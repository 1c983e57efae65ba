//! The control queue (offered with multiqueue): commands from the driver, each a
//! driver-readable `{class, command}` header plus data, and one device-writable ack
//! byte (VIRTIO_NET_OK / VIRTIO_NET_ERR).
//!
//! The command that matters is `MQ VQ_PAIRS_SET`: how many queue pairs the driver uses.
//! The others we answer without doing anything: receive-mode and MAC-table commands get
//! OK because we do not filter at all (the guest's own stack ignores frames it did not
//! ask for); anything else gets ERR.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_CTRL_MAC,
    VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
    VIRTIO_NET_CTRL_RX, VIRTIO_NET_ERR, VIRTIO_NET_OK,
};
use virtio_queue::{Queue, QueueT};

use super::super::GuestMemoryMmap;
use super::chain::{gather, parse_chain, scatter, Limits};
use super::metrics::NetMetrics;
use super::used::UsedRing;

/// Commands are small; the largest (a MAC table) is a few KiB.
const CTRL_MAX: usize = 64 * 1024;

/// The control queue of a device.
pub(crate) struct CtrlQueue {
    queue: Queue,
    used: UsedRing,
    warned: bool,
}

impl CtrlQueue {
    pub fn new(queue: Queue) -> Self {
        Self {
            used: UsedRing::new(&queue),
            queue,
            warned: false,
        }
    }

    /// Handle up to `budget` pending commands; true if more may be waiting.
    /// `set_pairs(n)` switches to `n` queue pairs (already checked to be within
    /// 1..=`max_pairs`) and says whether that worked.
    pub fn process(
        &mut self,
        mem: &GuestMemoryMmap,
        metrics: &NetMetrics,
        budget: usize,
        max_pairs: u16,
        set_pairs: &mut dyn FnMut(u16) -> bool,
    ) -> bool {
        for _ in 0..budget {
            let Some(chain) = self.queue.pop_descriptor_chain(mem) else {
                return false;
            };
            let head = chain.head_index();
            let limits = Limits {
                max_readable: CTRL_MAX,
                max_writable: CTRL_MAX,
            };
            let used_len = match parse_chain(mem, chain, limits) {
                Ok(p) if p.readable_len >= 2 && p.writable_len >= 1 => {
                    let mut cmd = vec![0u8; p.readable_len];
                    let ack = match gather(mem, &p.readable, &mut cmd) {
                        Ok(()) => handle(cmd[0], cmd[1], &cmd[2..], max_pairs, set_pairs),
                        Err(_) => VIRTIO_NET_ERR as u8,
                    };
                    metrics.add_ctrl_commands(1);
                    if ack != VIRTIO_NET_OK as u8 {
                        metrics.add_ctrl_errors(1);
                    }
                    scatter(mem, &p.writable, &[ack]).unwrap_or(0) as u32
                }
                Ok(p) => {
                    self.malformed(
                        head,
                        &format!(
                            "{} command bytes, {} ack bytes",
                            p.readable_len, p.writable_len
                        ),
                    );
                    metrics.add_ctrl_errors(1);
                    0
                }
                Err(e) => {
                    self.malformed(head, &e.to_string());
                    metrics.add_ctrl_errors(1);
                    0
                }
            };
            if let Err(e) = self.used.publish(&mut self.queue, mem, &[(head, used_len)]) {
                tracing::warn!("ctrl: cannot update the used ring: {e}");
            }
        }
        true
    }

    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        self.used.needs_notification(&self.queue, mem)
    }

    /// The queue, for a stop that keeps it (commands complete as they are taken, so
    /// none is half done).
    pub fn into_queue(self) -> Queue {
        self.queue
    }

    fn malformed(&mut self, head: u16, reason: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!("ctrl: malformed control chain {head} returned unused: {reason}");
        } else {
            tracing::debug!("ctrl: malformed control chain {head} returned unused: {reason}");
        }
    }
}

fn handle(
    class: u8,
    cmd: u8,
    data: &[u8],
    max_pairs: u16,
    set_pairs: &mut dyn FnMut(u16) -> bool,
) -> u8 {
    let ok = match (u32::from(class), u32::from(cmd)) {
        (VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) => match data {
            [lo, hi, ..] => {
                let pairs = u16::from_le_bytes([*lo, *hi]);
                let valid = (1..=max_pairs).contains(&pairs);
                if !valid {
                    tracing::debug!("ctrl: driver asked for {pairs} queue pairs (max {max_pairs})");
                }
                valid && set_pairs(pairs)
            }
            _ => false,
        },
        (VIRTIO_NET_CTRL_RX, _) | (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET) => true,
        (VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK) => true,
        _ => {
            tracing::debug!("ctrl: unsupported command class {class} command {cmd}");
            false
        }
    };
    if ok {
        VIRTIO_NET_OK as u8
    } else {
        VIRTIO_NET_ERR as u8
    }
}
