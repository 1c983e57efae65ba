//! `snapshot.json`: what a named snapshot is, next to its `state.oxvm` and
//! `memory.raw`. Small and readable, so listing never parses a VM state.

use std::path::Path;

use oxvm_api::control::VmState;
use serde::{Deserialize, Serialize};

use super::error::NamedSnapshotError;
use crate::snapshot::{replace_file, SnapshotError};

/// The metadata file in a snapshot's directory; written last, so a directory without
/// it is an unfinished snapshot.
pub const META_FILE: &str = "snapshot.json";

/// One disk's layer. Unknown fields are ignored (not refused) so that an older oxvm
/// can still list and delete the snapshots of a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaDisk {
    /// The disk id in the VM config.
    pub id: String,
    /// The file name of the frozen image, in the directory of the disk's live image
    /// (so a VM whose directory moved, OpenNebula's cold migration, still finds it);
    /// `None` for a read-only disk.
    pub layer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_unix_ms: u64,
    /// `running` or `paused`: what a revert goes back to unless told otherwise.
    pub vm_state: VmState,
    pub oxvm_version: String,
    pub disks: Vec<MetaDisk>,
}

impl SnapshotMeta {
    pub fn read(path: &Path) -> Result<SnapshotMeta, NamedSnapshotError> {
        let text = std::fs::read(path).map_err(NamedSnapshotError::io(path, "read"))?;
        let bad = |e: String| NamedSnapshotError::Io {
            path: path.to_path_buf(),
            action: "parse",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        };
        let meta: SnapshotMeta = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        // Layer names are joined to disk directories and removed by the garbage
        // collection: only a plain file name may come from the file.
        for (id, layer) in meta.layers() {
            let plain =
                Path::new(layer).file_name().is_some_and(|n| n == layer) && !layer.starts_with('.');
            if !plain {
                return Err(bad(format!(
                    "disk {id:?}: layer {layer:?} is not a plain file name"
                )));
            }
        }
        Ok(meta)
    }

    /// [`SnapshotMeta::read`] for the snapshot in directory `name`: the file must name
    /// the same snapshot (a copied or renamed directory is refused rather than acted
    /// on under the wrong name).
    pub fn read_named(path: &Path, name: &str) -> Result<SnapshotMeta, NamedSnapshotError> {
        let meta = Self::read(path)?;
        if meta.name != name {
            return Err(NamedSnapshotError::Conflict(format!(
                "{}: describes snapshot {:?}, not {name:?} (was the directory renamed?)",
                path.display(),
                meta.name
            )));
        }
        Ok(meta)
    }

    /// Write durably (temporary file, fsync, rename, fsync the directory).
    pub fn write(&self, path: &Path) -> Result<(), NamedSnapshotError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| NamedSnapshotError::Io {
            path: path.to_path_buf(),
            action: "encode",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        replace_file(path, |mut f, tmp| {
            std::io::Write::write_all(&mut f, &json).map_err(SnapshotError::io(tmp, "write"))
        })?;
        Ok(())
    }

    /// Layers by disk id.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.disks
            .iter()
            .filter_map(|d| Some((d.id.as_str(), d.layer.as_deref()?)))
    }
}
