use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/vm/save`: write the VM's state and memory to `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveParams {
    /// Directory to write `state.oxvm` and `memory.raw` into (created if missing; must
    /// not already hold a saved VM). Absolute: the VM process's working directory is
    /// not the client's.
    pub dir: PathBuf,
    /// Stop the VM once saved (OpenNebula's `save`: suspend/stop); otherwise it goes on
    /// in the state it was in.
    #[serde(default)]
    pub stop: bool,
}

/// How a restore brings the saved memory back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryMode {
    /// Map `memory.raw` privately: pages load on first touch (fast start).
    #[default]
    Lazy,
    /// Read it all into fresh memory before the guest runs (the file can go at once).
    Copy,
}

/// Body of `POST /v1/vm/restore` (an `oxvm serve` process with no VM yet), and what
/// `oxvm restore` takes on its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// A directory written by a save.
    pub dir: PathBuf,
    #[serde(default)]
    pub memory: MemoryMode,
    /// Disk paths by disk id, replacing the saved ones (the files moved: OpenNebula's
    /// cold migration).
    #[serde(default)]
    pub disks: BTreeMap<String, PathBuf>,
    /// Tap names by NIC id, replacing the saved ones.
    #[serde(default)]
    pub taps: BTreeMap<String, String>,
    /// Leave the VM paused after the restore instead of resuming it.
    #[serde(default)]
    pub paused: bool,
}
