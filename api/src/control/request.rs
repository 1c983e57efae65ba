use serde::{Deserialize, Serialize};

use super::{
    IncomingParams, MigrateParams, RestoreParams, RevertParams, SaveParams, SnapshotParams,
};
use crate::VmConfig;

/// What a client asks of the VM.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `GET /v1/vm`.
    Info,
    /// `GET /v1/vm/counters`.
    Counters,
    /// `PUT /v1/vm`: build the VM (state `created`), do not run it.
    Create(Box<VmConfig>),
    /// `POST /v1/vm/deploy`: create and boot in one call.
    Deploy(Box<VmConfig>),
    /// `POST /v1/vm/actions/<name>`.
    Action(VmAction),
    /// `POST /v1/vm/save`.
    Save(SaveParams),
    /// `POST /v1/vm/restore` (into an empty `oxvm serve` process).
    Restore(RestoreParams),
    /// `GET /v1/vm/migration`.
    MigrationStatus,
    /// `POST /v1/vm/migration`: send this VM.
    Migrate(MigrateParams),
    /// `POST /v1/vm/migration/incoming`: receive a VM (empty serve process).
    Incoming(IncomingParams),
    /// `GET /v1/vm/snapshots`.
    SnapshotList,
    /// `GET /v1/vm/snapshots/{name}`.
    SnapshotGet(String),
    /// `POST /v1/vm/snapshots`.
    SnapshotCreate(SnapshotParams),
    /// `POST /v1/vm/snapshots/{name}/revert`.
    SnapshotRevert(String, RevertParams),
    /// `DELETE /v1/vm/snapshots/{name}`.
    SnapshotDelete(String),
}

/// The lifecycle actions, `POST /v1/vm/actions/<name>`.
#[derive(Debug, Clone, PartialEq)]
pub enum VmAction {
    /// Start the vCPUs of a `created` VM.
    Boot,
    /// Press the ACPI power button; the guest powers off. After the timeout, `force`
    /// destroys the VM, otherwise it goes back to `running` with `last_error` set.
    Shutdown(ShutdownParams),
    /// Stop at once (the guest gets no say): `stopped`.
    Destroy,
    /// Graceful reboot: power button, and when the guest powers off it boots again
    /// (libvirt's ACPI reboot). Same timeout rules as shutdown.
    Reboot(ShutdownParams),
    /// Hard reset in place: the machine is rebuilt and boots from the start.
    Reset,
    Pause,
    Resume,
}

impl VmAction {
    /// The name used in the route and in messages.
    pub fn name(&self) -> &'static str {
        match self {
            VmAction::Boot => "boot",
            VmAction::Shutdown(_) => "shutdown",
            VmAction::Destroy => "destroy",
            VmAction::Reboot(_) => "reboot",
            VmAction::Reset => "reset",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
        }
    }

    /// Every action name, for routing and the OpenAPI check.
    pub const NAMES: [&'static str; 7] = [
        "boot", "shutdown", "destroy", "reboot", "reset", "pause", "resume",
    ];

    /// Whether the action takes a `ShutdownParams` body (others take none).
    pub fn takes_shutdown_params(name: &str) -> bool {
        matches!(name, "shutdown" | "reboot")
    }

    /// Build the action from its route name and optional parameters.
    pub fn from_name(name: &str, params: ShutdownParams) -> Option<VmAction> {
        Some(match name {
            "boot" => VmAction::Boot,
            "shutdown" => VmAction::Shutdown(params),
            "destroy" => VmAction::Destroy,
            "reboot" => VmAction::Reboot(params),
            "reset" => VmAction::Reset,
            "pause" => VmAction::Pause,
            "resume" => VmAction::Resume,
            _ => return None,
        })
    }
}

/// Body of `shutdown` and `reboot` (may be empty: the VM file's `shutdown` section
/// gives the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownParams {
    /// Seconds to wait for the guest to power off (OpenNebula's SHUTDOWN_TIMEOUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Destroy the VM when the timeout passes (OpenNebula's FORCE_DESTROY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}
