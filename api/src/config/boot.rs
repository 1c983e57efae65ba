use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to boot: a Linux kernel (ELF `vmlinux` or `bzImage`, format detected from the
/// file) with optional initrd and command line, or a raw 64-bit payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub entry: BootEntry,
    /// Machine code loaded at a fixed address and entered in 64-bit mode with identity
    /// paging: for small test guests and bring-up, not for operating systems.
    #[serde(default)]
    pub raw: Option<RawPayload>,
}

/// Which entry point of an ELF kernel to use. A bzImage is always entered at its 64-bit
/// `startup_64`; the 16-bit real-mode entry is never used (it does not work on every host
/// and buys nothing for a VMM that can set up long mode itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootEntry {
    /// PVH when the ELF has the Xen PVH note, else the Linux 64-bit entry (what
    /// Firecracker and Cloud Hypervisor do).
    #[default]
    Auto,
    /// Linux 64-bit boot protocol: long mode, zero page in RSI.
    Linux64,
    /// PVH: 32-bit protected mode, `hvm_start_info` in EBX. Error if the ELF has no note.
    Pvh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayload {
    pub path: PathBuf,
    /// Guest physical address the file is copied to.
    pub load_address: u64,
    /// First instruction; defaults to `load_address`.
    #[serde(default)]
    pub entry: Option<u64>,
}
