//! Replacing a file so that a crash never leaves a half-written file under its name:
//! write `NAME.tmp`, fsync it, rename it over `NAME`, fsync the directory.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::SnapshotError;

/// The temporary name `path` is written under: `path` with `.tmp` appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `path` durably: `fill` gets the new, empty temporary file (and its path, for
/// messages); once it succeeds the file is fsynced, renamed to `path` and the directory
/// fsynced. On any error the temporary file is removed and `path` is untouched.
pub fn replace_file<R>(
    path: &Path,
    fill: impl FnOnce(&File, &Path) -> Result<R, SnapshotError>,
) -> Result<R, SnapshotError> {
    let tmp = tmp_path(path);
    let result = write_then_rename(path, &tmp, fill);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename<R>(
    path: &Path,
    tmp: &Path,
    fill: impl FnOnce(&File, &Path) -> Result<R, SnapshotError>,
) -> Result<R, SnapshotError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(SnapshotError::io(tmp, "create"))?;
    let out = fill(&file, tmp)?;
    file.sync_all().map_err(SnapshotError::io(tmp, "fsync"))?;
    drop(file);
    std::fs::rename(tmp, path).map_err(SnapshotError::io(path, "rename the .tmp file to"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)?;
    Ok(out)
}

/// fsync a directory, so the renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SnapshotError::io(dir, "fsync the directory"))
}
