//! READ CAPACITY(10) and (16) (SBC-3 §5.15, §5.16).

use super::{CmdResult, Exec};
use crate::virtio::scsi::lun::{Lun, BLOCK_SIZE};
use crate::virtio::scsi::sense::Sense;

/// Service action of SERVICE ACTION IN(16) that is READ CAPACITY(16).
const SA_READ_CAPACITY_16: u8 = 0x10;

pub(super) fn read_capacity_10(exec: &mut Exec<'_>) -> CmdResult {
    let cdb = exec.cdb;
    // PMI = 0 requires LOGICAL BLOCK ADDRESS = 0 (SBC-3 §5.15.1).
    if cdb.byte(8) & 0x01 == 0 && cdb.be32(2) != 0 {
        return Err(Sense::invalid_field_in_cdb(2).into());
    }
    exec.reply(&capacity_10(exec.lun), usize::MAX)
}

pub(super) fn service_action_in_16(exec: &mut Exec<'_>) -> CmdResult {
    let cdb = exec.cdb;
    if cdb.byte(1) & 0x1f != SA_READ_CAPACITY_16 {
        return Err(Sense::invalid_field_in_cdb(1).into());
    }
    if cdb.byte(14) & 0x01 == 0 && cdb.be64(2) != 0 {
        return Err(Sense::invalid_field_in_cdb(2).into());
    }
    let alloc_len = usize::try_from(cdb.be32(10)).unwrap_or(usize::MAX);
    exec.reply(&capacity_16(exec.lun), alloc_len)
}

fn last_lba(lun: &Lun) -> u64 {
    lun.blocks.saturating_sub(1)
}

/// READ CAPACITY(10) data: last LBA (0xFFFFFFFF when it does not fit, which tells the
/// initiator to use the 16-byte command) and block length.
pub(crate) fn capacity_10(lun: &Lun) -> [u8; 8] {
    let mut d = [0u8; 8];
    let last = u32::try_from(last_lba(lun)).unwrap_or(u32::MAX);
    d[0..4].copy_from_slice(&last.to_be_bytes());
    d[4..8].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    d
}

/// READ CAPACITY(16) parameter data (SBC-3 table 66).
pub(crate) fn capacity_16(lun: &Lun) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[0..8].copy_from_slice(&last_lba(lun).to_be_bytes());
    d[8..12].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    // Byte 13: one logical block per physical block, no protection information.
    // Byte 14: LBPME is what makes Linux look at the provisioning VPD pages and enable
    // discard. LBPRZ stays 0 (see the provisioning page).
    if lun.discard {
        d[14] = 0x80;
    }
    d
}
