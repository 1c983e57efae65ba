//! Named snapshots through the lifecycle: taking one pauses the vCPUs, quiesces the
//! devices, writes the VM state and memory into the snapshots directory, freezes every
//! disk under a new overlay (`named_snapshots::layers`) and goes on; reverting
//! rebuilds the machine from a snapshot's state on fresh overlays over its layers;
//! deleting removes the state and memory, and the layers nothing is built on.
//! Every refusal happens before the VM is touched.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use oxvm_api::control::{RevertParams, SnapshotDisk, SnapshotInfo, SnapshotList, SnapshotParams};
use oxvm_api::{ApiError, ApiReply, VmConfig, VmState};

use super::lifecycle::Lifecycle;
use crate::machine::{Machine, Start};
use crate::machine_state::{MemorySource, RestoreSource, VmSnapshot};
use crate::memory::MemoryRestore;
use crate::named_snapshots::{
    collect_garbage, commit_revert, finish_revert, freeze, layer_path, plan, plan_revert,
    prepare_revert, thaw, undo_revert, MetaDisk, NamedSnapshotError, SnapshotMeta, SnapshotStore,
};
use crate::snapshot::{
    check_memory_file, read_state_file, save_memory, write_state_file, Kind, MEMORY_FILE,
    OXVM_VERSION, STATE_FILE,
};

