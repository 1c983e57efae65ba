//! Logical block provisioning: UNMAP (SBC-3 §5.28) and WRITE SAME(10/16) (§5.41-5.42).
//!
//! UNMAP goes to `backend.discard()` and is only offered on LUNs configured with
//! discard. WRITE SAME works on every writable LUN: an all-zero block becomes
//! `backend.write_zeroes()` (deallocating when the UNMAP bit is set and discard is
//! enabled), and any other pattern is written block by block, so the command is
//! complete rather than a zero-only special case.

use super::rw::{bounce, write_failure};
use super::{opcode, CmdError, CmdResult, Exec, Transferred, IO_CHUNK};
use super::{MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BLOCKS};
use crate::virtio::scsi::lun::BLOCK_SIZE;
use crate::virtio::scsi::metrics::LunMetrics;
use crate::virtio::scsi::sense::Sense;

/// Size of the UNMAP parameter list header and of each block descriptor.
const UNMAP_HEADER_LEN: usize = 8;
const UNMAP_DESCRIPTOR_LEN: usize = 16;

pub(super) fn unmap(exec: &mut Exec<'_>) -> CmdResult {
    if !exec.lun.discard {
        // LBPU = 0 on this LUN: the command does not exist for it.
        return Err(Sense::invalid_opcode().into());
    }
    let cdb = exec.cdb;
    // ANCHOR: anchored state is not supported (ANC_SUP = 0).
    if cdb.byte(1) & 0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(1).into());
    }
    let param_len = usize::from(cdb.be16(7));
    if param_len == 0 {
        // Not an error: nothing to unmap (SBC-3 §5.28.1).
        return Ok(Transferred::default());
    }
    if param_len < UNMAP_HEADER_LEN {
        return Err(Sense::parameter_list_length_error().into());
    }
    exec.fail_if_read_only()?;
    let list = exec.param_list(param_len)?;
    let ranges = parse_unmap_list(&list, exec.lun.blocks)?;

    let lun = &mut *exec.lun;
    let mut total = 0u64;
    for (lba, blocks) in ranges {
        let len = u64::from(blocks) * BLOCK_SIZE;
        if let Err(e) = lun.backend.discard(lba * BLOCK_SIZE, len) {
            LunMetrics::inc(&lun.metrics.io_errors);
            tracing::warn!(lun = %lun.id, lba, blocks, error = %e, "scsi unmap failed");
            return Err(Sense::write_error(lba).into());
        }
        total += len;
    }
    LunMetrics::inc(&lun.metrics.unmaps);
    LunMetrics::add(&lun.metrics.unmap_bytes, total);
    Ok(Transferred {
        data_in: 0,
        data_out: param_len as u64,
    })
}

/// Parse an UNMAP parameter list (at least the 8-byte header long) into the non-empty
/// (LBA, block count) ranges to discard. Everything is validated before anything is
/// discarded, so a bad descriptor leaves the disk untouched.
pub(crate) fn parse_unmap_list(list: &[u8], capacity: u64) -> Result<Vec<(u64, u32)>, Sense> {
    let Some(header) = list.get(..UNMAP_HEADER_LEN) else {
        return Err(Sense::parameter_list_length_error());
    };
    // UNMAP BLOCK DESCRIPTOR DATA LENGTH; a trailing partial descriptor, or one cut off
    // by the parameter list length, is ignored (SBC-3 §5.28.2).
    let bd_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let count = bd_len.min(list.len() - UNMAP_HEADER_LEN) / UNMAP_DESCRIPTOR_LEN;
    if count > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(Sense::invalid_field_in_param_list(2));
    }
    let mut ranges = Vec::with_capacity(count);
    let mut total = 0u64;
    for (i, d) in list[UNMAP_HEADER_LEN..]
        .chunks_exact(UNMAP_DESCRIPTOR_LEN)
        .take(count)
        .enumerate()
    {
        let mut lba = [0u8; 8];
        lba.copy_from_slice(&d[0..8]);
        let lba = u64::from_be_bytes(lba);
        let blocks = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        if lba
            .checked_add(u64::from(blocks))
            .is_none_or(|end| end > capacity)
        {
            return Err(Sense::lba_out_of_range());
        }
        total += u64::from(blocks);
        if total > u64::from(MAX_UNMAP_BLOCKS) {
            let at = UNMAP_HEADER_LEN + i * UNMAP_DESCRIPTOR_LEN + 8;
            return Err(Sense::invalid_field_in_param_list(at as u16));
        }
        if blocks > 0 {
            ranges.push((lba, blocks));
        }
    }
    Ok(ranges)
}

