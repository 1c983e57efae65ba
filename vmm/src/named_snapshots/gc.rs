//! Removing the layers nothing is built on any more. A deleted snapshot's layer may
//! still be the backing file of a live disk or of another snapshot's layer; it is
//! recorded as retired (see `store.rs`) and removed here once no chain reaches it:
//! after every delete and every revert.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oxvm_api::VmConfig;
use oxvm_devices::block::read_qcow2_header;

use super::error::NamedSnapshotError;
use super::layers::layer_path;
use super::store::SnapshotStore;

/// Longest backing chain followed; a longer one (or a loop in badly made images)
/// stops the collection rather than hang it.
const MAX_CHAIN: usize = 4096;

/// The same file whatever path names it.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Add `top` and every image below it, as canonical paths. Any image that cannot be
/// read, or a chain too long to follow, is an error: what lies below it is unknown,
/// so nothing may be removed.
fn chain(top: &Path, into: &mut HashSet<PathBuf>) -> Result<(), NamedSnapshotError> {
    let mut cur = top.to_path_buf();
    for _ in 0..MAX_CHAIN {
        if !into.insert(canonical(&cur)) {
            return Ok(()); // the rest is already known
        }
        let header =
            read_qcow2_header(&cur).map_err(NamedSnapshotError::io(&cur, "read the header of"))?;
        match header.and_then(|h| h.backing_path(&cur)) {
            Some(next) => cur = next,
            None => return Ok(()),
        }
    }
    Err(NamedSnapshotError::Conflict(format!(
        "the backing chain of {} is longer than {MAX_CHAIN} images; not collecting layers",
        top.display()
    )))
}

/// Remove every retired layer that no live disk and no remaining snapshot is built
/// on; returns the paths removed. A failure to remove one is logged and the layer
/// stays recorded, so the next collection tries again.
pub fn collect_garbage(
    cfg: &VmConfig,
    store: &SnapshotStore,
) -> Result<Vec<PathBuf>, NamedSnapshotError> {
    let retired = store.retired()?;
    if retired.is_empty() {
        return Ok(Vec::new());
    }
    let mut used = HashSet::new();
    for d in &cfg.disks {
        chain(&d.path, &mut used)?;
    }
    for meta in store.list()? {
        for (id, name) in meta.layers() {
            if let Some(p) = layer_path(cfg, id, name) {
                chain(&p, &mut used)?;
            }
        }
    }
    let mut removed = Vec::new();
    for (record, meta) in retired {
        let mut left = 0;
        for (id, name) in meta.layers() {
            // A layer of a disk the VM no longer has cannot be placed: keep it.
            let Some(p) = layer_path(cfg, id, name) else {
                left += 1;
                continue;
            };
            if p.symlink_metadata().is_err() {
                continue;
            }
            if used.contains(&canonical(&p)) {
                left += 1;
                continue;
            }
            match std::fs::remove_file(&p) {
                Ok(()) => removed.push(p),
                Err(e) => {
                    tracing::warn!("cannot remove the unused layer {}: {e}", p.display());
                    left += 1;
                }
            }
        }
        if left == 0 {
            if let Err(e) = std::fs::remove_file(&record) {
                tracing::warn!("cannot remove {}: {e}", record.display());
            }
        }
    }
    for p in &removed {
        tracing::info!(
            "removed {}: no disk or snapshot is built on it",
            p.display()
        );
    }
    Ok(removed)
}
