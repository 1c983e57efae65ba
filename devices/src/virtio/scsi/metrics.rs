//! Per-LUN counters. The worker bumps them with relaxed atomics (no lock on the I/O
//! path); the VMM reads a consistent-enough [`ScsiMetricsSnapshot`] at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// Live counters of one LUN.
#[derive(Debug, Default)]
pub struct LunMetrics {
    pub read_ops: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_ops: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flushes: AtomicU64,
    /// UNMAP commands and WRITE SAME commands with the UNMAP bit.
    pub unmaps: AtomicU64,
    pub unmap_bytes: AtomicU64,
    /// Backend I/O failures (read, write, flush, discard, write-zeroes).
    pub io_errors: AtomicU64,
    /// Commands completed with CHECK CONDITION, for any reason (includes io_errors and
    /// probes of optional commands the guest makes during its scan).
    pub check_conditions: AtomicU64,
}

impl LunMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    fn snapshot(&self, id: &str, target: u16) -> LunMetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LunMetricsSnapshot {
            id: id.to_owned(),
            target,
            lun: 0,
            read_ops: get(&self.read_ops),
            read_bytes: get(&self.read_bytes),
            write_ops: get(&self.write_ops),
            write_bytes: get(&self.write_bytes),
            flushes: get(&self.flushes),
            unmaps: get(&self.unmaps),
            unmap_bytes: get(&self.unmap_bytes),
            io_errors: get(&self.io_errors),
            check_conditions: get(&self.check_conditions),
        }
    }
}

/// Point-in-time copy of one LUN's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LunMetricsSnapshot {
    pub id: String,
    pub target: u16,
    pub lun: u16,
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    pub unmaps: u64,
    pub unmap_bytes: u64,
    pub io_errors: u64,
    pub check_conditions: u64,
}

/// Point-in-time copy of a whole controller's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScsiMetricsSnapshot {
    pub luns: Vec<LunMetricsSnapshot>,
}

/// A cheap, cloneable handle on a controller's counters; it stays valid across device
/// resets, so the VMM can keep it for the life of the VM.
#[derive(Clone, Debug, Default)]
pub struct ScsiMetrics {
    luns: Arc<[(String, u16, Arc<LunMetrics>)]>,
}

impl ScsiMetrics {
    pub(crate) fn new(luns: Vec<(String, u16, Arc<LunMetrics>)>) -> Self {
        Self { luns: luns.into() }
    }

    pub fn snapshot(&self) -> ScsiMetricsSnapshot {
        ScsiMetricsSnapshot {
            luns: self
                .luns
                .iter()
                .map(|(id, target, m)| m.snapshot(id, *target))
                .collect(),
        }
    }
}