pub(super) fn write_same(exec: &mut Exec<'_>) -> CmdResult {
    let cdb = exec.cdb;
    let ten = cdb.opcode() == opcode::WRITE_SAME_10;
    let flags = cdb.byte(1);
    // WRPROTECT (no protection information), ANCHOR (not supported), PBDATA/LBDATA
    // (obsolete per-block data), and in the 10-byte CDB the reserved bit 0.
    let unsupported = if ten { 0xf7 } else { 0xf6 };
    if flags & unsupported != 0 {
        return Err(Sense::invalid_field_in_cdb(1).into());
    }
    let unmap_bit = flags & 0x08 != 0;
    // NDOB (16-byte CDB only): no data-out buffer, the block is all zeroes.
    let ndob = !ten && flags & 0x01 != 0;
    let (lba, blocks, blocks_field) = if ten {
        (u64::from(cdb.be32(2)), u32::from(cdb.be16(7)), 7)
    } else {
        (cdb.be64(2), cdb.be32(10), 10)
    };
    // WSNZ = 1: zero blocks ("to the end of the medium") is refused, as is more than
    // the advertised maximum.
    if blocks == 0 || blocks > MAX_WRITE_SAME_BLOCKS {
        return Err(Sense::invalid_field_in_cdb(blocks_field).into());
    }
    if !exec.lun.range_ok(lba, u64::from(blocks)) {
        return Err(Sense::lba_out_of_range().into());
    }
    exec.fail_if_read_only()?;

    let mut pattern = [0u8; BLOCK_SIZE as usize];
    if !ndob {
        if exec.data_out.len() < BLOCK_SIZE {
            return Err(CmdError::Overrun);
        }
        exec.data_out.read_at(0, &mut pattern)?;
    }
    let offset = lba * BLOCK_SIZE;
    let len = u64::from(blocks) * BLOCK_SIZE;
    let lun = &mut *exec.lun;
    if pattern.iter().all(|&b| b == 0) {
        // Deallocate only where discard is enabled; elsewhere the UNMAP bit is just a
        // hint we decline (SBC-3 allows writing instead of unmapping).
        let unmap = unmap_bit && lun.discard;
        if let Err(e) = lun.backend.write_zeroes(offset, len, unmap) {
            LunMetrics::inc(&lun.metrics.io_errors);
            tracing::warn!(lun = %lun.id, lba, blocks, error = %e, "scsi write same failed");
            return Err(write_failure(&e, lba).into());
        }
        if unmap {
            LunMetrics::inc(&lun.metrics.unmaps);
            LunMetrics::add(&lun.metrics.unmap_bytes, len);
        } else {
            LunMetrics::inc(&lun.metrics.write_ops);
            LunMetrics::add(&lun.metrics.write_bytes, len);
        }
    } else {
        // A pattern: fill the bounce buffer with copies of the block once, then write it
        // out as often as needed.
        let chunk_len = (len.min(IO_CHUNK as u64)) as usize;
        let buf = bounce(exec.scratch, chunk_len);
        for block in buf.chunks_exact_mut(pattern.len()) {
            block.copy_from_slice(&pattern);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(chunk_len as u64) as usize;
            if let Err(e) = lun.backend.write_at(offset + done, &buf[..n]) {
                LunMetrics::inc(&lun.metrics.io_errors);
                tracing::warn!(lun = %lun.id, lba, blocks, error = %e, "scsi write same failed");
                return Err(write_failure(&e, lba + done / BLOCK_SIZE).into());
            }
            done += n as u64;
        }
        LunMetrics::inc(&lun.metrics.write_ops);
        LunMetrics::add(&lun.metrics.write_bytes, len);
    }
    Ok(Transferred {
        data_in: 0,
        data_out: if ndob { 0 } else { BLOCK_SIZE },
    })
}
