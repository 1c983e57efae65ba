//! Descriptor chains, as the guest hands them over: parsed and checked before any byte
//! of them is used.
//!
//! A chain is a run of device-readable descriptors followed by a run of
//! device-writable ones (virtio 1.2 §2.7.4). For a SCSI command the readable part is
//! the request header then data-out, the writable part the response header then
//! data-in (§5.6.6.1); headers and data may be split across descriptors anywhere. Every
//! descriptor is checked against guest memory up front. A malformed chain (bad
//! address, readable after writable, too long, headers too short) fails only that
//! request: with VIRTIO_SCSI_S_FAILURE when the writable part can hold the response
//! fields, otherwise it is returned unused.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::commands::{Cdb, DataIn, DataOut, GuestAccessError};
use crate::virtio::GuestMemoryMmap;

/// Longest chain accepted. Linux uses at most `seg_max` + 2 descriptors; the cap bounds
/// the work a guest can make one request cost (an indirect table may hold 65535).
pub(crate) const MAX_CHAIN_DESCRIPTORS: usize = 1024;

/// `virtio_scsi_cmd_req` without its `cdb[cdb_size]`: lun[8], tag, task_attr, prio, crn.
pub(crate) const CMD_REQ_FIXED_LEN: u64 = 19;
/// `virtio_scsi_cmd_resp` without its `sense[sense_size]`: sense_len, resid,
/// status_qualifier, status, response.
pub(crate) const CMD_RESP_FIXED_LEN: u64 = 12;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    #[error("descriptor {index} ({addr:#x}, {len} bytes) is outside guest memory")]
    OutsideMemory { index: usize, addr: u64, len: u32 },
    #[error("device-readable descriptor {0} follows a device-writable one")]
    ReadableAfterWritable(usize),
    #[error("chain has more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooLong,
    #[error("request header needs {need} readable bytes, the chain has {have}")]
    ShortRequest { need: u64, have: u64 },
    #[error("response needs {need} writable bytes, the chain has {have}")]
    ShortResponse { need: u64, have: u64 },
}

/// One checked guest buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A logically contiguous buffer made of guest segments.
pub(crate) struct Area<'m> {
    mem: &'m GuestMemoryMmap,
    segs: Vec<Segment>,
    len: u64,
}

impl<'m> Area<'m> {
    fn new(mem: &'m GuestMemoryMmap) -> Self {
        Self {
            mem,
            segs: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, seg: Segment) {
        if seg.len > 0 {
            self.len += u64::from(seg.len);
            self.segs.push(seg);
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    #[cfg(test)]
    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Call `f(guest_address, range_of_buf)` for each piece of `[offset, offset + len)`.
    fn pieces(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), ()>,
    ) -> Result<(), GuestAccessError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(GuestAccessError { offset });
        }
        let mut seg_start = 0u64;
        let mut done = 0usize;
        for seg in &self.segs {
            if done == len {
                break;
            }
            let seg_end = seg_start + u64::from(seg.len);
            let pos = offset + done as u64;
            if pos < seg_end {
                let in_seg = pos - seg_start;
                let n = (seg_end - pos).min((len - done) as u64) as usize;
                // Cannot overflow: check_range accepted addr..addr+len at parse time.
                let addr = GuestAddress(seg.addr.0 + in_seg);
                f(addr, done..done + n).map_err(|()| GuestAccessError { offset: pos })?;
                done += n;
            }
            seg_start = seg_end;
        }
        Ok(())
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
        let mem = self.mem;
        self.pieces(offset, buf.len(), |addr, r| {
            mem.read_slice(&mut buf[r], addr).map_err(|_| ())
        })
    }

    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), GuestAccessError> {
        let mem = self.mem;
        self.pieces(offset, buf.len(), |addr, r| {
            mem.write_slice(&buf[r], addr).map_err(|_| ())
        })
    }

    /// The part of the area from `start` on (data-out after the request header,
    /// data-in after the response header).
    pub fn tail(&self, start: u64) -> AreaTail<'_, 'm> {
        AreaTail { area: self, start }
    }
}

/// An [`Area`] minus its first `start` bytes.
pub(crate) struct AreaTail<'a, 'm> {
    area: &'a Area<'m>,
    start: u64,
}

impl DataOut for AreaTail<'_, '_> {
    fn len(&self) -> u64 {
        self.area.len.saturating_sub(self.start)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
        let at = self
            .start
            .checked_add(offset)
            .ok_or(GuestAccessError { offset })?;
        self.area.read_at(at, buf)
    }
}

