//! Counters of one virtio-net device, summed over its queue pairs.
//!
//! Workers bump them with relaxed atomics (they are statistics, not synchronisation);
//! the VMM reads a consistent-enough [`NetMetricsSnapshot`] whenever it likes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, shared between the device, its workers and whoever reports them.
#[derive(Debug, Default)]
pub struct NetMetrics {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    rx_errors: AtomicU64,
    rx_no_buffers: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_errors: AtomicU64,
    ctrl_commands: AtomicU64,
    ctrl_errors: AtomicU64,
}

/// A copy of [`NetMetrics`] at one moment. Byte counts are Ethernet frame bytes (the
/// virtio-net header excluded).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetMetricsSnapshot {
    /// Frames delivered to the guest.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames from the tap that could never fit the guest's receive buffers.
    pub rx_dropped: u64,
    /// Malformed receive chains (returned to the guest unused) and tap read errors.
    pub rx_errors: u64,
    /// Times a frame had to wait because the guest had posted no (or too few) buffers.
    pub rx_no_buffers: u64,
    /// Frames the guest sent that were written to the tap.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Malformed transmit chains and tap write errors.
    pub tx_errors: u64,
    /// Control-queue commands handled, and those answered with an error.
    pub ctrl_commands: u64,
    pub ctrl_errors: u64,
}

macro_rules! counters {
    ($($name:ident => $add:ident),* $(,)?) => {
        impl NetMetrics {
            $(
                pub(crate) fn $add(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*

            /// Read all counters.
            pub fn snapshot(&self) -> NetMetricsSnapshot {
                NetMetricsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    rx_packets => add_rx_packets,
    rx_bytes => add_rx_bytes,
    rx_dropped => add_rx_dropped,
    rx_errors => add_rx_errors,
    rx_no_buffers => add_rx_no_buffers,
    tx_packets => add_tx_packets,
    tx_bytes => add_tx_bytes,
    tx_errors => add_tx_errors,
    ctrl_commands => add_ctrl_commands,
    ctrl_errors => add_ctrl_errors,
}
