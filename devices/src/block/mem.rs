//! A disk held in host memory: for tests of the devices above the block layer (and
//! scratch disks), with the contents shared so a test can look at them.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::backend::{read_only_error, DiskBackend};

#[derive(Debug, Clone)]
pub struct MemDisk {
    data: Arc<Mutex<Vec<u8>>>,
    read_only: bool,
    flushes: Arc<Mutex<u64>>,
}

impl MemDisk {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self::from_bytes(vec![0; size])
    }

    pub fn from_bytes(data: Vec<u8>) -> Self {
        MemDisk {
            data: Arc::new(Mutex::new(data)),
            read_only: false,
            flushes: Arc::default(),
        }
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The contents (shared with every clone).
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// How many times `flush` ran.
    pub fn flushes(&self) -> u64 {
        *self.flushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The byte range `offset..offset + len`, if it lies inside the disk.
    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let size = self.lock().len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{len} bytes at {offset} are beyond the disk's {size} bytes"),
            )),
        }
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(read_only_error())
        } else {
            Ok(())
        }
    }
}

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.lock()[r]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.writable()?;
        let r = self.range(offset, buf.len() as u64)?;
        self.lock()[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        *self.flushes.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.writable()?;
        let r = self.range(offset, len)?;
        self.lock()[r].fill(0);
        Ok(())
    }

    fn has_volatile_cache(&self) -> bool {
        true
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn discard_enabled(&self) -> bool {
        !self.read_only
    }
}
