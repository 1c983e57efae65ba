//! The snapshots directory (`snapshots_dir` in the VM config):
//!
//! ```text
//! SNAPSHOTS_DIR/NAME/{state.oxvm,memory.raw,snapshot.json}   one per snapshot
//! SNAPSHOTS_DIR/.NAME.partial/                              a snapshot being taken
//! SNAPSHOTS_DIR/.retired/NAME-CREATED_MS.json               deleted snapshots whose
//!                                                           disk layers still serve
//! ```
//!
//! `snapshot.json` is written last and the directory renamed into place, so a
//! snapshot either exists whole or not at all. Names starting with a dot are never
//! snapshots (snapshot names cannot start with one).

use std::path::{Path, PathBuf};

use oxvm_api::VmConfig;

use super::error::NamedSnapshotError;
use super::meta::{SnapshotMeta, META_FILE};
use crate::snapshot::sync_dir;

const RETIRED_DIR: &str = ".retired";

pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// The store of the VM `cfg` describes; refused without `snapshots_dir`.
    pub fn of(cfg: &VmConfig) -> Result<Self, NamedSnapshotError> {
        let dir = cfg.snapshots_dir.clone().ok_or(NamedSnapshotError::NoDir)?;
        Ok(SnapshotStore { dir })
    }

    /// The directory of snapshot `name` (whether it exists or not).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether anything (a snapshot, or a stray file) is called `name`.
    pub fn taken(&self, name: &str) -> bool {
        self.path_of(name).symlink_metadata().is_ok()
    }

    pub fn read(&self, name: &str) -> Result<SnapshotMeta, NamedSnapshotError> {
        let path = self.path_of(name).join(META_FILE);
        if !path.exists() {
            return Err(NamedSnapshotError::NotFound(name.to_string()));
        }
        SnapshotMeta::read_named(&path, name)
    }

    /// Every snapshot, oldest first. A directory without `snapshot.json` (not a
    /// snapshot) is skipped; one whose file cannot be read is an error naming it.
    pub fn list(&self) -> Result<Vec<SnapshotMeta>, NamedSnapshotError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NamedSnapshotError::io(&self.dir, "list")(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(NamedSnapshotError::io(&self.dir, "list"))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = entry.path().join(META_FILE);
            if meta.exists() {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push(SnapshotMeta::read_named(&meta, &name)?);
            }
        }
        out.sort_by(|a, b| (a.created_unix_ms, &a.name).cmp(&(b.created_unix_ms, &b.name)));
        Ok(out)
    }

    /// A fresh, empty directory to write snapshot `name` into before it is committed
    /// (a leftover from an interrupted attempt is removed first).
    pub fn stage(&self, name: &str) -> Result<PathBuf, NamedSnapshotError> {
        std::fs::create_dir_all(&self.dir).map_err(NamedSnapshotError::io(&self.dir, "create"))?;
        let staging = self.dir.join(format!(".{name}.partial"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(NamedSnapshotError::io(&staging, "remove the leftover"))?;
        }
        std::fs::create_dir(&staging).map_err(NamedSnapshotError::io(&staging, "create"))?;
        Ok(staging)
    }

    /// Remove a staging directory after a failure (best effort: it is hidden anyway).
    pub fn discard(&self, staging: &Path) {
        if let Err(e) = std::fs::remove_dir_all(staging) {
            tracing::warn!("cannot remove {}: {e}", staging.display());
        }
    }

    /// Write `meta` into the staging directory and move it into place. An error means
    /// the snapshot is not there; once the rename is done it is (a failed fsync of the
    /// directory after it is only logged).
    pub fn commit(&self, staging: &Path, meta: &SnapshotMeta) -> Result<(), NamedSnapshotError> {
        meta.write(&staging.join(META_FILE))?;
        let path = self.path_of(&meta.name);
        std::fs::rename(staging, &path).map_err(NamedSnapshotError::io(&path, "create"))?;
        if let Err(e) = sync_dir(&self.dir) {
            tracing::warn!("snapshot {:?} taken, but {e}", meta.name);
        }
        Ok(())
    }

    /// Delete snapshot `meta.name`: its state and memory go; its disk layers, which
    /// may still serve the live disks or other snapshots, are recorded as retired for
    /// [`super::collect_garbage`] to remove once nothing is built on them.
    pub fn remove(&self, meta: &SnapshotMeta) -> Result<(), NamedSnapshotError> {
        let record = (meta.layers().next().is_some()).then(|| {
            self.dir
                .join(RETIRED_DIR)
                .join(format!("{}-{}.json", meta.name, meta.created_unix_ms))
        });
        if let Some(record) = &record {
            let parent = self.dir.join(RETIRED_DIR);
            std::fs::create_dir_all(&parent).map_err(NamedSnapshotError::io(&parent, "create"))?;
            meta.write(record)?;
        }
        let path = self.path_of(&meta.name);
        let trash = self.dir.join(format!(".{}.deleting", meta.name));
        if let Err(e) = std::fs::rename(&path, &trash) {
            if let Some(record) = &record {
                let _ = std::fs::remove_file(record);
            }
            return Err(NamedSnapshotError::io(&path, "delete")(e));
        }
        sync_dir(&self.dir)?;
        std::fs::remove_dir_all(&trash).map_err(NamedSnapshotError::io(&trash, "remove"))?;
        Ok(())
    }

    /// Deleted snapshots whose layers may still be on disk, with their record files.
    pub fn retired(&self) -> Result<Vec<(PathBuf, SnapshotMeta)>, NamedSnapshotError> {
        let dir = self.dir.join(RETIRED_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NamedSnapshotError::io(&dir, "list")(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(NamedSnapshotError::io(&dir, "list"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let meta = SnapshotMeta::read(&path)?;
                out.push((path, meta));
            }
        }
        Ok(out)
    }
}
