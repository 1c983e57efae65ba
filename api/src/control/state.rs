use serde::{Deserialize, Serialize};

use super::{ApiError, VmAction};

/// Where a VM is in its life:
/// `empty` (an `oxvm serve` process not given a VM yet) → `created` (built: memory,
/// devices, vCPUs exist, nothing runs) → `running` ⇄ `paused`; `running` →
/// `shutting-down` (the ACPI power button was pressed) → `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    Empty,
    Created,
    Running,
    Paused,
    ShuttingDown,
    Stopped,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Empty => "empty",
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting-down",
            VmState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        [
            VmState::Empty,
            VmState::Created,
            VmState::Running,
            VmState::Paused,
            VmState::ShuttingDown,
            VmState::Stopped,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Whether `action` may be asked for in this state; the 409 message otherwise. The
    /// VMM and the documentation both follow this table.
    pub fn check(self, action: &VmAction) -> Result<(), ApiError> {
        use VmState::*;
        let ok = match action {
            VmAction::Boot => self == Created,
            VmAction::Shutdown(_) | VmAction::Reboot(_) => self == Running,
            VmAction::Destroy => matches!(self, Created | Running | Paused | ShuttingDown),
            VmAction::Reset => matches!(self, Running | Paused | ShuttingDown),
            VmAction::Pause => self == Running,
            VmAction::Resume => self == Paused,
        };
        if ok {
            return Ok(());
        }
        let hint = match (action, self) {
            (_, Empty) => " (no VM yet: deploy one with PUT /v1/vm)",
            (VmAction::Shutdown(_) | VmAction::Reboot(_), Paused) => " (resume it first)",
            (VmAction::Shutdown(_), ShuttingDown) => " (a shutdown is already under way)",
            _ => "",
        };
        Err(ApiError::conflict(format!(
            "cannot {} a VM that is {}{hint}",
            action.name(),
            self.as_str()
        )))
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
