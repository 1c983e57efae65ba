//! Reading a VM file in either format: JSON (`VmConfig` itself) or an OpenNebula
//! template, told apart by the content so the file name does not matter.

use std::path::{Path, PathBuf};

use super::{convert_template, TemplateError, TemplateExtras};
use crate::{ConfigError, VmConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmFileFormat {
    Json,
    OpenNebula,
}

/// JSON when the first non-blank character is `{` (a VM file is one object), else an
/// OpenNebula template, which starts with an attribute name or a `#` comment. Neither
/// can start like the other, so no extension or flag is needed.
pub fn detect_format(text: &str) -> VmFileFormat {
    if text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
    {
        VmFileFormat::Json
    } else {
        VmFileFormat::OpenNebula
    }
}

/// How relative paths in the returned config are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    /// Resolved against the VM file's folder: ready to run.
    Resolved,
    /// As written in the file: for printing the config as another VM file that will sit
    /// in the same folder (`oxvm config convert`).
    AsWritten,
}

/// A loaded VM file.
#[derive(Debug, Clone, PartialEq)]
pub struct VmFile {
    pub format: VmFileFormat,
    /// Validated.
    pub config: VmConfig,
    /// Template values `VmConfig` has no field for yet (empty for JSON).
    pub extras: TemplateExtras,
    /// One line each, `line N: ATTRIBUTE: what happened` (empty for JSON).
    pub warnings: Vec<String>,
}

impl VmFile {
    /// The config as a pretty-printed JSON VM file (what `oxvm config convert` prints).
    /// Fails only for a path that is not UTF-8, which a file read as text cannot hold.
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&self.config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmFileError {
    /// Reading the file, or a JSON VM file's own errors.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("VM file {}: {source}", .path.display())]
    Template {
        path: PathBuf,
        source: TemplateError,
    },
}

/// Read, parse and validate a VM file of either format. Relative paths resolve against
/// the file's folder. The warnings are for the user (`oxvm run` prints them).
pub fn load_vm_file(path: &Path) -> Result<(VmConfig, Vec<String>), VmFileError> {
    let f = read_vm_file(path, Paths::Resolved)?;
    Ok((f.config, f.warnings))
}

/// [`load_vm_file`] with the format, the template extras, and a choice of path form.
pub fn read_vm_file(path: &Path, paths: Paths) -> Result<VmFile, VmFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // An empty base leaves relative paths untouched (`"".join(p) == p`).
    let base = match paths {
        Paths::Resolved => path.parent().unwrap_or_else(|| Path::new(".")),
        Paths::AsWritten => Path::new(""),
    };
    match detect_format(&text) {
        VmFileFormat::Json => {
            // As `VmConfig::from_file`: syntax errors name this file.
            let config = VmConfig::from_json(&text, base).map_err(|e| match e {
                ConfigError::Parse { source, .. } => ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                },
                other => other,
            })?;
            Ok(VmFile {
                format: VmFileFormat::Json,
                config,
                extras: TemplateExtras::default(),
                warnings: Vec::new(),
            })
        }
        VmFileFormat::OpenNebula => {
            let c = convert_template(&text, base).map_err(|source| VmFileError::Template {
                path: path.to_path_buf(),
                source,
            })?;
            let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
            Ok(VmFile {
                format: VmFileFormat::OpenNebula,
                config: c.config,
                extras: c.extras,
                warnings,
            })
        }
    }
}
