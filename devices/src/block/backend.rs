use std::io;

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
}
