//! The API's counters: cumulative for the life of the process, so a reboot (which
//! rebuilds every device and vCPU) does not reset them. What earlier boots counted is
//! kept in [`CounterTotals`] and added to the live machine's figures.

use std::collections::BTreeMap;

use oxvm_api::control::{Counters, DiskCounters, MemoryCounters, NicCounters, VcpuCounters};

use crate::machine::Machine;
use crate::vcpu::VcpuGroup;

#[derive(Default)]
pub struct CounterTotals {
    disks: BTreeMap<String, DiskCounters>,
    nics: BTreeMap<String, NicCounters>,
    vcpus: BTreeMap<u32, BTreeMap<String, u64>>,
}

fn add_disk(a: &mut DiskCounters, b: &DiskCounters) {
    a.read_ops += b.read_ops;
    a.read_bytes += b.read_bytes;
    a.write_ops += b.write_ops;
    a.write_bytes += b.write_bytes;
    a.flush_ops += b.flush_ops;
    a.discard_ops += b.discard_ops;
    a.errors += b.errors;
}

fn add_nic(a: &mut NicCounters, b: &NicCounters) {
    a.rx_packets += b.rx_packets;
    a.rx_bytes += b.rx_bytes;
    a.tx_packets += b.tx_packets;
    a.tx_bytes += b.tx_bytes;
    a.rx_dropped += b.rx_dropped;
    a.tx_dropped += b.tx_dropped;
}

impl CounterTotals {
    /// Add what `machine` and `vcpus` counted into `self` (before they go away, or to
    /// build a report).
    pub fn absorb(&mut self, machine: Option<&Machine>, vcpus: Option<&VcpuGroup>) {
        if let Some(m) = machine {
            for (id, c) in m.device_metrics().disks() {
                add_disk(self.disks.entry(id).or_default(), &c);
            }
            for (id, c) in m.device_metrics().nics() {
                add_nic(self.nics.entry(id).or_default(), &c);
            }
        }
        if let Some(v) = vcpus {
            for (index, exits) in v.exit_counts() {
                let t = self.vcpus.entry(index).or_default();
                for (reason, n) in exits {
                    *t.entry(reason).or_default() += n;
                }
            }
        }
    }

    /// The report: these totals plus the live machine's counters.
    pub fn report(
        &self,
        machine: Option<&Machine>,
        vcpus: Option<&VcpuGroup>,
        guest_bytes: u64,
    ) -> Counters {
        let mut all = CounterTotals {
            disks: self.disks.clone(),
            nics: self.nics.clone(),
            vcpus: self.vcpus.clone(),
        };
        all.absorb(machine, vcpus);
        Counters {
            disks: all.disks,
            nics: all.nics,
            vcpus: all
                .vcpus
                .into_iter()
                .map(|(index, exits)| VcpuCounters { index, exits })
                .collect(),
            memory: MemoryCounters {
                guest_bytes,
                host_rss_bytes: host_rss_bytes(),
            },
        }
    }
}

/// This process's resident set, from /proc/self/statm (0 if it cannot be read).
fn host_rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc() {
        assert!(host_rss_bytes() > 0);
    }

    #[test]
    fn totals_carry_earlier_boots() {
        let mut t = CounterTotals::default();
        let d = DiskCounters {
            read_ops: 2,
            write_bytes: 4096,
            ..Default::default()
        };
        add_disk(t.disks.entry("vda".into()).or_default(), &d);
        add_disk(t.disks.entry("vda".into()).or_default(), &d);
        let r = t.report(None, None, 1 << 20);
        assert_eq!(r.disks["vda"].read_ops, 4);
        assert_eq!(r.disks["vda"].write_bytes, 8192);
        assert_eq!(r.memory.guest_bytes, 1 << 20);
    }
}
