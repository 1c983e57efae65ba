//! Disk images and block devices behind virtio-blk and virtio-scsi: one backend trait,
//! implemented for raw files/block devices and qcow2 images.

mod backend;

pub use backend::DiskBackend;

/// Size of a logical sector as both virtio-blk and SCSI count them here.
pub const SECTOR_SIZE: u64 = 512;
