use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where COM1's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub mode: SerialMode,
    /// Output file for `mode: file` (created or appended to).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            mode: SerialMode::Stdout,
            path: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    Stdout,
    File,
    Off,
}
