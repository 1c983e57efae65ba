//! Raw disks: a regular file or a host block device holding the guest's disk byte for
//! byte.
//!
//! Cache modes (QEMU's meanings): writeback uses the host page cache and makes data
//! durable at `flush` (fdatasync); writethrough opens with O_DSYNC so each write is
//! durable when it returns; none opens with O_DIRECT (through an aligned bounce buffer,
//! see `direct.rs`) and still fdatasyncs at `flush` for the device's own cache and the
//! file's metadata.
//!
//! With io=native (cache=none only) the device may also submit aligned reads and writes
//! straight to the O_DIRECT file with Linux AIO ([`DiskBackend::native_io`]); flushes,
//! discards, write-zeroes and unaligned requests still come through here.

mod blkdev;
mod direct;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvm_api::CacheMode;
use vmm_sys_util::fallocate::{fallocate, FallocateMode};

use super::aio::NativeIo;
use super::backend::{read_only_error, DiskBackend};
use super::open::{OpenError, QCOW2_MAGIC};
use super::options::DiskOptions;
use super::SECTOR_SIZE;
use direct::AlignedBuf;

/// Largest zero buffer the write-zeroes fallback writes at once.
const ZERO_CHUNK: usize = 1 << 20;

pub struct RawDisk {
    /// Shared with a device's AIO context under io=native.
    file: Arc<File>,
    path: PathBuf,
    block_device: bool,
    size: u64,
    opts: DiskOptions,
    /// Bounce buffer for O_DIRECT; `Some` exactly when cache=none.
    direct: Option<AlignedBuf>,
    /// Refuse writes that would put a qcow2 header at offset 0 (see
    /// [`RawDisk::guard_format_probe`]).
    guard_probe: bool,
    discard_granularity: u64,
    /// io=native was asked for (see [`RawDisk::with_native_io`]).
    native: bool,
}

impl std::fmt::Debug for RawDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDisk")
            .field("path", &self.path)
            .field("block_device", &self.block_device)
            .field("size", &self.size)
            .field("opts", &self.opts)
            .field("native", &self.native)
            .finish()
    }
}

