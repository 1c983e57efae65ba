use serde::{Deserialize, Serialize};

/// A virtio-net NIC backed by a host tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    /// Unique among the VM's NICs.
    pub id: String,
    /// Host tap name (at most 15 bytes). An existing tap is opened; a missing one is
    /// created, and removed again when the VM ends.
    pub tap: String,
    /// Guest MAC address `xx:xx:xx:xx:xx:xx`; when absent one is derived from the VM
    /// name and NIC id (QEMU's 52:54:00 prefix), so it is stable across boots.
    #[serde(default)]
    pub mac: Option<String>,
    /// Queue pairs (multiqueue tap when > 1).
    #[serde(default = "one")]
    pub queues: u16,
    /// Attach the tap to this Linux bridge (OpenNebula's BRIDGE).
    #[serde(default)]
    pub bridge: Option<String>,
    /// Only `virtio` exists; kept so OpenNebula's MODEL maps and is checked.
    #[serde(default)]
    pub model: NicModel,
}

fn one() -> u16 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    #[default]
    Virtio,
}

/// Parse `xx:xx:xx:xx:xx:xx`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}
