use std::path::{Path, PathBuf};

use super::{ConfigError, VmConfig};

impl VmConfig {
    /// Read, parse and validate a VM file. Relative paths in it are resolved against the
    /// file's own folder, so a VM file and its kernel can move together.
    pub fn from_file(path: &Path) -> Result<VmConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        VmConfig::from_json(&text, base).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parse and validate JSON text; relative paths resolve against `base`.
    pub fn from_json(text: &str, base: &Path) -> Result<VmConfig, ConfigError> {
        let mut cfg: VmConfig =
            serde_json::from_str(text).map_err(|source| ConfigError::Parse {
                path: PathBuf::from("<json>"),
                source,
            })?;
        cfg.resolve_paths(base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolve relative paths against `base` (the VM file's folder). Also used for
    /// OpenNebula templates (`crate::template`), so both formats resolve alike.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(k) = self.boot.kernel.as_mut() {
            fix(k);
        }
        if let Some(i) = self.boot.initrd.as_mut() {
            fix(i);
        }
        if let Some(r) = self.boot.raw.as_mut() {
            fix(&mut r.path);
        }
        if let Some(p) = self.serial.path.as_mut() {
            fix(p);
        }
        for d in &mut self.disks {
            fix(&mut d.path);
        }
        if let Some(p) = self.api_socket.as_mut() {
            fix(p);
        }
        if let Some(p) = self.snapshots_dir.as_mut() {
            fix(p);
        }
    }
}
