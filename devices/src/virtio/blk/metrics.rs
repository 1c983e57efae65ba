//! Per-disk counters, updated by the worker and read by whoever holds the `Arc` (the
//! API will serve snapshots).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct BlkMetrics {
    read_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_ops: AtomicU64,
    write_bytes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
    write_zeroes: AtomicU64,
    /// Requests that failed in the backend (host I/O errors).
    io_errors: AtomicU64,
    /// Requests refused as malformed or out of range (guest errors).
    invalid_requests: AtomicU64,
    /// Requests of a type or with flags the device does not support.
    unsupported: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlkMetricsSnapshot {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub write_zeroes: u64,
    pub io_errors: u64,
    pub invalid_requests: u64,
    pub unsupported: u64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl BlkMetrics {
    pub fn snapshot(&self) -> BlkMetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlkMetricsSnapshot {
            read_ops: get(&self.read_ops),
            read_bytes: get(&self.read_bytes),
            write_ops: get(&self.write_ops),
            write_bytes: get(&self.write_bytes),
            flushes: get(&self.flushes),
            discards: get(&self.discards),
            write_zeroes: get(&self.write_zeroes),
            io_errors: get(&self.io_errors),
            invalid_requests: get(&self.invalid_requests),
            unsupported: get(&self.unsupported),
        }
    }

    pub(crate) fn read(&self, bytes: u64) {
        add(&self.read_ops, 1);
        add(&self.read_bytes, bytes);
    }

    pub(crate) fn write(&self, bytes: u64) {
        add(&self.write_ops, 1);
        add(&self.write_bytes, bytes);
    }

    pub(crate) fn flush(&self) {
        add(&self.flushes, 1);
    }

    pub(crate) fn discard(&self) {
        add(&self.discards, 1);
    }

    pub(crate) fn write_zeroes(&self) {
        add(&self.write_zeroes, 1);
    }

    pub(crate) fn io_error(&self) {
        add(&self.io_errors, 1);
    }

    pub(crate) fn invalid(&self) {
        add(&self.invalid_requests, 1);
    }

    pub(crate) fn unsupported(&self) {
        add(&self.unsupported, 1);
    }
}
