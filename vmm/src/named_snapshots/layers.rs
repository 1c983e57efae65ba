//! Disk layers: how a snapshot freezes each disk and how a revert goes back to it.
//!
//! Taking snapshot `S` of a writable qcow2 disk whose live image is `DIR/F`: the image
//! is flushed, renamed to `DIR/F.S` (the *layer*: the disk as it is at `S`, never
//! written again), and a new, empty qcow2 overlay is created at `DIR/F` with `F.S` as
//! its backing file (a relative name, so the directory can move). The device switches
//! to the overlay while the VM is paused. The configured path keeps naming the live
//! disk, so the VM file, `oxvm ctl info` and OpenNebula's `disk.N` stay true.
//!
//! Reverting to `S`: a new empty overlay on `DIR/F.S` replaces `DIR/F` (what was
//! written since is dropped, as with libvirt's revert).
//!
//! Raw disks are refused (documented choice): a raw image cannot have a backing file,
//! so layering it would change its format behind the VM file's back, and copying it
//! whole would make a snapshot cost the disk's size. Read-only disks never change and
//! get no layer.

use std::path::{Path, PathBuf};

use oxvm_api::{DiskConfig, DiskFormat, VmConfig};
use oxvm_devices::block::{detect_format, open_disk, read_qcow2_header, DiskBackend, Qcow2Disk};

use super::error::NamedSnapshotError;
use super::meta::SnapshotMeta;
use crate::machine::Machine;
use crate::snapshot::sync_dir;

/// How many `.N` suffixes are tried when `F.S` is taken (by a retired layer of an
/// earlier snapshot with the same name).
const MAX_SUFFIX: u32 = 100;

/// What snapshot-taking does to one disk.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub disk: DiskConfig,
    /// Where the live image goes; `None` for a read-only disk (left alone).
    pub layer: Option<PathBuf>,
}

