//! Turning a descriptor chain into a checked request (virtio 1.2 §5.2.6).
//!
//! A request is a stream of device-readable bytes (the 16-byte header `type, reserved,
//! sector`, then write data or discard/write-zeroes segments) followed by device-writable
//! bytes (read data or the ID string, then the status byte as the very last byte). Every
//! piece is checked to lie in guest memory and every sector range against the capacity
//! (with overflow checks) before anything touches the disk. A malformed request fails
//! with IOERR (UNSUPP for what the device does not do) written to its status byte; a
//! chain without a usable status byte cannot be answered and is only returned to the
//! driver.

use std::mem::{offset_of, size_of};

use virtio_bindings::virtio_blk::*;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::buffers::GuestBuffers;
use crate::block::SECTOR_SIZE;
use crate::virtio::GuestMemoryMmap;

/// Status codes as the status byte carries them.
pub(crate) const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
pub(crate) const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
pub(crate) const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Length of the serial number GET_ID returns.
pub(crate) const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

const HEADER_SIZE: u64 = size_of::<virtio_blk_outhdr>() as u64;
const SEGMENT_SIZE: u64 = size_of::<virtio_blk_discard_write_zeroes>() as u64;

/// Longest chain accepted: SEG_MAX data descriptors plus header and status, with room
/// for drivers that split buffers further. Indirect tables could hold 65535.
pub(crate) const MAX_DESCRIPTORS: usize = 1024;

/// What the device allows, fixed at activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    pub capacity_sectors: u64,
    pub read_only: bool,
    /// DISCARD was negotiated.
    pub discard: bool,
    /// WRITE_ZEROES was negotiated.
    pub write_zeroes: bool,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestKind {
    In { offset: u64, data: GuestBuffers },
    Out { offset: u64, data: GuestBuffers },
    Flush,
    GetId { data: GuestBuffers },
    Discard { offset: u64, len: u64 },
    WriteZeroes { offset: u64, len: u64, unmap: bool },
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub kind: RequestKind,
    pub status: GuestAddress,
}

/// A request refused before execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// Where to write `code`; `None` when the chain has no usable status byte.
    pub status: Option<GuestAddress>,
    pub code: u8,
    pub reason: &'static str,
}

impl ParseError {
    fn no_status(reason: &'static str) -> Self {
        ParseError {
            status: None,
            code: S_IOERR,
            reason,
        }
    }
}

