//! O_DIRECT (cache=none) I/O: the kernel wants buffer addresses, file offsets and lengths
//! aligned to the device's logical block size. Guest requests are only 512-byte aligned
//! and guest buffers not at all, so every request goes through an aligned bounce buffer,
//! with read-modify-write of partial blocks. 4096 covers 512- and 4K-sector devices.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Alignment of buffers, offsets and lengths.
pub(super) const ALIGN: usize = 4096;

/// Bytes moved per system call at most.
const CHUNK: usize = 1 << 20;

/// A heap buffer whose usable part starts on an `ALIGN` boundary. Safe code only: the
/// vector is over-allocated and the aligned window picked from its address.
pub(super) struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub(super) fn new() -> Self {
        let storage = vec![0u8; CHUNK + ALIGN];
        let addr = storage.as_ptr() as usize;
        let start = (ALIGN - addr % ALIGN) % ALIGN;
        AlignedBuf { storage, start }
    }

    /// The first `len` (at most `CHUNK`, a multiple of `ALIGN`) aligned bytes.
    fn window(&mut self, len: usize) -> &mut [u8] {
        debug_assert!(len <= CHUNK && len % ALIGN == 0);
        &mut self.storage[self.start..self.start + len]
    }
}

fn align_down(x: u64) -> u64 {
    x & !(ALIGN as u64 - 1)
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Read `buf.len()` aligned bytes at aligned `offset`; past the end of the file the rest
/// reads as zeroes.
pub(super) fn read_aligned(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                // A read ending inside a block hit the end of the file; reading on from
                // an unaligned offset would fail with EINVAL.
                if done % ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Read `out.len()` bytes at `offset` through `bounce`.
pub(super) fn read(
    file: &File,
    bounce: &mut AlignedBuf,
    offset: u64,
    out: &mut [u8],
) -> io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        let pos = offset + done as u64;
        let start = align_down(pos);
        let head = (pos - start) as usize;
        let n = (out.len() - done).min(CHUNK - head);
        let window = bounce.window(align_up(head + n));
        read_aligned(file, window, start)?;
        out[done..done + n].copy_from_slice(&window[head..head + n]);
        done += n;
    }
    Ok(())
}

/// Write `data` at `offset` through `bounce`, reading back the partial blocks at either
/// end first. Returns the end of the last aligned block written, which can lie past the
/// end of a file whose size is not a multiple of `ALIGN`.
pub(super) fn write(
    file: &File,
    bounce: &mut AlignedBuf,
    offset: u64,
    data: &[u8],
) -> io::Result<u64> {
    let mut done = 0;
    let mut end = offset;
    while done < data.len() {
        let pos = offset + done as u64;
        let start = align_down(pos);
        let head = (pos - start) as usize;
        let n = (data.len() - done).min(CHUNK - head);
        let len = align_up(head + n);
        let window = bounce.window(len);
        if head != 0 {
            read_aligned(file, &mut window[..ALIGN], start)?;
        }
        if (head + n) % ALIGN != 0 && !(head != 0 && len == ALIGN) {
            let last = len - ALIGN;
            read_aligned(file, &mut window[last..], start + last as u64)?;
        }
        window[head..head + n].copy_from_slice(&data[done..done + n]);
        file.write_all_at(window, start)?;
        done += n;
        end = start + len as u64;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned() {
        for _ in 0..8 {
            let mut b = AlignedBuf::new();
            let w = b.window(ALIGN);
            assert_eq!(w.as_ptr() as usize % ALIGN, 0);
        }
    }

    #[test]
    fn helpers_round() {
        assert_eq!(align_down(4097), 4096);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(8192), 8192);
    }
}
