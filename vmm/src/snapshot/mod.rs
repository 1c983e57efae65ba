//! Saved VMs: the versioned, checksummed state container (`format`) and the guest
//! memory file (`memory_file`). Snapshot, restore and migration all use them; the
//! layout, the version rule and what is checked before anything starts are in
//! docs/snapshot-format.md.
//!
//! A saved VM is a directory: `state.oxvm` (a state file of kind `snapshot` whose
//! payload is the whole VM state) and `memory.raw` (the memory file).

// Parts of this API have no caller until the save/restore commands are wired (issue 5).

mod checksum;
mod durable;
mod error;
mod format;
mod json_path;
mod memory_file;
#[cfg(test)]
mod restore_tests;
#[cfg(test)]
pub(crate) mod test_dir;

pub use checksum::crc32;
pub use durable::{replace_file, sync_dir};
pub use error::SnapshotError;
pub use format::{
    decode, encode, read_state_file, write_state_file, Header, Kind, FORMAT_VERSION, MAGIC,
    MIN_READABLE_VERSION, OXVM_VERSION,
};
pub use memory_file::{
    check_memory_file, copy_memory_file, fill_from_memory_file, map_memory_file, memory_file_len,
    save_memory, save_pages, MemoryStats, PAGE_SIZE,
};

/// The state file in a saved VM's directory.
pub const STATE_FILE: &str = "state.oxvm";
/// The memory file in a saved VM's directory.
pub const MEMORY_FILE: &str = "memory.raw";
