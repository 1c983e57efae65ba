//! virtio-net on a host tap.
//!
//! - `device`: features, configuration space, queue layout, activation ([`VirtioNet`]).
//! - `worker`: one thread per queue pair (`net-<id>-q<pair>`), epoll on tap and kicks.
//! - `rx` / `tx` / `ctrl`: the three kinds of queue.
//! - `chain`: checking guest descriptor chains before touching them.
//! - `used`: returning buffers and deciding on interrupts.
//! - `metrics`: counters.
//! - `state`: what a saved VM keeps of the device.

mod chain;
mod ctrl;
mod device;
mod metrics;
mod rx;
mod state;
mod tx;
mod used;
mod worker;

#[cfg(test)]
pub(crate) mod tests;

pub use device::{NetLink, VirtioNet};
pub use metrics::{NetMetrics, NetMetricsSnapshot};
pub use state::NetState;

/// Size of every virtio-net queue (receive, transmit, control).
pub const QUEUE_SIZE: u16 = 256;

/// Largest frame either way, virtio-net header included: a 64 KiB GSO packet (the tap's
/// and Linux guests' default GSO limit) plus its Ethernet and VLAN headers.
pub(crate) const MAX_FRAME_LEN: usize = crate::net::VNET_HDR_LEN + 65_536 + 14 + 4;
