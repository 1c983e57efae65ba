//! Disk images and block devices behind virtio-blk and virtio-scsi: one backend trait,
//! implemented for raw files/block devices and qcow2 images, and Linux AIO for
//! `io: native` on raw ones.

pub mod aio;
mod backend;
mod mem;
mod open;
mod options;
mod qcow2;
mod raw;
pub mod throttle;

pub use aio::NativeIo;
pub use backend::DiskBackend;
pub use backend::IoDirection;
pub use mem::MemDisk;
pub use open::{detect_format, open_disk, DiskError, OpenError, QCOW2_MAGIC};
pub use options::DiskOptions;
pub use qcow2::{read_qcow2_header, Qcow2Disk, Qcow2Header};
pub use raw::RawDisk;
pub use throttle::{Throttle, ThrottleError, Throttled, WaitCanceller};

/// Size of a logical sector as both virtio-blk and SCSI count them here.
pub const SECTOR_SIZE: u64 = 512;
