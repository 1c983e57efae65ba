//! An in-memory [`DiskBackend`] that records what the device asked of it and can be
//! told to fail.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::block::{DiskBackend, IoDirection};

const BLOCK: u64 = 512;

/// What the test can inspect and control.
#[derive(Debug, Default)]
pub(crate) struct DiskState {
    /// Written blocks; missing ones read as zeroes (so the disk can be huge).
    pub blocks: HashMap<u64, Vec<u8>>,
    /// (offset, len) of every write_at call.
    pub writes: Vec<(u64, usize)>,
    pub discards: Vec<(u64, u64)>,
    pub write_zeroes: Vec<(u64, u64, bool)>,
    pub flushes: usize,
    /// Every throttling admission (direction, bytes): one per guest request.
    pub admitted: Vec<(IoDirection, u64)>,
    pub fail_read: bool,
    /// errno of write_at / write_zeroes failures.
    pub fail_write: Option<i32>,
    pub fail_flush: bool,
    pub fail_discard: bool,
}

pub(crate) struct MemDisk {
    size: u64,
    read_only: bool,
    volatile_cache: bool,
    state: Arc<Mutex<DiskState>>,
}

impl MemDisk {
    pub fn new(size: u64, read_only: bool, volatile_cache: bool) -> Self {
        Self {
            size,
            read_only,
            volatile_cache,
            state: Arc::default(),
        }
    }

    pub fn state(&self) -> Arc<Mutex<DiskState>> {
        self.state.clone()
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        assert_eq!(offset % BLOCK, 0, "unaligned offset {offset}");
        assert_eq!(len % BLOCK, 0, "unaligned length {len}");
        assert!(offset + len <= self.size, "{offset}+{len} past the end");
        Ok(())
    }
}

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn admit(&mut self, dir: IoDirection, bytes: u64) {
        self.state.lock().unwrap().admitted.push((dir, bytes));
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        let st = self.state.lock().unwrap();
        if st.fail_read {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for (i, chunk) in buf.chunks_mut(BLOCK as usize).enumerate() {
            match st.blocks.get(&(offset / BLOCK + i as u64)) {
                Some(b) => chunk.copy_from_slice(b),
                None => chunk.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        assert!(!self.read_only, "write to a read-only backend");
        let mut st = self.state.lock().unwrap();
        if let Some(errno) = st.fail_write {
            return Err(io::Error::from_raw_os_error(errno));
        }
        st.writes.push((offset, buf.len()));
        for (i, chunk) in buf.chunks(BLOCK as usize).enumerate() {
            st.blocks.insert(offset / BLOCK + i as u64, chunk.to_vec());
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.fail_flush {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        st.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let mut st = self.state.lock().unwrap();
        if st.fail_discard {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        st.discards.push((offset, len));
        for b in offset / BLOCK..(offset + len) / BLOCK {
            st.blocks.remove(&b);
        }
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.check(offset, len)?;
        let mut st = self.state.lock().unwrap();
        if let Some(errno) = st.fail_write {
            return Err(io::Error::from_raw_os_error(errno));
        }
        st.write_zeroes.push((offset, len, unmap));
        for b in offset / BLOCK..(offset + len) / BLOCK {
            st.blocks.remove(&b);
        }
        Ok(())
    }

    fn has_volatile_cache(&self) -> bool {
        self.volatile_cache
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }
}
