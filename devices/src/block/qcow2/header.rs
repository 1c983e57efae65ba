//! The few qcow2 header fields a backing chain is walked with, read without opening
//! the image through imago (which would open the whole chain): the virtual size and
//! the backing file name. Layout (all big-endian): magic at 0, version at 4,
//! backing_file_offset (u64) at 8, backing_file_size (u32) at 16, size (u64) at 24.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::block::QCOW2_MAGIC;

/// qcow2 limits backing file names to 1023 bytes (QEMU's limit, the spec's advice).
const MAX_BACKING_NAME: u32 = 1023;

/// What the header says about the image's place in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    /// Virtual disk size in bytes.
    pub size: u64,
    /// The backing file name as stored (relative names are relative to the image's
    /// directory), if any.
    pub backing: Option<String>,
}

impl Qcow2Header {
    /// The backing file's path: a relative name resolved against `image`'s directory.
    pub fn backing_path(&self, image: &Path) -> Option<PathBuf> {
        let name = Path::new(self.backing.as_deref()?);
        Some(match image.parent() {
            Some(dir) if name.is_relative() => dir.join(name),
            _ => name.to_path_buf(),
        })
    }
}

/// The header of the qcow2 image at `path`; `Ok(None)` when the file is not qcow2
/// (a raw image at the bottom of a chain).
pub fn read_qcow2_header(path: &Path) -> io::Result<Option<Qcow2Header>> {
    let file = File::open(path)?;
    let mut head = [0u8; 32];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if head[..4] != QCOW2_MAGIC {
        return Ok(None);
    }
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().unwrap_or_default());
    let offset = be64(8);
    let len = u32::from_be_bytes(head[16..20].try_into().unwrap_or_default());
    let size = be64(24);
    let backing = if offset == 0 || len == 0 {
        None
    } else if len > MAX_BACKING_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("backing file name of {len} bytes (at most {MAX_BACKING_NAME})"),
        ));
    } else {
        let mut name = vec![0u8; len as usize];
        file.read_exact_at(&mut name, offset)?;
        Some(String::from_utf8(name).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "backing file name is not UTF-8")
        })?)
    };
    Ok(Some(Qcow2Header { size, backing }))
}