impl LayerPlan {
    /// The layer's file name, as recorded in `snapshot.json` and the overlay header.
    pub fn layer_name(&self) -> Option<String> {
        Some(file_name(self.layer.as_ref()?))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn dir_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Plan snapshot `name` for every disk of `cfg`: refuses raw images (naming the
/// disk), picks a free layer name next to each writable disk. Changes nothing.
pub fn plan(cfg: &VmConfig, name: &str) -> Result<Vec<LayerPlan>, NamedSnapshotError> {
    let mut plans: Vec<LayerPlan> = Vec::new();
    for (i, d) in cfg.disks.iter().enumerate() {
        if d.readonly {
            plans.push(LayerPlan {
                disk: d.clone(),
                layer: None,
            });
            continue;
        }
        let format = match d.format {
            Some(f) => f,
            None => detect_format(&d.path).map_err(|e| {
                NamedSnapshotError::Refused(format!("disks[{i}] (id {:?}): {e}", d.id))
            })?,
        };
        if format == DiskFormat::Raw {
            return Err(NamedSnapshotError::Refused(format!(
                "disks[{i}] (id {:?}): {} is a raw image; named snapshots layer qcow2 disks \
                 only (convert it with `qemu-img convert -O qcow2`, or make the disk readonly)",
                d.id,
                d.path.display()
            )));
        }
        let base = format!("{}.{name}", file_name(&d.path));
        let dir = dir_of(&d.path);
        let layer = (0..=MAX_SUFFIX)
            .map(|n| match n {
                0 => dir.join(&base),
                n => dir.join(format!("{base}.{n}")),
            })
            .find(|p| {
                p.symlink_metadata().is_err() && !plans.iter().any(|o| o.layer.as_ref() == Some(p))
            })
            .ok_or_else(|| {
                NamedSnapshotError::Conflict(format!(
                    "disks[{i}] (id {:?}): {} and its .1 to .{MAX_SUFFIX} variants are all taken",
                    d.id,
                    dir.join(&base).display()
                ))
            })?;
        plans.push(LayerPlan {
            disk: d.clone(),
            layer: Some(layer),
        });
    }
    Ok(plans)
}

/// The old backends of the disks [`freeze`] layered, kept until the snapshot is
/// committed so that a failure can put everything back.
pub struct Frozen {
    old: Vec<(String, Box<dyn DiskBackend>)>,
}

/// Freeze every planned disk of the (quiesced) machine: flush, rename the live image
/// to its layer, create the overlay, switch the device to it. On error every disk is
/// back as it was and the error names the one that failed.
pub fn freeze(machine: &mut Machine, plans: &[LayerPlan]) -> Result<Frozen, NamedSnapshotError> {
    let mut frozen = Frozen { old: Vec::new() };
    let result = machine.visit_disks(&mut |id, backend| {
        let Some((plan, layer)) = plans
            .iter()
            .find(|p| p.disk.id == id)
            .and_then(|p| Some((p, p.layer.as_ref()?)))
        else {
            return Ok(());
        };
        let new = freeze_one(plan, layer, backend.as_mut()).map_err(|e| e.to_string())?;
        frozen
            .old
            .push((id.to_string(), std::mem::replace(backend, new)));
        Ok(())
    });
    if let Err(e) = result {
        thaw(machine, plans, frozen);
        return Err(NamedSnapshotError::Conflict(format!(
            "snapshot not taken, disks unchanged: {e}"
        )));
    }
    Ok(frozen)
}

fn freeze_one(
    plan: &LayerPlan,
    layer: &Path,
    backend: &mut dyn DiskBackend,
) -> Result<Box<dyn DiskBackend>, NamedSnapshotError> {
    let live = &plan.disk.path;
    let id = &plan.disk.id;
    backend
        .flush()
        .map_err(NamedSnapshotError::io(live, "flush"))?;
    std::fs::rename(live, layer).map_err(NamedSnapshotError::io(layer, "rename the disk to"))?;
    let created = (|| {
        let backing = (file_name(layer), DiskFormat::Qcow2);
        Qcow2Disk::create(live, backend.size(), Some((&backing.0, backing.1)))
            .map_err(NamedSnapshotError::io(live, "create the overlay"))?;
        sync_dir(dir_of(live))?;
        open_disk(&plan.disk).map_err(|e| NamedSnapshotError::Conflict(e.to_string()))
    })();
    if created.is_err() {
        let _ = std::fs::remove_file(live);
        if let Err(e) = std::fs::rename(layer, live) {
            tracing::error!(
                "disk {id}: cannot move {} back to {}: {e}",
                layer.display(),
                live.display()
            );
        }
    }
    created
}

/// Undo [`freeze`]: the old backends go back into the devices, the overlays are
/// removed and the layers renamed back to the live names.
pub fn thaw(machine: &mut Machine, plans: &[LayerPlan], mut frozen: Frozen) {
    let result = machine.visit_disks(&mut |id, backend| {
        let Some(pos) = frozen.old.iter().position(|(d, _)| d == id) else {
            return Ok(());
        };
        let (_, old) = frozen.old.remove(pos);
        drop(std::mem::replace(backend, old));
        if let Some(p) = plans.iter().find(|p| p.disk.id == id) {
            if let Some(layer) = &p.layer {
                let _ = std::fs::remove_file(&p.disk.path);
                std::fs::rename(layer, &p.disk.path).map_err(|e| {
                    format!(
                        "disk {id}: cannot move {} back to {}: {e}",
                        layer.display(),
                        p.disk.path.display()
                    )
                })?;
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        tracing::error!("undoing a failed snapshot: {e}");
    }
}

impl Frozen {
    /// The snapshot is committed: the old backends (writable handles on what are now
    /// layers) are closed.
    pub fn commit(self) {
        drop(self.old);
    }
}

/// What a revert does to one disk: a new overlay on `layer` replaces `live`.
#[derive(Debug, Clone)]
pub struct RevertPlan {
    pub id: String,
    pub live: PathBuf,
    pub layer: PathBuf,
    size: u64,
}

impl RevertPlan {
    fn tmp(&self) -> PathBuf {
        let mut name = self.live.clone().into_os_string();
        name.push(".revert-tmp");
        name.into()
    }
}

/// The layer path of `id`'s layer `name`, next to the disk's live image in `cfg`.
pub fn layer_path(cfg: &VmConfig, id: &str, name: &str) -> Option<PathBuf> {
    let d = cfg.disks.iter().find(|d| d.id == id)?;
    Some(dir_of(&d.path).join(name))
}

/// Plan reverting the disks of `cfg` to `meta`: every layer must be there and be
/// qcow2. Changes nothing.
pub fn plan_revert(
    cfg: &VmConfig,
    meta: &SnapshotMeta,
) -> Result<Vec<RevertPlan>, NamedSnapshotError> {
    let mut plans = Vec::new();
    for (id, name) in meta.layers() {
        let Some(d) = cfg.disks.iter().find(|d| d.id == id) else {
            return Err(NamedSnapshotError::Conflict(format!(
                "snapshot {:?} has a layer for disk {id:?}, which the VM no longer has",
                meta.name
            )));
        };
        let layer = dir_of(&d.path).join(name);
        let header = read_qcow2_header(&layer).map_err(|e| {
            NamedSnapshotError::Conflict(format!(
                "snapshot {:?}: disk {id:?}: layer {}: {e}",
                meta.name,
                layer.display()
            ))
        })?;
        let Some(header) = header else {
            return Err(NamedSnapshotError::Conflict(format!(
                "snapshot {:?}: disk {id:?}: layer {} is not a qcow2 image",
                meta.name,
                layer.display()
            )));
        };
        plans.push(RevertPlan {
            id: id.to_string(),
            live: d.path.clone(),
            layer,
            size: header.size,
        });
    }
    Ok(plans)
}

/// Create each revert overlay under a temporary name (nothing live changes yet).
pub fn prepare_revert(plans: &[RevertPlan]) -> Result<(), NamedSnapshotError> {
    for (i, p) in plans.iter().enumerate() {
        let name = file_name(&p.layer);
        if let Err(e) = Qcow2Disk::create(&p.tmp(), p.size, Some((&name, DiskFormat::Qcow2))) {
            abandon_revert(&plans[..=i]);
            return Err(NamedSnapshotError::io(p.tmp(), "create the overlay")(e));
        }
    }
    Ok(())
}

/// Remove the overlays [`prepare_revert`] made.
pub fn abandon_revert(plans: &[RevertPlan]) {
    for p in plans {
        let _ = std::fs::remove_file(p.tmp());
    }
}

/// Put the prepared overlays in place of the live images.
pub fn commit_revert(plans: &[RevertPlan]) -> Result<(), NamedSnapshotError> {
    for p in plans {
        std::fs::rename(p.tmp(), &p.live)
            .map_err(NamedSnapshotError::io(&p.live, "replace the live image"))?;
        sync_dir(dir_of(&p.live))?;
        tracing::info!(
            "disk {}: {} is a new overlay on {}",
            p.id,
            p.live.display(),
            p.layer.display()
        );
    }
    Ok(())
}