/// Parse one chain.
pub(crate) fn parse(
    descs: impl Iterator<Item = Descriptor>,
    mem: &GuestMemoryMmap,
    limits: &RequestLimits,
) -> Result<Request, ParseError> {
    let mut readable = GuestBuffers::default();
    let mut writable = GuestBuffers::default();
    let mut problem: Option<&'static str> = None;
    let mut count = 0usize;
    for d in descs {
        count += 1;
        if count > MAX_DESCRIPTORS {
            // Bound the work a chain can cause; without its end there is no status.
            return Err(ParseError::no_status(
                "more descriptors than any request needs",
            ));
        }
        if d.len() == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            problem.get_or_insert("buffer outside guest memory");
        }
        if d.is_write_only() {
            writable.push(d.addr(), d.len());
        } else {
            if !writable.is_empty() {
                problem.get_or_insert("device-readable descriptor after a device-writable one");
            }
            readable.push(d.addr(), d.len());
        }
    }

    let status = writable
        .pop_back_byte()
        .ok_or(ParseError::no_status("no device-writable status byte"))?;
    if !GuestMemoryBackend::check_range(mem, status, 1) {
        return Err(ParseError::no_status("status byte outside guest memory"));
    }
    let fail = |code, reason| ParseError {
        status: Some(status),
        code,
        reason,
    };
    if let Some(reason) = problem {
        return Err(fail(S_IOERR, reason));
    }

    let mut header = [0u8; HEADER_SIZE as usize];
    if readable.len() < HEADER_SIZE {
        return Err(fail(S_IOERR, "request header too short"));
    }
    readable
        .read(mem, 0, &mut header)
        .map_err(|_| fail(S_IOERR, "cannot read the request header"))?;
    let le_u32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le_u64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let req_type = le_u32(&header, offset_of!(virtio_blk_outhdr, type_));
    let sector = le_u64(&header, offset_of!(virtio_blk_outhdr, sector));
    readable.skip_front(HEADER_SIZE);
    let (data_out, data_in) = (readable, writable);

    // A sector range of `bytes` starting at `sector`, as a byte offset on the disk.
    let range = |sector: u64, bytes: u64| -> Result<u64, ParseError> {
        if bytes % SECTOR_SIZE != 0 {
            return Err(fail(S_IOERR, "data length is not a multiple of 512"));
        }
        match sector.checked_add(bytes / SECTOR_SIZE) {
            Some(end) if end <= limits.capacity_sectors => Ok(sector * SECTOR_SIZE),
            _ => Err(fail(S_IOERR, "sector range beyond the end of the disk")),
        }
    };

    let kind = match req_type {
        VIRTIO_BLK_T_IN => {
            if !data_out.is_empty() {
                return Err(fail(S_IOERR, "read with device-readable data"));
            }
            RequestKind::In {
                offset: range(sector, data_in.len())?,
                data: data_in,
            }
        }
        VIRTIO_BLK_T_OUT => {
            if limits.read_only {
                return Err(fail(S_IOERR, "write to a read-only disk"));
            }
            if !data_in.is_empty() {
                return Err(fail(S_IOERR, "write with device-writable data"));
            }
            RequestKind::Out {
                offset: range(sector, data_out.len())?,
                data: data_out,
            }
        }
        VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
        VIRTIO_BLK_T_GET_ID => RequestKind::GetId { data: data_in },
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let discard = req_type == VIRTIO_BLK_T_DISCARD;
            let (negotiated, max) = if discard {
                (limits.discard, limits.max_discard_sectors)
            } else {
                (limits.write_zeroes, limits.max_write_zeroes_sectors)
            };
            if !negotiated {
                return Err(fail(S_UNSUPP, "discard/write-zeroes not negotiated"));
            }
            if limits.read_only {
                return Err(fail(S_IOERR, "discard/write-zeroes on a read-only disk"));
            }
            let seg = parse_segment(&data_out, mem).map_err(|(code, reason)| fail(code, reason))?;
            // Unknown flags, and "unmap" on a discard, must be refused (§5.2.6.2).
            let unknown = seg.flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
            if unknown != 0 || (discard && seg.flags != 0) {
                return Err(fail(S_UNSUPP, "unsupported discard/write-zeroes flags"));
            }
            if seg.num_sectors > max {
                return Err(fail(S_IOERR, "discard/write-zeroes larger than advertised"));
            }
            let len = u64::from(seg.num_sectors) * SECTOR_SIZE;
            let offset = range(seg.sector, len)?;
            if discard {
                RequestKind::Discard { offset, len }
            } else {
                RequestKind::WriteZeroes {
                    offset,
                    len,
                    unmap: seg.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
                }
            }
        }
        _ => return Err(fail(S_UNSUPP, "unsupported request type")),
    };
    Ok(Request { kind, status })
}

struct Segment {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}

/// The single discard/write-zeroes segment (max_*_seg is 1; more is UNSUPP like QEMU).
fn parse_segment(
    data: &GuestBuffers,
    mem: &GuestMemoryMmap,
) -> Result<Segment, (u8, &'static str)> {
    if data.len() != SEGMENT_SIZE {
        return Err(
            if data.len() > SEGMENT_SIZE && data.len() % SEGMENT_SIZE == 0 {
                (S_UNSUPP, "more than one discard/write-zeroes segment")
            } else {
                (S_IOERR, "malformed discard/write-zeroes segment")
            },
        );
    }
    let mut raw = [0u8; SEGMENT_SIZE as usize];
    data.read(mem, 0, &mut raw)
        .map_err(|_| (S_IOERR, "cannot read the discard/write-zeroes segment"))?;
    let at = |off: usize, n: usize| &raw[off..off + n];
    Ok(Segment {
        sector: u64::from_le_bytes(
            at(offset_of!(virtio_blk_discard_write_zeroes, sector), 8)
                .try_into()
                .unwrap(),
        ),
        num_sectors: u32::from_le_bytes(
            at(offset_of!(virtio_blk_discard_write_zeroes, num_sectors), 4)
                .try_into()
                .unwrap(),
        ),
        flags: u32::from_le_bytes(
            at(offset_of!(virtio_blk_discard_write_zeroes, flags), 4)
                .try_into()
                .unwrap(),
        ),
    })
}
