//! READ/WRITE(6/10/16) and SYNCHRONIZE CACHE(10/16) (SBC-3 §5.8-5.11, §5.22-5.23,
//! §5.32-5.35): the data path. Data moves between guest memory and the backend through
//! the worker's bounce buffer, [`IO_CHUNK`] bytes at a time.

use std::io;

use super::{opcode, CmdError, CmdResult, Exec, Transferred, IO_CHUNK, MAX_TRANSFER_BLOCKS};
use crate::block::IoDirection;
use crate::virtio::scsi::lun::BLOCK_SIZE;
use crate::virtio::scsi::metrics::LunMetrics;
use crate::virtio::scsi::sense::{asc, Sense, SenseKey};

/// A decoded READ or WRITE CDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockRange {
    pub lba: u64,
    pub blocks: u32,
    /// Force unit access: the write must be durable before it completes.
    pub fua: bool,
    /// CDB byte holding the TRANSFER LENGTH, for the sense field pointer.
    len_field: u16,
}

pub(crate) fn decode(cdb: &super::Cdb) -> Result<BlockRange, Sense> {
    let (lba, blocks, len_field) = match cdb.opcode() {
        opcode::READ_6 | opcode::WRITE_6 => {
            // 21-bit LBA; a TRANSFER LENGTH of 0 means 256 blocks (SBC-3 §5.8).
            let blocks = match cdb.byte(4) {
                0 => 256,
                n => u32::from(n),
            };
            let lba = u64::from(cdb.be24(1) & 0x1f_ffff);
            return Ok(BlockRange {
                lba,
                blocks,
                fua: false,
                len_field: 4,
            });
        }
        opcode::READ_10 | opcode::WRITE_10 => (u64::from(cdb.be32(2)), u32::from(cdb.be16(7)), 7),
        _ => (cdb.be64(2), cdb.be32(10), 10),
    };
    // RDPROTECT/WRPROTECT: no protection information on these disks.
    if cdb.byte(1) & 0xe0 != 0 {
        return Err(Sense::invalid_field_in_cdb(1));
    }
    Ok(BlockRange {
        lba,
        blocks,
        fua: cdb.byte(1) & 0x08 != 0,
        len_field,
    })
}

/// Decode and check a READ/WRITE against the LUN and the guest's buffer of `buf_len`
/// bytes; returns the range and its length in bytes.
fn check(exec: &Exec<'_>, buf_len: u64) -> Result<(BlockRange, u64), CmdError> {
    let r = decode(exec.cdb)?;
    if r.blocks > MAX_TRANSFER_BLOCKS {
        return Err(Sense::invalid_field_in_cdb(r.len_field).into());
    }
    if !exec.lun.range_ok(r.lba, u64::from(r.blocks)) {
        return Err(Sense::lba_out_of_range().into());
    }
    let bytes = u64::from(r.blocks) * BLOCK_SIZE;
    if bytes > buf_len {
        return Err(CmdError::Overrun);
    }
    Ok((r, bytes))
}

pub(super) fn read(exec: &mut Exec<'_>) -> CmdResult {
    let (r, bytes) = check(exec, exec.data_in.len())?;
    // iotune counts each guest request once, however many backend calls it takes.
    exec.lun.backend.admit(IoDirection::Read, bytes);
    let Exec {
        lun,
        data_in,
        scratch,
        ..
    } = exec;
    let mut done = 0u64;
    while done < bytes {
        let n = chunk(bytes - done);
        let buf = bounce(scratch, n);
        if let Err(e) = lun.backend.read_at(r.lba * BLOCK_SIZE + done, buf) {
            LunMetrics::inc(&lun.metrics.io_errors);
            tracing::warn!(lun = %lun.id, lba = r.lba, error = %e, "scsi read failed");
            return Err(Sense::read_error(r.lba + done / BLOCK_SIZE).into());
        }
        data_in.write_at(done, buf)?;
        done += n as u64;
    }
    LunMetrics::inc(&lun.metrics.read_ops);
    LunMetrics::add(&lun.metrics.read_bytes, bytes);
    Ok(Transferred {
        data_in: bytes,
        data_out: 0,
    })
}