impl RawDisk {
    /// Open the file or block device at `path`.
    pub fn open(path: &Path, opts: DiskOptions) -> Result<Self, OpenError> {
        let direct = opts.cache == CacheMode::None;
        let mut flags = 0;
        if direct {
            flags |= libc::O_DIRECT;
        }
        if opts.cache == CacheMode::Writethrough {
            flags |= libc::O_DSYNC;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.readonly)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| {
                if direct && e.raw_os_error() == Some(libc::EINVAL) {
                    OpenError::direct_io(path, e)
                } else {
                    OpenError::Open(e)
                }
            })?;
        let meta = file.metadata().map_err(OpenError::io("cannot stat"))?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.file_type().is_file() {
            return Err(OpenError::NotADisk);
        }
        let size = if block_device {
            blkdev::size(&file).map_err(OpenError::io("cannot read the block device's size"))?
        } else {
            meta.len()
        };
        let discard_granularity = meta
            .blksize()
            .clamp(SECTOR_SIZE, 1 << 20)
            .next_power_of_two();
        let mut disk = RawDisk {
            file: Arc::new(file),
            path: path.to_path_buf(),
            block_device,
            size,
            opts,
            direct: direct.then(AlignedBuf::new),
            guard_probe: false,
            discard_granularity,
            native: false,
        };
        if direct {
            disk.probe_direct()?;
        }
        Ok(disk)
    }

    /// Refuse guest writes that would start the disk with the qcow2 magic. Used when the
    /// format was detected rather than configured: otherwise a guest could turn its raw
    /// disk into a qcow2 image naming any host file as backing file, and the next start
    /// would open it (QEMU guards probed raw images the same way).
    pub fn guard_format_probe(mut self) -> Self {
        self.guard_probe = true;
        self
    }

    /// Offer the file for Linux AIO (io=native). Takes effect with cache=none only:
    /// AIO on a file without O_DIRECT blocks in `io_submit` (QEMU refuses the
    /// combination); [`RawDisk::native_capable`] says whether it applies.
    pub fn with_native_io(mut self) -> Self {
        self.native = true;
        self
    }

    /// Whether this disk can be served by Linux AIO: opened with O_DIRECT.
    pub fn native_capable(&self) -> bool {
        self.direct.is_some()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Some filesystems accept O_DIRECT at open and refuse the I/O itself: try one
    /// aligned read so such a disk fails at start, with its name, not at the guest's
    /// first request.
    fn probe_direct(&mut self) -> Result<(), OpenError> {
        let bounce = self
            .direct
            .as_mut()
            .expect("direct I/O without a bounce buffer");
        let mut first = [0u8; SECTOR_SIZE as usize];
        direct::read(&self.file, bounce, 0, &mut first).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                OpenError::direct_io(&self.path, e)
            } else {
                OpenError::io("cannot read")(e)
            }
        })
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.opts.readonly {
            Err(read_only_error())
        } else {
            Ok(())
        }
    }

    /// With O_DSYNC only writes are durable on return; fallocate needs an explicit sync.
    fn sync_if_writethrough(&self) -> io::Result<()> {
        if self.opts.cache == CacheMode::Writethrough {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn fallocate(&self, mode: FallocateMode, offset: u64, len: u64) -> io::Result<()> {
        fallocate(&self.file, mode, true, offset, len)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    /// Free the range (it then reads as zeroes): punch a hole in a file; on a block
    /// device, fallocate(PUNCH_HOLE) asks for zeroing with unmap (no slow fallback).
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(FallocateMode::PunchHole, offset, len)
    }

    /// Fallback for filesystems and devices without ZERO_RANGE: write zeroes.
    fn write_zero_data(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(offset + done, &zeroes[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Errors meaning "this operation is not supported here" rather than a failure.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

/// Read the whole of `buf` at `offset`; past the end of the file reads zeroes.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

impl DiskBackend for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &mut self.direct {
            Some(bounce) => direct::read(&self.file, bounce, offset, buf),
            None => read_full(&self.file, buf, offset),
        }
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        if self.guard_probe && offset == 0 && buf.starts_with(&QCOW2_MAGIC) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "refusing to write a qcow2 header into a raw disk whose format was detected \
                 (configure format=raw to allow it)",
            ));
        }
        match &mut self.direct {
            Some(bounce) => {
                let end = direct::write(&self.file, bounce, offset, buf)?;
                // The last aligned block of a file whose size is not a multiple of 4096
                // was written whole: cut the file back to its size.
                if !self.block_device && end > self.size {
                    self.file.set_len(self.size)?;
                }
                Ok(())
            }
            None => self.file.write_all_at(buf, offset),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.opts.readonly {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if !self.opts.unmap() || len == 0 {
            return Ok(());
        }
        let res = if self.block_device {
            blkdev::discard(&self.file, offset, len)
        } else {
            self.punch_hole(offset, len)
        };
        match res {
            Ok(()) => self.sync_if_writethrough(),
            // Discard is a hint: a filesystem or device without it just keeps the data.
            Err(e) if unsupported(&e) => {
                tracing::debug!("{}: discard not supported: {e}", self.path.display());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.check_writable()?;
        if len == 0 {
            return Ok(());
        }
        if unmap && self.opts.unmap() {
            match self.punch_hole(offset, len) {
                Ok(()) => return self.sync_if_writethrough(),
                Err(e) if unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        match self.fallocate(FallocateMode::ZeroRange, offset, len) {
            Ok(()) => self.sync_if_writethrough(),
            Err(e) if unsupported(&e) => self.write_zero_data(offset, len),
            Err(e) => Err(e),
        }
    }

    fn has_volatile_cache(&self) -> bool {
        self.opts.cache != CacheMode::Writethrough
    }

    fn is_read_only(&self) -> bool {
        self.opts.readonly
    }

    fn discard_enabled(&self) -> bool {
        self.opts.unmap()
    }

    fn discard_granularity(&self) -> u64 {
        self.discard_granularity
    }

    fn native_io(&self) -> Option<NativeIo> {
        (self.native && self.native_capable()).then(|| NativeIo {
            file: self.file.clone(),
            guard_offset_zero: self.guard_probe,
        })
    }
}
