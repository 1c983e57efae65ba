//! Named snapshots on the wire: what `POST /v1/vm/snapshots` takes, what a snapshot
//! looks like in a listing, and the rule for snapshot names.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::VmState;

/// Longest snapshot name accepted.
pub const MAX_SNAPSHOT_NAME_LEN: usize = 64;

/// Body of `POST /v1/vm/snapshots`: take a snapshot of the running (or paused) VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// The snapshot's name; see [`check_snapshot_name`].
    pub name: String,
    /// Free text kept with the snapshot (libvirt's `--description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Body of `POST /v1/vm/snapshots/{name}/revert` (may be empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevertParams {
    /// Leave the VM paused (`true`) or running (`false`) after the revert; without it,
    /// the VM ends up as it was when the snapshot was taken (libvirt's
    /// `snapshot-revert --paused|--running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// One disk's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDisk {
    /// The disk id in the VM config.
    pub id: String,
    /// The image file that holds the disk as it was when the snapshot was taken (it
    /// is never written again); `null` for a read-only disk, which is not layered.
    pub layer: Option<PathBuf>,
}

/// A named snapshot, as listed and as returned by create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was taken, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The VM's state when it was taken (`running` or `paused`): what a revert
    /// returns to unless told otherwise.
    pub vm_state: VmState,
    /// The directory holding its VM state and memory.
    pub dir: PathBuf,
    pub disks: Vec<SnapshotDisk>,
}

/// `GET /v1/vm/snapshots`: oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
}

/// A snapshot name is 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not starting with
/// a dot or a dash: it becomes part of file names (the snapshot's directory and each
/// disk's layer) and of command lines.
pub fn check_snapshot_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SNAPSHOT_NAME_LEN {
        return Err(format!(
            "name: must be 1 to {MAX_SNAPSHOT_NAME_LEN} characters, got {}",
            name.len()
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!("name: {name:?} must not start with '.' or '-'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name: {name:?} contains {c:?}; use only A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["s1", "snap-3", "before_upgrade.2026-11-22", "A"] {
            assert_eq!(check_snapshot_name(ok), Ok(()), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            ".hidden",
            "-opt",
            "a/b",
            "..",
            "a b",
            "ü",
            long.as_str(),
        ] {
            let e = check_snapshot_name(bad).unwrap_err();
            assert!(e.starts_with("name:"), "{bad}: {e}");
        }
    }

    #[test]
    fn revert_params_default_to_the_snapshot_state() {
        let p: RevertParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p.paused, None);
        assert!(serde_json::from_str::<RevertParams>(r#"{"pause":true}"#).is_err());
    }
}
