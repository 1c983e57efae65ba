//! How a disk image is opened: the parts of a disk's configuration that the backends
//! (raw, qcow2) act on themselves.

use oxvm_api::{CacheMode, DiscardMode, DiskConfig};

/// Backend-level options of one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskOptions {
    /// Open read-only; every write, discard and write-zeroes fails.
    pub readonly: bool,
    /// Host page cache use (QEMU's meanings: none = O_DIRECT, writethrough = every write is
    /// durable before it completes).
    pub cache: CacheMode,
    /// Whether discards free space (unmap) or are accepted and ignored.
    pub discard: DiscardMode,
}

impl DiskOptions {
    /// Whether discard requests should deallocate.
    pub fn unmap(&self) -> bool {
        self.discard == DiscardMode::Unmap && !self.readonly
    }
}

impl From<&DiskConfig> for DiskOptions {
    fn from(cfg: &DiskConfig) -> Self {
        DiskOptions {
            readonly: cfg.readonly,
            cache: cfg.cache,
            discard: cfg.discard,
        }
    }
}