pub(super) fn write(exec: &mut Exec<'_>) -> CmdResult {
    let (r, bytes) = check(exec, exec.data_out.len())?;
    exec.fail_if_read_only()?;
    exec.lun.backend.admit(IoDirection::Write, bytes);
    let Exec {
        lun,
        data_out,
        scratch,
        ..
    } = exec;
    let mut done = 0u64;
    while done < bytes {
        let n = chunk(bytes - done);
        let buf = bounce(scratch, n);
        data_out.read_at(done, buf)?;
        if let Err(e) = lun.backend.write_at(r.lba * BLOCK_SIZE + done, buf) {
            LunMetrics::inc(&lun.metrics.io_errors);
            tracing::warn!(lun = %lun.id, lba = r.lba, error = %e, "scsi write failed");
            return Err(write_failure(&e, r.lba + done / BLOCK_SIZE).into());
        }
        done += n as u64;
    }
    if r.fua && lun.volatile_cache {
        if let Err(e) = lun.backend.flush() {
            LunMetrics::inc(&lun.metrics.io_errors);
            tracing::warn!(lun = %lun.id, error = %e, "scsi FUA flush failed");
            return Err(Sense::write_error(r.lba).into());
        }
    }
    LunMetrics::inc(&lun.metrics.write_ops);
    LunMetrics::add(&lun.metrics.write_bytes, bytes);
    Ok(Transferred {
        data_in: 0,
        data_out: bytes,
    })
}

/// SYNCHRONIZE CACHE: the whole backend is flushed whatever the range says (a flush is
/// not per-range on files), and the command completes only once that returned Ok, so
/// the guest's durability point is real. IMMED is honoured by simply not completing
/// early, which SBC allows.
pub(super) fn synchronize_cache(exec: &mut Exec<'_>) -> CmdResult {
    let cdb = exec.cdb;
    let (lba, blocks) = if cdb.opcode() == opcode::SYNCHRONIZE_CACHE_10 {
        (u64::from(cdb.be32(2)), u64::from(cdb.be16(7)))
    } else {
        (cdb.be64(2), u64::from(cdb.be32(10)))
    };
    // NUMBER OF LOGICAL BLOCKS = 0 means "from LBA to the end".
    let in_range = if blocks == 0 {
        lba < exec.lun.blocks
    } else {
        exec.lun.range_ok(lba, blocks)
    };
    if !in_range {
        return Err(Sense::lba_out_of_range().into());
    }
    flush(exec)
}

/// Flush the backend, as SYNCHRONIZE CACHE and a START STOP UNIT stop do.
pub(super) fn flush(exec: &mut Exec<'_>) -> CmdResult {
    let lun = &mut *exec.lun;
    LunMetrics::inc(&lun.metrics.flushes);
    if let Err(e) = lun.backend.flush() {
        LunMetrics::inc(&lun.metrics.io_errors);
        tracing::warn!(lun = %lun.id, error = %e, "scsi flush failed");
        return Err(Sense::new(SenseKey::MediumError, asc::WRITE_ERROR).into());
    }
    Ok(Transferred::default())
}

/// Sense for a failed backend write at `lba`: running out of host space is reported as
/// a thin-provisioning exhaustion, anything else as a medium write error.
pub(super) fn write_failure(e: &io::Error, lba: u64) -> Sense {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Sense::space_allocation_failed(),
        _ => Sense::write_error(lba),
    }
}

fn chunk(remaining: u64) -> usize {
    usize::try_from(remaining).map_or(IO_CHUNK, |r| r.min(IO_CHUNK))
}

/// The first `n` bytes of the bounce buffer, growing it (up to [`IO_CHUNK`]) once.
pub(super) fn bounce(scratch: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if scratch.len() < n {
        scratch.resize(n, 0);
    }
    &mut scratch[..n]
}
