//! Descriptor chains as the guest hands them to us, checked before any byte is touched.
//!
//! Everything in a chain is guest-controlled: addresses, lengths, flags, `next` links,
//! indirect tables. [`parse_chain`] turns a chain into guest-memory [`Segment`]s that are
//! known to lie inside guest memory, in the expected direction, within a length bound,
//! or fails the chain with a [`ChainError`]. Callers then return a failed chain to the
//! guest unused; nothing a guest writes into a chain can panic or stall a worker.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{DescriptorChain, QueueT};

use super::super::GuestMemoryMmap;

/// One guest-memory range of a chain, inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A checked chain: driver-readable segments, then device-writable ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ParsedChain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
    pub readable_len: usize,
    pub writable_len: usize,
    /// Descriptors the chain was made of (indirect ones included).
    pub descriptors: usize,
}

/// How much of each direction a request may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_readable: usize,
    pub max_writable: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    #[error("chain has no usable descriptor (bad head index, descriptor table or indirect table)")]
    Empty,
    #[error("chain is broken after {0} descriptor(s): bad next index, loop or bad indirect table")]
    Broken(usize),
    #[error("descriptor {index} ({addr:#x}, {len} bytes) is not inside guest memory")]
    OutsideMemory { index: usize, addr: u64, len: u32 },
    #[error("driver-readable descriptor {0} follows a device-writable one")]
    ReadableAfterWritable(usize),
    #[error("{what} part of the chain exceeds {max} bytes")]
    TooLong { what: &'static str, max: usize },
}

/// Check every descriptor of `chain` (popped from a queue on `mem`) and collect its
/// segments. Zero-length descriptors are skipped (they carry nothing).
pub(crate) fn parse_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    limits: Limits,
) -> Result<ParsedChain, ChainError> {
    let mut parsed = ParsedChain {
        head: chain.head_index(),
        ..Default::default()
    };
    // The iterator stops silently on a bad `next` index, a loop (its TTL runs out), a
    // nested or misaligned indirect table or an unreadable descriptor. A clean end is a
    // descriptor without NEXT; if the last one we saw still had NEXT, the chain broke.
    let mut last_has_next = false;
    for (index, desc) in chain.enumerate() {
        parsed.descriptors = index + 1;
        last_has_next = desc.has_next();
        let len = desc.len();
        if len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, desc.addr(), len as usize) {
            return Err(ChainError::OutsideMemory {
                index,
                addr: desc.addr().0,
                len,
            });
        }
        let seg = Segment {
            addr: desc.addr(),
            len,
        };
        if desc.is_write_only() {
            parsed.writable_len += len as usize;
            if parsed.writable_len > limits.max_writable {
                return Err(ChainError::TooLong {
                    what: "device-writable",
                    max: limits.max_writable,
                });
            }
            parsed.writable.push(seg);
        } else {
            if !parsed.writable.is_empty() {
                return Err(ChainError::ReadableAfterWritable(index));
            }
            parsed.readable_len += len as usize;
            if parsed.readable_len > limits.max_readable {
                return Err(ChainError::TooLong {
                    what: "driver-readable",
                    max: limits.max_readable,
                });
            }
            parsed.readable.push(seg);
        }
    }
    if parsed.descriptors == 0 {
        return Err(ChainError::Empty);
    }
    if last_has_next {
        return Err(ChainError::Broken(parsed.descriptors));
    }
    Ok(parsed)
}

/// How many entries of the descriptor table the chain with head `head` occupies: one for
/// an indirect chain, else its length. Lets the receive path know when the guest has no
/// descriptors left to offer.
pub(crate) fn table_entries(
    mem: &GuestMemoryMmap,
    queue: &virtio_queue::Queue,
    head: u16,
    descriptors: usize,
) -> usize {
    let addr = GuestAddress(queue.desc_table()).checked_add(u64::from(head) * 16);
    let head_desc = addr.and_then(|a| mem.read_obj::<RawDescriptor>(a).ok());
    match head_desc.map(SplitDescriptor::from) {
        Some(d) if d.refers_to_indirect_table() => 1,
        _ => descriptors.max(1),
    }
}

/// Copy the bytes of `segments` into `buf` (which must be exactly as long as they are).
pub(crate) fn gather(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    buf: &mut [u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut off = 0;
    for seg in segments {
        let end = off + seg.len as usize;
        mem.read_slice(&mut buf[off..end], seg.addr)?;
        off = end;
    }
    Ok(())
}

/// Copy `data` into `segments` in order; returns the bytes written (all of `data` or
/// the segments' total, whichever is smaller).
pub(crate) fn scatter(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    data: &[u8],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut off = 0;
    for seg in segments {
        if off == data.len() {
            break;
        }
        let n = (seg.len as usize).min(data.len() - off);
        mem.write_slice(&data[off..off + n], seg.addr)?;
        off += n;
    }
    Ok(off)
}