impl DataIn for AreaTail<'_, '_> {
    fn len(&self) -> u64 {
        DataOut::len(self)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), GuestAccessError> {
        let at = self
            .start
            .checked_add(offset)
            .ok_or(GuestAccessError { offset })?;
        self.area.write_at(at, buf)
    }
}

/// A walked, checked chain.
pub(crate) struct Chain<'m> {
    pub readable: Area<'m>,
    /// The writable descriptors up to the first bad one, so that a malformed chain can
    /// still get its FAILURE response when the guest gave a usable place for it.
    pub writable: Area<'m>,
    /// The first problem found, if any.
    pub error: Option<ChainError>,
}

impl<'m> Chain<'m> {
    pub fn parse(mem: &'m GuestMemoryMmap, descs: impl IntoIterator<Item = Descriptor>) -> Self {
        let mut chain = Chain {
            readable: Area::new(mem),
            writable: Area::new(mem),
            error: None,
        };
        let mut seen_writable = false;
        let mut writable_broken = false;
        for (index, d) in descs.into_iter().enumerate() {
            if index == MAX_CHAIN_DESCRIPTORS {
                chain.fail(ChainError::TooLong);
                break;
            }
            let seg = Segment {
                addr: d.addr(),
                len: d.len(),
            };
            let in_memory = seg.len == 0
                || (seg.addr.0.checked_add(u64::from(seg.len)).is_some()
                    && GuestMemoryBackend::check_range(mem, seg.addr, seg.len as usize));
            if d.is_write_only() {
                seen_writable = true;
                if !in_memory {
                    writable_broken = true;
                    chain.fail(ChainError::OutsideMemory {
                        index,
                        addr: seg.addr.0,
                        len: seg.len,
                    });
                } else if !writable_broken {
                    chain.writable.push(seg);
                }
            } else if seen_writable {
                chain.fail(ChainError::ReadableAfterWritable(index));
            } else if !in_memory {
                chain.fail(ChainError::OutsideMemory {
                    index,
                    addr: seg.addr.0,
                    len: seg.len,
                });
            } else {
                chain.readable.push(seg);
            }
        }
        chain
    }

    fn fail(&mut self, e: ChainError) {
        self.error.get_or_insert(e);
    }
}

/// The fields of `virtio_scsi_cmd_req` the device uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CmdRequest {
    pub lun: [u8; 8],
    pub tag: u64,
    pub cdb: Cdb,
}

/// Read the request header from the start of the readable area.
pub(crate) fn parse_cmd_request(area: &Area<'_>, cdb_size: u32) -> Result<CmdRequest, ChainError> {
    let need = CMD_REQ_FIXED_LEN + u64::from(cdb_size);
    if area.len() < need {
        return Err(ChainError::ShortRequest {
            need,
            have: area.len(),
        });
    }
    let mut fixed = [0u8; CMD_REQ_FIXED_LEN as usize];
    let mut cdb = [0u8; super::commands::MAX_CDB_LEN];
    let cdb_len = (cdb_size as usize).min(cdb.len());
    let short = |_| ChainError::ShortRequest {
        need,
        have: area.len(),
    };
    area.read_at(0, &mut fixed).map_err(short)?;
    area.read_at(CMD_REQ_FIXED_LEN, &mut cdb[..cdb_len])
        .map_err(short)?;
    let mut lun = [0u8; 8];
    lun.copy_from_slice(&fixed[0..8]);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&fixed[8..16]);
    Ok(CmdRequest {
        lun,
        tag: u64::from_le_bytes(tag),
        cdb: Cdb::new(&cdb[..cdb_len]),
    })
}

/// The fields of `virtio_scsi_cmd_resp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CmdResponse<'s> {
    pub sense: &'s [u8],
    pub resid: u32,
    pub status: u8,
    pub response: u8,
}

/// Write the response header at the start of the writable area, with at most
/// `sense_size` bytes of sense. The caller has checked the area is large enough for a
/// full header, or (for a FAILURE of a malformed chain) for the fixed fields.
pub(crate) fn write_cmd_response(
    area: &Area<'_>,
    sense_size: u32,
    resp: &CmdResponse<'_>,
) -> Result<(), GuestAccessError> {
    let sense = &resp.sense[..resp.sense.len().min(sense_size as usize)];
    let mut fixed = [0u8; CMD_RESP_FIXED_LEN as usize];
    fixed[0..4].copy_from_slice(&(sense.len() as u32).to_le_bytes());
    fixed[4..8].copy_from_slice(&resp.resid.to_le_bytes());
    // status_qualifier (bytes 8-9) stays 0.
    fixed[10] = resp.status;
    fixed[11] = resp.response;
    area.write_at(0, &fixed)?;
    area.write_at(CMD_RESP_FIXED_LEN, sense)
}
