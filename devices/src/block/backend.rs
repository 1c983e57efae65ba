use std::io;
use std::time::Duration;

use super::aio::NativeIo;
use super::throttle::WaitCanceller;
use super::SECTOR_SIZE;

/// Direction of a guest request, as IO throttling counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDirection {
    Read,
    Write,
}

/// A disk as the devices see it: a byte-addressed, fixed-size store. Offsets and lengths
/// are already checked against `size()` by the caller, and are multiples of 512.
///
/// Durability contract: data written with `write_at` is on stable storage once `flush`
/// returns Ok; a device completes a guest FLUSH only after that.
pub trait DiskBackend: Send {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// Make every completed write durable.
    fn flush(&mut self) -> io::Result<()>;

    /// Deallocate a range when the backend can (reads then return zeroes); a backend
    /// that cannot just returns Ok (discard is a hint).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Make a range read as zeroes, deallocating it when `unmap` is allowed.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;

    /// Whether the host-side volatile write cache is visible to the guest (false for
    /// cache=writethrough, where every write is synced before it completes).
    fn has_volatile_cache(&self) -> bool;

    fn is_read_only(&self) -> bool;

    /// Devices call this once per guest read or write request, before its data moves,
    /// with the request's total size (0 for write-zeroes). A throttled disk blocks here
    /// until the request fits its limits: only this disk's worker waits. Counting per
    /// request (not per `read_at` call) keeps IOPS limits meaningful when a device
    /// moves a large request in several pieces.
    fn admit(&mut self, _dir: IoDirection, _bytes: u64) {}

    /// [`DiskBackend::admit`] for a worker that must not block (io=native, which keeps
    /// completing requests in flight meanwhile): Ok when the request may go now (it is
    /// then accounted), else how long to wait before asking again (nothing accounted).
    fn try_admit(&mut self, dir: IoDirection, bytes: u64) -> Result<(), Duration> {
        self.admit(dir, bytes);
        Ok(())
    }

    /// A handle that cuts short any wait in [`DiskBackend::admit`], so that stopping a
    /// device worker never waits for throttling. `None`: the backend never waits.
    fn wait_canceller(&self) -> Option<WaitCanceller> {
        None
    }

    /// io=native: the O_DIRECT file a device may submit aligned guest reads and writes
    /// to with Linux AIO instead of calling `read_at`/`write_at`. `None` (the default):
    /// the backend needs its own read/write path (qcow2, page-cache modes, io=threads).
    fn native_io(&self) -> Option<NativeIo> {
        None
    }

    /// Whether `discard` really deallocates (discard=unmap). Devices offer discard to
    /// the guest only then.
    fn discard_enabled(&self) -> bool {
        false
    }

    /// Granularity in bytes at which discards free space (a power of two, at least 512);
    /// devices advertise it as the discard alignment.
    fn discard_granularity(&self) -> u64 {
        SECTOR_SIZE
    }
}

/// Lets wrappers such as the throttle hold any backend, boxed or not.
impl<T: DiskBackend + ?Sized> DiskBackend for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        (**self).discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        (**self).write_zeroes(offset, len, unmap)
    }
    fn has_volatile_cache(&self) -> bool {
        (**self).has_volatile_cache()
    }
    fn is_read_only(&self) -> bool {
        (**self).is_read_only()
    }
    fn admit(&mut self, dir: IoDirection, bytes: u64) {
        (**self).admit(dir, bytes)
    }
    fn try_admit(&mut self, dir: IoDirection, bytes: u64) -> Result<(), Duration> {
        (**self).try_admit(dir, bytes)
    }
    fn wait_canceller(&self) -> Option<WaitCanceller> {
        (**self).wait_canceller()
    }
    fn native_io(&self) -> Option<NativeIo> {
        (**self).native_io()
    }
    fn discard_enabled(&self) -> bool {
        (**self).discard_enabled()
    }
    fn discard_granularity(&self) -> u64 {
        (**self).discard_granularity()
    }
}

/// The error a backend returns for a modification of a read-only disk.
pub(crate) fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "disk is read-only")
}
