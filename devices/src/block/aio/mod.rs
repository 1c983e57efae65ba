//! `io: native`: Linux AIO (`io_submit`) on raw images and block devices opened with
//! O_DIRECT, so that a disk's worker keeps many guest requests in flight instead of one.
//!
//! - `sys`: the system calls and the kernel's structures (all the `unsafe`);
//! - `context`: a context bound to one file and one guest memory, with the in-flight
//!   bookkeeping and the argument for why the kernel never touches freed memory.
//!
//! Only what O_DIRECT takes as is goes through AIO: offsets, lengths and host buffer
//! addresses aligned to [`ALIGN`]. Anything else (and everything that is not a read or a
//! write) is served synchronously by the device, as with `io: threads`.

mod context;
mod sys;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::sync::Arc;

pub use context::{AioContext, Completion, Op, Refusal, Refused};
#[cfg(test)]
pub(crate) use tests::direct_io_dir;

/// Alignment AIO requests need: the same conservative 4096 that the synchronous O_DIRECT
/// path uses (covers 512-byte and 4K-sector devices without probing either).
pub const ALIGN: u64 = 4096;

/// Largest request submitted as one AIO: the kernel moves at most ~2 GiB per call
/// (`MAX_RW_COUNT`) and would complete larger ones short.
pub const MAX_BYTES: u64 = 1 << 30;

/// Most memory pieces per request (the kernel's `UIO_MAXIOV`).
pub const MAX_SEGMENTS: usize = 1024;

/// What a backend hands a device for `io: native`: its O_DIRECT file.
#[derive(Debug, Clone)]
pub struct NativeIo {
    pub file: Arc<File>,
    /// Writes at offset 0 must go through the backend (which refuses a qcow2 header on
    /// a probed raw image, see `RawDisk::guard_format_probe`), not straight to the file.
    pub guard_offset_zero: bool,
}
