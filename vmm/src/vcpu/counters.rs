//! Per-vCPU exit counters: what made KVM_RUN return to user space, by reason. Counted
//! by the vCPU thread, read by the API's `counters` at any time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use kvm_ioctls::VcpuExit;

/// The reasons counted, in the order they are reported.
const REASONS: [&str; 10] = [
    "io_in",
    "io_out",
    "mmio_read",
    "mmio_write",
    "intr",
    "system_event",
    "triple_fault",
    "internal_error",
    "other",
    "error",
];

#[derive(Default)]
pub struct ExitCounters {
    counts: [AtomicU64; REASONS.len()],
}

fn reason_index(result: &Result<VcpuExit<'_>, kvm_ioctls::Error>) -> usize {
    match result {
        Ok(VcpuExit::IoIn(..)) => 0,
        Ok(VcpuExit::IoOut(..)) => 1,
        Ok(VcpuExit::MmioRead(..)) => 2,
        Ok(VcpuExit::MmioWrite(..)) => 3,
        Ok(VcpuExit::Intr) => 4,
        Ok(VcpuExit::SystemEvent(..)) => 5,
        Ok(VcpuExit::Shutdown) => 6,
        Ok(VcpuExit::InternalError) => 7,
        Ok(_) => 8,
        // EINTR is a kick (pause, stop, dump): count it with the interrupts.
        Err(e) if e.errno() == libc::EINTR => 4,
        Err(_) => 9,
    }
}

impl ExitCounters {
    pub fn record(&self, result: &Result<VcpuExit<'_>, kvm_ioctls::Error>) {
        self.counts[reason_index(result)].fetch_add(1, Ordering::Relaxed);
    }

    /// Non-zero counts by reason name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        REASONS
            .iter()
            .zip(&self.counts)
            .map(|(name, c)| (name.to_string(), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_hides_zeroes() {
        let c = ExitCounters::default();
        let mut data = [0u8; 1];
        c.record(&Ok(VcpuExit::IoIn(0x3f8, &mut data)));
        c.record(&Ok(VcpuExit::IoIn(0x3f8, &mut data)));
        c.record(&Ok(VcpuExit::Intr));
        c.record(&Err(kvm_ioctls::Error::new(libc::EINTR)));
        let s = c.snapshot();
        assert_eq!(s.get("io_in"), Some(&2));
        assert_eq!(s.get("intr"), Some(&2));
        assert_eq!(s.len(), 2);
    }
}
