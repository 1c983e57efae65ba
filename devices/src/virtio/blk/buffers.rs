//! A request's data as the guest laid it out: a list of guest-memory pieces, read or
//! written as one byte stream. Requests may split their header, data and status over
//! descriptors in any way (virtio 1.2 §2.7.4 "message framing"), so the parser works on
//! such streams rather than on individual descriptors.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryError};

use crate::virtio::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BufferError {
    #[error("guest memory: {0}")]
    Memory(#[from] GuestMemoryError),
    #[error("{wanted} bytes at position {pos} are past the end of the {len}-byte buffer")]
    Short { pos: u64, wanted: usize, len: u64 },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct GuestBuffers {
    segs: Vec<(GuestAddress, u32)>,
    len: u64,
}

impl GuestBuffers {
    /// Append a piece; empty pieces are dropped.
    pub(crate) fn push(&mut self, addr: GuestAddress, len: u32) {
        if len > 0 {
            self.segs.push((addr, len));
            self.len += u64::from(len);
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in stream order (io=native submits them as they are).
    pub(crate) fn segments(&self) -> &[(GuestAddress, u32)] {
        &self.segs
    }

    /// Remove the first `n` bytes (all of them if there are fewer).
    pub(crate) fn skip_front(&mut self, n: u64) {
        let mut n = n.min(self.len);
        self.len -= n;
        let mut drop = 0;
        for seg in &mut self.segs {
            if n == 0 {
                break;
            }
            let len = u64::from(seg.1);
            if n >= len {
                n -= len;
                drop += 1;
            } else {
                // `n < len <= u32::MAX`, and a piece never wraps the address space (it
                // was checked against guest memory), so neither can overflow.
                seg.0 = GuestAddress(seg.0 .0.wrapping_add(n));
                seg.1 -= n as u32;
                n = 0;
            }
        }
        self.segs.drain(..drop);
    }

    /// Remove the last byte and return its address.
    pub(crate) fn pop_back_byte(&mut self) -> Option<GuestAddress> {
        let last = self.segs.last_mut()?;
        let addr = last.0.checked_add(u64::from(last.1) - 1)?;
        last.1 -= 1;
        if last.1 == 0 {
            self.segs.pop();
        }
        self.len -= 1;
        Some(addr)
    }

    /// Copy `out.len()` bytes starting at stream position `pos` out of guest memory.
    pub(crate) fn read(
        &self,
        mem: &GuestMemoryMmap,
        pos: u64,
        out: &mut [u8],
    ) -> Result<(), BufferError> {
        self.walk(pos, out.len(), |addr, range| {
            mem.read_slice(&mut out[range], addr)
        })
    }

    /// Copy `data` into guest memory starting at stream position `pos`.
    pub(crate) fn write(
        &self,
        mem: &GuestMemoryMmap,
        pos: u64,
        data: &[u8],
    ) -> Result<(), BufferError> {
        self.walk(pos, data.len(), |addr, range| {
            mem.write_slice(&data[range], addr)
        })
    }

    /// Zero the stream from position `pos` to its end.
    pub(crate) fn zero_from(&self, mem: &GuestMemoryMmap, pos: u64) -> Result<(), BufferError> {
        const ZEROES: [u8; 4096] = [0; 4096];
        let mut pos = pos;
        while pos < self.len {
            let n = (self.len - pos).min(ZEROES.len() as u64) as usize;
            self.write(mem, pos, &ZEROES[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Call `f(address, range of the caller's buffer)` for each piece covering
    /// `pos..pos + count` of the stream.
    fn walk(
        &self,
        pos: u64,
        count: usize,
        mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), GuestMemoryError>,
    ) -> Result<(), BufferError> {
        let short = BufferError::Short {
            pos,
            wanted: count,
            len: self.len,
        };
        match pos.checked_add(count as u64) {
            Some(end) if end <= self.len => {}
            _ => return Err(short),
        }
        let mut skip = pos;
        let mut done = 0usize;
        for &(addr, len) in &self.segs {
            if done == count {
                break;
            }
            let len = u64::from(len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(count - done);
            let at = addr
                .checked_add(skip)
                .ok_or(GuestMemoryError::InvalidGuestAddress(addr))?;
            f(at, done..done + n)?;
            done += n;
            skip = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn bufs(pieces: &[(u64, u32)]) -> GuestBuffers {
        let mut b = GuestBuffers::default();
        for &(a, l) in pieces {
            b.push(GuestAddress(a), l);
        }
        b
    }

    #[test]
    fn stream_spans_pieces() {
        let mem = mem();
        let b = bufs(&[(0x100, 3), (0x200, 0), (0x300, 5)]);
        assert_eq!(b.len(), 8);
        b.write(&mem, 0, b"abcdefgh").unwrap();
        let mut out = [0u8; 4];
        b.read(&mem, 2, &mut out).unwrap();
        assert_eq!(&out, b"cdef");
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x302)).unwrap(), b'f');
        assert!(b.read(&mem, 6, &mut out).is_err());
        assert!(b.read(&mem, u64::MAX, &mut out).is_err());
    }

    #[test]
    fn skip_and_pop() {
        let mut b = bufs(&[(0x100, 3), (0x300, 5)]);
        b.skip_front(4);
        assert_eq!(b.segments(), &[(GuestAddress(0x301), 4)]);
        assert_eq!(b.pop_back_byte(), Some(GuestAddress(0x304)));
        assert_eq!(b.len(), 3);
        b.skip_front(100);
        assert!(b.is_empty());
        assert_eq!(b.pop_back_byte(), None);
        let mut b = bufs(&[(0x100, 2), (0x300, 1)]);
        assert_eq!(b.pop_back_byte(), Some(GuestAddress(0x300)));
        assert_eq!(b.segments(), &[(GuestAddress(0x100), 2)]);
    }

    #[test]
    fn zero_from_a_position_to_the_end() {
        let mem = mem();
        let b = bufs(&[(0x100, 3), (0x2000, 5000)]);
        b.write(&mem, 0, &[0xff; 5003]).unwrap();
        b.zero_from(&mem, 2).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x101)).unwrap(), 0xff);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x102)).unwrap(), 0);
        let mut out = [0xaau8; 5000];
        mem.read_slice(&mut out, GuestAddress(0x2000)).unwrap();
        assert!(out.iter().all(|&x| x == 0));
    }
}
