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

use oxvm_api::{CacheMode, DiscardMode, DiskConfig, DiskFormat, VmConfig};
use oxvm_devices::block::{
    detect_format, open_disk, read_qcow2_header, DiskBackend, DiskOptions, Qcow2Disk,
};

use super::error::NamedSnapshotError;
use super::meta::SnapshotMeta;
use crate::machine::Machine;
use crate::snapshot::{sync_dir, SnapshotError};

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
        match d.path.symlink_metadata() {
            Ok(m) if m.file_type().is_file() => {}
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "not a regular file"
                };
                return Err(NamedSnapshotError::Refused(format!(
                    "disks[{i}] (id {:?}): {} is {what}; named snapshots rename the image \
                     and put an overlay in its place, so the path must be the image file \
                     itself",
                    d.id,
                    d.path.display()
                )));
            }
            Err(e) => return Err(NamedSnapshotError::io(&d.path, "inspect")(e)),
        }
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

/// Undo [`freeze`]: the old backends go back into the devices and each layer is
/// renamed back over its overlay (one atomic rename: the live path never goes
/// missing). Every disk is tried even if one fails.
pub fn thaw(machine: &mut Machine, plans: &[LayerPlan], mut frozen: Frozen) {
    let result = machine.visit_disks(&mut |id, backend| {
        let Some(pos) = frozen.old.iter().position(|(d, _)| d == id) else {
            return Ok(());
        };
        let (_, old) = frozen.old.remove(pos);
        drop(std::mem::replace(backend, old));
        let Some((live, layer)) = plans
            .iter()
            .find(|p| p.disk.id == id)
            .and_then(|p| Some((&p.disk.path, p.layer.as_ref()?)))
        else {
            return Ok(());
        };
        match std::fs::rename(layer, live)
            .map_err(SnapshotError::io(live, "rename back"))
            .and_then(|()| sync_dir(dir_of(live)))
        {
            Ok(()) => {}
            Err(e) => tracing::error!(
                "undoing a failed snapshot: disk {id}: {} is left as the layer of {}: {e}",
                layer.display(),
                live.display()
            ),
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

/// What a revert does to one disk: a new overlay on `layer` replaces `live`; the old
/// live image is kept aside until the machine is rebuilt, so a failed revert can put
/// it back.
#[derive(Debug, Clone)]
pub struct RevertPlan {
    pub id: String,
    pub live: PathBuf,
    pub layer: PathBuf,
    size: u64,
}

impl RevertPlan {
    /// A hidden name next to the live image (snapshot names cannot start with a dot,
    /// so no layer is ever called this).
    fn hidden(&self, what: &str) -> PathBuf {
        dir_of(&self.live).join(format!(".{}.oxvm-{what}", file_name(&self.live)))
    }

    fn tmp(&self) -> PathBuf {
        self.hidden("revert-new")
    }

    fn aside(&self) -> PathBuf {
        self.hidden("revert-old")
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

/// Create each revert overlay under its hidden name and open it read-only, which
/// opens the layer's whole backing chain: a broken chain is found here, while nothing
/// live has changed. On error nothing is left behind.
pub fn prepare_revert(plans: &[RevertPlan]) -> Result<(), NamedSnapshotError> {
    for (i, p) in plans.iter().enumerate() {
        let made = (|| {
            let tmp = p.tmp();
            // A leftover of an interrupted revert (the name is ours alone).
            let _ = std::fs::remove_file(&tmp);
            let name = file_name(&p.layer);
            Qcow2Disk::create(&tmp, p.size, Some((&name, DiskFormat::Qcow2)))
                .map_err(NamedSnapshotError::io(&tmp, "create the overlay"))?;
            let opts = DiskOptions {
                readonly: true,
                cache: CacheMode::Writeback,
                discard: DiscardMode::Ignore,
            };
            Qcow2Disk::open(&tmp, opts).map(drop).map_err(|e| {
                NamedSnapshotError::Conflict(format!(
                    "disk {:?}: the chain under {} cannot be opened: {e}",
                    p.id,
                    p.layer.display()
                ))
            })
        })();
        if let Err(e) = made {
            abandon_revert(&plans[..=i]);
            return Err(e);
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

/// Put the prepared overlays in place of the live images, each old live image kept
/// aside. On error the disks done so far are put back and the overlays removed.
pub fn commit_revert(plans: &[RevertPlan]) -> Result<(), NamedSnapshotError> {
    for (i, p) in plans.iter().enumerate() {
        let swapped = std::fs::rename(&p.live, p.aside())
            .map_err(NamedSnapshotError::io(&p.live, "move aside"))
            .and_then(|()| {
                std::fs::rename(p.tmp(), &p.live).map_err(|e| {
                    // Put this one back before reporting.
                    let _ = std::fs::rename(p.aside(), &p.live);
                    NamedSnapshotError::io(&p.live, "replace the live image")(e)
                })
            })
            .and_then(|()| Ok(sync_dir(dir_of(&p.live))?));
        if let Err(e) = swapped {
            undo_revert(&plans[..i]);
            abandon_revert(plans);
            return Err(e);
        }
        tracing::info!(
            "disk {}: {} is a new overlay on {}",
            p.id,
            p.live.display(),
            p.layer.display()
        );
    }
    Ok(())
}

/// The revert is over: the old live images go.
pub fn finish_revert(plans: &[RevertPlan]) {
    for p in plans {
        if let Err(e) = std::fs::remove_file(p.aside()) {
            tracing::warn!("cannot remove {}: {e}", p.aside().display());
        }
    }
}

/// The revert failed after [`commit_revert`]: the old live images go back in place
/// (what the guest had written is kept).
pub fn undo_revert(plans: &[RevertPlan]) {
    for p in plans {
        match std::fs::rename(p.aside(), &p.live) {
            Ok(()) => {
                let _ = sync_dir(dir_of(&p.live));
            }
            Err(e) => tracing::error!(
                "disk {}: cannot move {} back to {}: {e}",
                p.id,
                p.aside().display(),
                p.live.display()
            ),
        }
    }
}
