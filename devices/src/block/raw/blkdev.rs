//! The two block-device ioctls raw disks need: the size and discard.

use std::fs::File;
use std::io;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

// From linux/fs.h: BLKGETSIZE64 = _IOR(0x12, 114, size_t), BLKDISCARD = _IO(0x12, 119).
ioctl_ior_nr!(BLKGETSIZE64, 0x12, 114, u64);
ioctl_io_nr!(BLKDISCARD, 0x12, 119);

/// Size in bytes of the block device `file`.
pub(super) fn size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 (size_t on x86-64) through the pointer, which
    // points at `size`, a live and aligned u64; `file` stays open for the call.
    let ret = unsafe { ioctl_with_mut_ref(file, BLKGETSIZE64(), &mut size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Discard `len` bytes at `offset` of the block device `file` (contents afterwards are
/// what the device makes of it; virtio's DISCARD allows any).
pub(super) fn discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD reads two u64 (start, length) from the pointer, which points at
    // `range`, alive for the call; the kernel does not keep the pointer.
    let ret = unsafe { ioctl_with_ref(file, BLKDISCARD(), &range) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
