//! Why a state file or a memory file could not be written or read. Every message names
//! the file, so an operator knows which one of a saved VM's directory is at fault.

use std::path::PathBuf;

/// An error writing or reading a saved VM. Reading errors are found before anything of
/// the VM is built: a refused file starts nothing.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done, as a verb phrase: "create", "write", "fsync", …
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: not an oxvm state file (it starts with \"{}\", an oxvm state file starts with \"OXVMSNAP\")",
        path.display(),
        found.as_slice().escape_ascii()
    )]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error(
        "{}: truncated or corrupted: {got} bytes, at least {expected} needed",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    #[error(
        "{}: corrupted: {extra} bytes after the end of the state its header describes",
        path.display()
    )]
    TrailingBytes { path: PathBuf, extra: u64 },
    #[error(
        "{}: corrupted: checksum mismatch (stored CRC-32 {expected:#010x}, computed {got:#010x})",
        path.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: u32,
        got: u32,
    },
    #[error(
        "{}: state format version {found} (written by oxvm {writer}) is not supported: \
         this oxvm {ours} reads {}",
        path.display(),
        readable(*min, *max)
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        /// The version of the oxvm that wrote the file, as its header says ("unknown"
        /// when the header cannot tell).
        writer: String,
        ours: &'static str,
        min: u32,
        max: u32,
    },
    #[error("{}: inconsistent header: {what}", path.display())]
    Inconsistent { path: PathBuf, what: String },
    #[error("{}: cannot decode the {part} at `{field}`: {source}", path.display())]
    Decode {
        path: PathBuf,
        /// "header" or "payload".
        part: &'static str,
        /// Where in the JSON the error is, e.g. `vcpus[1].regs.rip` (`.` for the top level).
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: cannot encode the state as JSON: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: memory file is {got} bytes, the VM's memory layout needs exactly {expected} ({hint})",
        path.display()
    )]
    MemorySizeMismatch {
        path: PathBuf,
        expected: u64,
        got: u64,
        /// "truncated?" or "saved from a VM with more memory?".
        hint: &'static str,
    },
    #[error(
        "{}: guest-physical address {gpa:#x} is not guest RAM, cannot save that page",
        path.display()
    )]
    PageOutsideMemory { path: PathBuf, gpa: u64 },
    #[error("{}: cannot {action} guest memory: {reason}", path.display())]
    GuestMemory {
        path: PathBuf,
        action: &'static str,
        reason: String,
    },
}

fn readable(min: u32, max: u32) -> String {
    if min == max {
        format!("format version {max} only")
    } else {
        format!("format versions {min} to {max}")
    }
}

impl SnapshotError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> SnapshotError {
        let path = path.into();
        move |source| SnapshotError::Io {
            path,
            action,
            source,
        }
    }
}
