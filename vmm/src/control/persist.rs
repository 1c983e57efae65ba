//! Save and restore through the lifecycle: a save pauses the vCPUs, quiesces the
//! devices (no request in flight, no worker touching guest memory), writes
//! `memory.raw` and then `state.oxvm` (last, renamed into place: a directory without
//! it is an incomplete save), and stops or goes on. A restore reads and checks the
//! state file before anything is built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use oxvm_api::control::{MemoryMode, RestoreParams, SaveParams};
use oxvm_api::{ApiError, ApiReply, VmConfig, VmState};

use super::lifecycle::Lifecycle;
use super::VmExit;
use crate::error::VmmError;
use crate::machine::{Machine, Start};
use crate::machine_state::{MemorySource, RestoreSource, VmSnapshot};
use crate::memory::MemoryRestore;
use crate::snapshot::{
    read_state_file, save_memory, write_state_file, Kind, MEMORY_FILE, STATE_FILE,
};

fn check_save_dir(dir: &Path) -> Result<(), ApiError> {
    if !dir.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "dir: {} is relative; give an absolute path (the VM process's working directory is not yours)",
            dir.display()
        )));
    }
    if dir.join(STATE_FILE).exists() {
        return Err(ApiError::conflict(format!(
            "dir: {} already holds a saved VM; remove it or choose another directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| ApiError::bad_request(format!("dir: cannot create {}: {e}", dir.display())))
}

/// Apply `--disk ID=PATH` and `--tap ID=NAME` to the saved config; an unknown id is
/// an error naming it.
pub(super) fn apply_overrides(
    cfg: &mut VmConfig,
    disks: &BTreeMap<String, PathBuf>,
    taps: &BTreeMap<String, String>,
) -> Result<(), VmmError> {
    for (id, path) in disks {
        let d =
            cfg.disks.iter_mut().find(|d| &d.id == id).ok_or_else(|| {
                VmmError::Device(format!("disks: the VM has no disk with id {id:?}"))
            })?;
        d.path = path.clone();
    }
    for (id, tap) in taps {
        let n =
            cfg.nics.iter_mut().find(|n| &n.id == id).ok_or_else(|| {
                VmmError::Device(format!("taps: the VM has no NIC with id {id:?}"))
            })?;
        n.tap = tap.clone();
    }
    cfg.validate()
        .map_err(|e| VmmError::Device(format!("saved config after overrides: {e}")))
}

impl Lifecycle {
    pub(super) fn api_save(&mut self, p: SaveParams) -> Result<ApiReply, ApiError> {
        if !matches!(self.state, VmState::Running | VmState::Paused) {
            return Err(ApiError::conflict(format!(
                "cannot save a VM that is {} (running or paused only)",
                self.state
            )));
        }
        if self.migration_active() {
            return Err(ApiError::conflict("cannot save during a live migration"));
        }
        self.check_not_held("save")?;
        check_save_dir(&p.dir)?;
        let started = Instant::now();
        let was_running = self.state == VmState::Running;
        let (Some(machine), Some(vcpus), Some(cfg)) = (
            self.machine.as_mut(),
            self.vcpus.as_ref(),
            self.cfg.as_ref(),
        ) else {
            return Err(ApiError::internal("no machine to save"));
        };
        if was_running {
            vcpus.pause();
        }
        let saved = (|| -> Result<_, VmmError> {
            machine.quiesce_devices()?;
            // The saved state goes with the disks as they are now: make them durable.
            machine.flush_disks()?;
            let snap = machine.save_state(cfg, vcpus)?;
            let mem = save_memory(machine.guest_memory(), &p.dir.join(MEMORY_FILE))
                .map_err(|e| VmmError::Device(e.to_string()))?;
            write_state_file(&p.dir.join(STATE_FILE), Kind::Snapshot, &snap)
                .map_err(|e| VmmError::Device(e.to_string()))?;
            Ok(mem)
        })();
        let stats = match saved {
            Ok(s) => s,
            Err(e) => {
                if let Err(r) = machine.resume_devices() {
                    tracing::error!("resuming devices after a failed save: {r}");
                }
                if was_running {
                    vcpus.resume();
                }
                return Err(ApiError::internal(format!(
                    "save to {}: {e}",
                    p.dir.display()
                )));
            }
        };
        tracing::info!(
            "saved to {} in {} ms: {} pages written, {} zero pages skipped",
            p.dir.display(),
            started.elapsed().as_millis(),
            stats.pages_written,
            stats.pages_zero
        );
        if p.stop {
            self.stop(VmExit::Saved);
        } else {
            if let Err(e) = machine.resume_devices() {
                // The devices cannot go on: the VM cannot either, but the save is good.
                self.fail(e);
                return self.reply_state();
            }
            if was_running {
                vcpus.resume();
            }
        }
        self.reply_state()
    }

    pub(super) fn api_restore(&mut self, p: RestoreParams) -> Result<ApiReply, ApiError> {
        if self.state != VmState::Empty {
            return Err(ApiError::conflict(format!(
                "restore needs an empty `oxvm serve` process; this one's VM is {}",
                self.state
            )));
        }
        self.restore(&p)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.reply_state()
    }

    /// Build the saved machine and start it (paused if asked). Nothing runs if the
    /// state file, the memory file or the host is refused.
    pub fn restore(&mut self, p: &RestoreParams) -> Result<(), VmmError> {
        let started = Instant::now();
        let (header, mut snap): (_, VmSnapshot) = read_state_file(&p.dir.join(STATE_FILE))?;
        match header.kind {
            Kind::Snapshot => {}
            Kind::NamedSnapshot => {
                return Err(VmmError::Device(format!(
                    "{} is a named snapshot, not a saved VM: revert to it with `oxvm ctl \
                     snapshot-revert NAME` (a restore would pair its memory with today's disks)",
                    p.dir.display()
                )))
            }
            other => {
                return Err(VmmError::Device(format!(
                    "{}: holds a {other:?} state, not a saved VM",
                    p.dir.join(STATE_FILE).display()
                )))
            }
        }
        apply_overrides(&mut snap.config, &p.disks, &p.taps)?;
        let mode = match p.memory {
            MemoryMode::Lazy => MemoryRestore::Lazy,
            MemoryMode::Copy => MemoryRestore::Copy,
        };
        let memory_path = p.dir.join(MEMORY_FILE);
        let cfg = snap.config.clone();
        let src = RestoreSource {
            state: &snap,
            memory: MemorySource::File(&memory_path, mode),
        };
        self.create_with(cfg, |kvm, cfg, events| {
            Machine::build_from(kvm, cfg, events, Start::Restore(&src))
        })?;
        // Restored devices wait for this: nothing else owns the guest.
        let running = match self.machine.as_mut() {
            Some(m) => m.resume_devices(),
            None => Ok(()),
        }
        .and_then(|()| self.start_vcpus(p.paused));
        if let Err(e) = running {
            // Nothing half restored stays behind (a serve process is empty again).
            self.discard();
            return Err(e);
        }
        tracing::info!(
            "restored {} in {} ms ({:?} memory)",
            p.dir.display(),
            started.elapsed().as_millis(),
            p.memory
        );
        Ok(())
    }
}
