//! API actions applied to the lifecycle. Each one is checked against the state table
//! first (409 otherwise), so a refused request changes nothing.

use oxvm_api::control::VmAction;
use oxvm_api::{ApiError, ApiReply, VmConfig, VmState};

use super::lifecycle::{Lifecycle, PendingShutdown};
use super::VmExit;
use crate::error::VmmError;

/// Build errors caused by the host (KVM) are 500s; the rest (a missing image, a tap
/// that cannot be opened, a bad value found while building) are the request's fault.
fn build_error(e: VmmError) -> ApiError {
    match e {
        VmmError::KvmOpen(_) | VmmError::Kvm { .. } | VmmError::VcpuThread { .. } => {
            ApiError::internal(e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    }
}

impl Lifecycle {
    pub(super) fn api_create(&mut self, cfg: VmConfig, boot: bool) -> Result<ApiReply, ApiError> {
        if self.state != VmState::Empty {
            return Err(ApiError::conflict(format!(
                "this process already has a VM ({}); one process runs one VM",
                self.state
            )));
        }
        tracing::info!("API: creating VM {}", cfg.name);
        self.create(cfg).map_err(build_error)?;
        if boot {
            if let Err(e) = self.boot() {
                let err = ApiError::internal(e.to_string());
                self.fail(e);
                return Err(err);
            }
        }
        self.reply_state()
    }

    pub(super) fn api_action(&mut self, action: VmAction) -> Result<ApiReply, ApiError> {
        self.state.check(&action)?;
        if self.migration_active() && action != VmAction::Destroy {
            return Err(ApiError::conflict(format!(
                "cannot {} during a live migration (destroy cancels it)",
                action.name()
            )));
        }
        // The guest may run on a migration's destination: nothing that would run it
        // here (a reset boots it afresh on the same disks) until the operator decides.
        if self.devices_held && !matches!(action, VmAction::Destroy | VmAction::Resume) {
            self.check_not_held(action.name())?;
        }
        tracing::info!("API: {}", action.name());
        match action {
            VmAction::Boot => self.boot().map_err(|e| ApiError::internal(e.to_string()))?,
            VmAction::Shutdown(p) | VmAction::Reboot(p) => {
                let defaults = self.cfg.as_ref().map(|c| c.shutdown).unwrap_or_default();
                let pending = PendingShutdown {
                    reboot: matches!(action, VmAction::Reboot(_)),
                    force: p.force.unwrap_or(defaults.force),
                    signal: None,
                    timeout_s: p.timeout_s.unwrap_or(defaults.timeout_s),
                };
                if pending.timeout_s > oxvm_api::config::MAX_SHUTDOWN_TIMEOUT_S {
                    return Err(ApiError::bad_request(format!(
                        "timeout_s: {} s is above the limit of {} s",
                        pending.timeout_s,
                        oxvm_api::config::MAX_SHUTDOWN_TIMEOUT_S
                    )));
                }
                self.last_error = None;
                self.begin_shutdown(pending)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            }
            VmAction::Destroy => self.stop(VmExit::Destroyed),
            VmAction::Reset => {
                self.rebuild_or_fail();
            }
            VmAction::Pause => {
                if let Some(v) = &self.vcpus {
                    v.pause();
                }
                self.state = VmState::Paused;
            }
            VmAction::Resume => self.resume_vcpus(),
        }
        self.reply_state()
    }
}
