use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    BootConfig, CpuConfig, DiskConfig, NicConfig, Resources, SerialConfig, ShutdownConfig,
};

/// A whole VM: what `oxvm run` boots. New device arrays (disks, nics) and the API socket
/// are added here as optional fields with serde defaults, so old files stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// VM name: names the process (its main thread) and, later, its runtime files.
    pub name: String,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Back guest RAM with a shared memfd instead of anonymous memory, so a live
    /// migration to another oxvm on this host can hand the memory over (`local`)
    /// instead of copying it. Costs: no transparent huge pages unless shmem THP is
    /// enabled on the host. See docs/config.md.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory_shared: bool,
    pub boot: BootConfig,
    #[serde(default)]
    pub serial: SerialConfig,
    #[serde(default)]
    pub on_reboot: OnReboot,
    #[serde(default)]
    pub cpu: CpuConfig,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    /// Host resource control: CPU weight, memory limit (a cgroup), vCPU pinning.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Graceful shutdown: how long the guest gets, and whether to force it after that.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Serve the control API on this Unix socket (`oxvm run --api-socket` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<PathBuf>,
    /// Where named snapshots keep their VM state and memory (one directory per
    /// snapshot); snapshots are refused without it. See docs/snapshots.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_dir: Option<PathBuf>,
}

fn default_vcpus() -> u32 {
    1
}

/// What a guest-initiated reboot (keyboard controller reset, ACPI reset register,
/// triple fault) does: rebuild the machine in the same process, or end the process as
/// a power-off would (QEMU's `-no-reboot`, Firecracker's only behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    #[default]
    Restart,
    Exit,
}
