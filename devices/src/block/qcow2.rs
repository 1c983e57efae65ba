//! qcow2 images (with backing chains) through imago's synchronous API.
//!
//! Durability: imago's `flush()` writes back its cached metadata (L2 tables, refcount
//! blocks) and calls `flush()` on the file, which for a `std::fs::File` does nothing;
//! only `sync()` calls fsync. So our `flush` does both, in that order: a guest FLUSH
//! completes after data and metadata are on stable storage.

mod gate;
mod header;
#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{
    FormatAccess, FormatCreateBuilder, FormatDriverBuilder, Storage, StorageCreateOptions,
    StorageOpenOptions,
};
use oxvm_api::{CacheMode, DiskFormat};

use super::backend::{read_only_error, DiskBackend};
use super::open::OpenError;
use super::options::DiskOptions;
use gate::RecordingGate;
pub use header::{read_qcow2_header, Qcow2Header};

/// Discard granularity when imago does not say (qcow2's default cluster size).
const DEFAULT_CLUSTER: u64 = 64 * 1024;

pub struct Qcow2Disk {
    image: FormatAccess<ImagoFile>,
    opts: DiskOptions,
    size: u64,
    cluster_size: u64,
}

impl std::fmt::Debug for Qcow2Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("image", &self.image.to_string())
            .field("opts", &self.opts)
            .field("size", &self.size)
            .finish()
    }
}

impl Qcow2Disk {
    /// Open the image at `path` and its backing chain (backing files are opened
    /// read-only, with the same cache mode).
    pub fn open(path: &Path, opts: DiskOptions) -> Result<Self, OpenError> {
        let direct = opts.cache == CacheMode::None;
        let storage_opts = StorageOpenOptions::new().direct(direct);
        let file = ImagoFile::open(storage_opts.clone().filename(path).write(!opts.readonly))
            .map_err(|e| {
                if direct && e.raw_os_error() == Some(libc::EINVAL) {
                    OpenError::direct_io(path, e)
                } else {
                    OpenError::Open(e)
                }
            })?;
        let gate = RecordingGate::default();
        let image = Qcow2::<ImagoFile>::builder(file)
            .write(!opts.readonly)
            .storage_open_options(storage_opts)
            .open(gate.clone())
            .map_err(|e| match gate.failure() {
                Some(f) if f.kind == io::ErrorKind::NotFound => OpenError::MissingBacking {
                    backing: f.path,
                    source: e,
                },
                Some(f) if direct && f.os_error == Some(libc::EINVAL) => {
                    OpenError::direct_io(&f.path, e)
                }
                Some(f) => OpenError::Backing {
                    backing: f.path,
                    source: e,
                },
                None => OpenError::Qcow2(e),
            })?;
        let image = FormatAccess::new(image);
        let cluster_size = image.inner().zero_granularity().unwrap_or(DEFAULT_CLUSTER);
        Ok(Qcow2Disk {
            size: image.size(),
            image,
            opts,
            cluster_size,
        })
    }

    /// Create (or overwrite) a qcow2 image of `size` bytes at `path`, optionally on top
    /// of `backing` (a file name as stored in the header: relative names are resolved
    /// against the new image's directory when it is opened), and fsync it.
    pub fn create(path: &Path, size: u64, backing: Option<(&str, DiskFormat)>) -> io::Result<()> {
        let file =
            ImagoFile::create_open(StorageCreateOptions::new().filename(path).overwrite(true))?;
        let mut builder = Qcow2::<ImagoFile>::create_builder(file).size(size);
        if let Some((name, format)) = backing {
            let format = match format {
                DiskFormat::Raw => "raw",
                DiskFormat::Qcow2 => "qcow2",
            };
            builder = builder.backing(name.to_string(), format.to_string());
        }
        builder.create()?;
        // imago's create ends with a flush, which is no fsync for a plain file: a new
        // overlay put in place of a live image must be on stable storage first.
        std::fs::File::open(path)?.sync_all()
    }

    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.opts.readonly {
            Err(read_only_error())
        } else {
            Ok(())
        }
    }

    /// Write back imago's metadata cache, then fsync the image file.
    fn flush_and_sync(&self) -> io::Result<()> {
        self.image.flush()?;
        self.image.sync()
    }

    fn after_modification(&self) -> io::Result<()> {
        if self.opts.cache == CacheMode::Writethrough {
            self.flush_and_sync()?;
        }
        Ok(())
    }
}

impl DiskBackend for Qcow2Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.image.read(buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        self.image.write(buf, offset)?;
        self.after_modification()
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.opts.readonly {
            return Ok(());
        }
        self.flush_and_sync()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if !self.opts.unmap() || len == 0 {
            return Ok(());
        }
        // Discarded clusters read as zeroes afterwards, never as the backing file's data.
        self.image.discard_to_zero(offset, len)?;
        self.after_modification()
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.check_writable()?;
        if len == 0 {
            return Ok(());
        }
        if unmap && self.opts.unmap() {
            self.image.discard_to_zero(offset, len)?;
        } else {
            self.image.write_zeroes(offset, len)?;
        }
        self.after_modification()
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
        self.cluster_size
            .max(super::SECTOR_SIZE)
            .next_power_of_two()
    }
}
