use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/vm/counters`: cumulative since the process started (they survive reboots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// By disk id.
    pub disks: BTreeMap<String, DiskCounters>,
    /// By NIC id.
    pub nics: BTreeMap<String, NicCounters>,
    pub vcpus: Vec<VcpuCounters>,
    pub memory: MemoryCounters,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskCounters {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub flush_ops: u64,
    /// Discard and write-zeroes requests.
    pub discard_ops: u64,
    /// Requests that completed with an error status.
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets dropped (no guest buffer, malformed chain, tap error).
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuCounters {
    pub index: u32,
    /// KVM exits handled in user space, by reason (`io`, `mmio`, `hlt`, `intr`, ...).
    pub exits: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryCounters {
    /// Guest RAM as configured.
    pub guest_bytes: u64,
    /// The process's resident set (guest pages the guest touched plus the VMM's own).
    pub host_rss_bytes: u64,
}
