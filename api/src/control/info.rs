use serde::{Deserialize, Serialize};

use super::VmState;
use crate::VmConfig;

/// `GET /v1/vm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInfo {
    /// The VM's name (absent while `empty`).
    pub name: Option<String>,
    pub state: VmState,
    /// The VM process.
    pub pid: u32,
    /// Seconds since the guest last booted (absent before the first boot).
    pub uptime_s: Option<f64>,
    /// How many times the guest has booted in this process (resets and reboots count).
    pub boots: u64,
    /// One entry per running vCPU thread.
    pub vcpu_threads: Vec<VcpuThread>,
    /// Why the last action failed, e.g. a shutdown that timed out.
    pub last_error: Option<String>,
    /// The VM config as the VMM uses it (defaults filled in, paths absolute).
    pub config: Option<VmConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuThread {
    pub index: u32,
    /// Kernel thread id (what `top -H` shows and cgroups take).
    pub tid: u32,
}

/// The answer to an action or a create/deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionReply {
    /// The state right after the action was applied (`shutting-down` for a shutdown
    /// that is waiting for the guest).
    pub state: VmState,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInfo {
    /// oxvm's version (Cargo package version).
    pub version: String,
    /// The API version (the `/v1` in routes).
    pub api: u32,
}