fn api_err(e: NamedSnapshotError) -> ApiError {
    ApiError::new(e.status(), e.to_string())
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the API shows of a snapshot: layers as paths next to today's live disks.
fn info(store: &SnapshotStore, cfg: &VmConfig, meta: &SnapshotMeta) -> SnapshotInfo {
    SnapshotInfo {
        name: meta.name.clone(),
        description: meta.description.clone(),
        created_unix_ms: meta.created_unix_ms,
        vm_state: meta.vm_state,
        dir: store.path_of(&meta.name),
        disks: meta
            .disks
            .iter()
            .map(|d| SnapshotDisk {
                id: d.id.clone(),
                layer: d
                    .layer
                    .as_deref()
                    .and_then(|name| layer_path(cfg, &d.id, name)),
            })
            .collect(),
    }
}

/// The snapshot's config, with what belongs to this host and this moment taken from
/// the live one: disk paths and taps (the VM may have moved since), the snapshots
/// directory and the API socket.
fn revert_config(snap: VmConfig, live: &VmConfig) -> Result<VmConfig, NamedSnapshotError> {
    let mut cfg = snap;
    for d in &mut cfg.disks {
        let now = live.disks.iter().find(|l| l.id == d.id).ok_or_else(|| {
            NamedSnapshotError::Conflict(format!(
                "the snapshot has disk {:?}, which the VM no longer has",
                d.id
            ))
        })?;
        d.path = now.path.clone();
    }
    for n in &mut cfg.nics {
        if let Some(now) = live.nics.iter().find(|l| l.id == n.id) {
            n.tap = now.tap.clone();
        }
    }
    if let Some(extra) = live
        .disks
        .iter()
        .find(|l| !cfg.disks.iter().any(|d| d.id == l.id))
    {
        return Err(NamedSnapshotError::Conflict(format!(
            "the VM has disk {:?}, which the snapshot does not have",
            extra.id
        )));
    }
    cfg.snapshots_dir = live.snapshots_dir.clone();
    cfg.api_socket = live.api_socket.clone();
    Ok(cfg)
}

impl Lifecycle {
    fn live_config(&self) -> Result<&VmConfig, ApiError> {
        self.cfg
            .as_ref()
            .ok_or_else(|| ApiError::conflict("there is no VM in this process (state empty)"))
    }

    fn check_can_snapshot(&self, what: &str) -> Result<(), ApiError> {
        if !matches!(self.state, VmState::Running | VmState::Paused) {
            return Err(ApiError::conflict(format!(
                "cannot {what} a VM that is {} (running or paused only)",
                self.state
            )));
        }
        if self.migration_active() {
            return Err(ApiError::conflict(format!(
                "cannot {what} during a live migration"
            )));
        }
        self.check_not_held(what)
    }

    pub(super) fn api_snapshot_list(&self) -> Result<ApiReply, ApiError> {
        let cfg = self.live_config()?;
        let store = SnapshotStore::of(cfg).map_err(api_err)?;
        let snapshots = store.list().map_err(api_err)?;
        Ok(ApiReply::Snapshots(SnapshotList {
            snapshots: snapshots.iter().map(|m| info(&store, cfg, m)).collect(),
        }))
    }

    pub(super) fn api_snapshot_get(&self, name: &str) -> Result<ApiReply, ApiError> {
        let cfg = self.live_config()?;
        let store = SnapshotStore::of(cfg).map_err(api_err)?;
        let meta = store.read(name).map_err(api_err)?;
        Ok(ApiReply::Snapshot(Box::new(info(&store, cfg, &meta))))
    }

    pub(super) fn api_snapshot_create(&mut self, p: SnapshotParams) -> Result<ApiReply, ApiError> {
        self.check_can_snapshot("take a snapshot of")?;
        let cfg = self.live_config()?.clone();
        let store = SnapshotStore::of(&cfg).map_err(api_err)?;
        if store.taken(&p.name) {
            return Err(api_err(NamedSnapshotError::Exists(p.name)));
        }
        let plans = plan(&cfg, &p.name).map_err(api_err)?;
        let started = Instant::now();
        let was_running = self.state == VmState::Running;
        let (Some(machine), Some(vcpus)) = (self.machine.as_mut(), self.vcpus.as_ref()) else {
            return Err(ApiError::internal("no machine to snapshot"));
        };
        if was_running {
            vcpus.pause();
        }
        let mut staging = None;
        let taken = (|| -> Result<SnapshotMeta, NamedSnapshotError> {
            machine.quiesce_devices()?;
            let dir = staging.insert(store.stage(&p.name)?);
            let snap = machine.save_state(&cfg, vcpus)?;
            save_memory(machine.guest_memory(), &dir.join(MEMORY_FILE))?;
            write_state_file(&dir.join(STATE_FILE), Kind::NamedSnapshot, &snap)?;
            let frozen = freeze(machine, &plans)?;
            let meta = SnapshotMeta {
                name: p.name.clone(),
                description: p.description.clone(),
                created_unix_ms: now_unix_ms(),
                vm_state: if was_running {
                    VmState::Running
                } else {
                    VmState::Paused
                },
                oxvm_version: OXVM_VERSION.to_string(),
                disks: plans
                    .iter()
                    .map(|pl| MetaDisk {
                        id: pl.disk.id.clone(),
                        layer: pl.layer_name(),
                    })
                    .collect(),
            };
            if let Err(e) = store.commit(dir, &meta) {
                thaw(machine, &plans, frozen);
                return Err(e);
            }
            frozen.commit();
            Ok(meta)
        })();
        if taken.is_err() {
            if let Some(dir) = &staging {
                store.discard(dir);
            }
        }
        let resumed = machine.resume_devices();
        if was_running {
            vcpus.resume();
        }
        let meta = taken.map_err(api_err)?;
        if let Err(e) = resumed {
            // The snapshot is good; the VM cannot go on without its devices.
            self.fail(e);
        }
        tracing::info!(
            "snapshot {:?} taken in {} ms",
            meta.name,
            started.elapsed().as_millis()
        );
        Ok(ApiReply::Snapshot(Box::new(info(&store, &cfg, &meta))))
    }

    pub(super) fn api_snapshot_revert(
        &mut self,
        name: &str,
        p: RevertParams,
    ) -> Result<ApiReply, ApiError> {
        self.check_can_snapshot("revert")?;
        let live = self.live_config()?.clone();
        let store = SnapshotStore::of(&live).map_err(api_err)?;
        let meta = store.read(name).map_err(api_err)?;
        // Everything that can be checked is checked before the VM is touched.
        let dir = store.path_of(name);
        let (header, snap): (_, VmSnapshot) =
            read_state_file(&dir.join(STATE_FILE)).map_err(|e| api_err(e.into()))?;
        if header.kind != Kind::NamedSnapshot {
            return Err(ApiError::internal(format!(
                "{}: holds a {:?} state, not a named snapshot's",
                dir.join(STATE_FILE).display(),
                header.kind
            )));
        }
        let memory = dir.join(MEMORY_FILE);
        let regions = oxvm_arch::memory::RamLayout::new(snap.config.memory_mib << 20).regions();
        check_memory_file(&memory, &regions).map_err(|e| api_err(e.into()))?;
        let cfg = revert_config(snap.config.clone(), &live).map_err(api_err)?;
        let plans = plan_revert(&live, &meta).map_err(api_err)?;
        let paused = p.paused.unwrap_or(meta.vm_state == VmState::Paused);
        let started = Instant::now();

        // Stop the guest and its I/O, then lay the new overlays.
        if let (Some(v), VmState::Running) = (self.vcpus.as_ref(), self.state) {
            v.pause();
        }
        let prepared = (|| -> Result<(), NamedSnapshotError> {
            if let Some(m) = self.machine.as_mut() {
                m.quiesce_devices()?;
            }
            prepare_revert(&plans)
        })();
        if let Err(e) = prepared {
            self.resume_after_refused_revert();
            return Err(api_err(e));
        }
        if let Err(e) = commit_revert(&plans) {
            // Every disk is as it was: the VM goes on.
            self.resume_after_refused_revert();
            return Err(api_err(e));
        }
        let src = RestoreSource {
            state: &snap,
            memory: MemorySource::File(&memory, MemoryRestore::Copy),
        };
        let rebuilt = self.replace_machine(cfg, paused, |kvm, cfg, events| {
            Machine::build_from(kvm, cfg, events, Start::Restore(&src))
        });
        if let Err(e) = rebuilt {
            // The old machine is gone, but not what its guest wrote.
            undo_revert(&plans);
            let err = ApiError::internal(format!(
                "revert to {name:?}: {e} (the VM is stopped; its disks are as before the revert)"
            ));
            self.fail(e);
            return Err(err);
        }
        finish_revert(&plans);
        tracing::info!(
            "reverted to snapshot {name:?} in {} ms",
            started.elapsed().as_millis()
        );
        self.collect_layers(&store);
        self.reply_state()
    }

    /// A revert refused after the pause: the VM goes on as it was.
    fn resume_after_refused_revert(&mut self) {
        if let Some(m) = self.machine.as_mut() {
            if let Err(e) = m.resume_devices() {
                return self.fail(e);
            }
        }
        if let (Some(v), VmState::Running) = (self.vcpus.as_ref(), self.state) {
            v.resume();
        }
    }

    pub(super) fn api_snapshot_delete(&mut self, name: &str) -> Result<ApiReply, ApiError> {
        if self.migration_active() {
            return Err(ApiError::conflict(
                "cannot delete a snapshot during a live migration",
            ));
        }
        let cfg = self.live_config()?.clone();
        let store = SnapshotStore::of(&cfg).map_err(api_err)?;
        let meta = store.read(name).map_err(api_err)?;
        store.remove(&meta).map_err(api_err)?;
        tracing::info!("snapshot {name:?} deleted");
        self.collect_layers(&store);
        self.api_snapshot_list()
    }

    /// Remove the layers nothing is built on (a failure is logged: the layers stay
    /// recorded and the next delete or revert tries again).
    fn collect_layers(&self, store: &SnapshotStore) {
        if let Some(cfg) = &self.cfg {
            if let Err(e) = collect_garbage(cfg, store) {
                tracing::warn!("removing unused snapshot layers: {e}");
            }
        }
    }
}
