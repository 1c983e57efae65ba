use serde::{Deserialize, Serialize};

/// How a graceful shutdown (API `shutdown`, SIGTERM, SIGINT) is carried out: the ACPI
/// power button is pressed and the guest gets `timeout_s` seconds to power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Seconds the guest gets to power off (OpenNebula's SHUTDOWN_TIMEOUT default).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// For API shutdowns: destroy the VM once the timeout passes (FORCE_DESTROY); when
    /// false the VM keeps running and the failure is reported. A signal always ends the
    /// process: after the timeout the VM is destroyed whatever this says.
    #[serde(default = "default_force")]
    pub force: bool,
}

/// Longest accepted timeout: a day. Anything longer is a typo (milliseconds?).
pub const MAX_SHUTDOWN_TIMEOUT_S: u64 = 86_400;

fn default_timeout_s() -> u64 {
    120
}

fn default_force() -> bool {
    true
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout_s: default_timeout_s(),
            force: default_force(),
        }
    }
}
