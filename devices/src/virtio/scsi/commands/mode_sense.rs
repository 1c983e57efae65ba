//! MODE SENSE(6) and (10) (SPC-4 §6.11-6.12) with the caching and control mode pages.
//! Nothing is changeable (MODE SELECT is not implemented), and saved values are not
//! supported.

use super::{CmdResult, Exec};
use crate::virtio::scsi::lun::{Lun, BLOCK_SIZE};
use crate::virtio::scsi::sense::Sense;

pub(crate) const PAGE_CACHING: u8 = 0x08;
pub(crate) const PAGE_CONTROL: u8 = 0x0A;
pub(crate) const PAGE_ALL: u8 = 0x3F;

/// Page control field values (0 current and 2 default both report current values).
const PC_CHANGEABLE: u8 = 1;
const PC_SAVED: u8 = 3;

/// What MODE SENSE asked for, decoded from either CDB size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModeSenseRequest {
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptor accepted (MODE SENSE(10) only).
    pub llbaa: bool,
    pub pc: u8,
    pub page: u8,
    pub subpage: u8,
}

pub(super) fn mode_sense(exec: &mut Exec<'_>, ten: bool) -> CmdResult {
    let cdb = exec.cdb;
    let req = ModeSenseRequest {
        ten,
        dbd: cdb.byte(1) & 0x08 != 0,
        llbaa: ten && cdb.byte(1) & 0x10 != 0,
        pc: cdb.byte(2) >> 6,
        page: cdb.byte(2) & 0x3f,
        subpage: cdb.byte(3),
    };
    let alloc_len = if ten {
        usize::from(cdb.be16(7))
    } else {
        usize::from(cdb.byte(4))
    };
    let data = mode_data(exec.lun, &req)?;
    exec.reply(&data, alloc_len)
}

/// The complete mode parameter data (header, block descriptor, pages); the caller
/// truncates it to the allocation length. The MODE DATA LENGTH field always describes
/// the untruncated data, as SPC-4 §7.5.5 requires, so an initiator can ask again with
/// a big enough buffer.
pub(crate) fn mode_data(lun: &Lun, req: &ModeSenseRequest) -> Result<Vec<u8>, Sense> {
    if req.pc == PC_SAVED {
        return Err(Sense::saving_parameters_not_supported());
    }
    let pages = match (req.page, req.subpage) {
        (PAGE_CACHING, 0) => caching_page(lun, req.pc).to_vec(),
        (PAGE_CONTROL, 0) => control_page(req.pc).to_vec(),
        // All pages (subpage 0), or all pages and subpages (0xFF): we have no subpages.
        (PAGE_ALL, 0 | 0xFF) => {
            [&caching_page(lun, req.pc)[..], &control_page(req.pc)[..]].concat()
        }
        (PAGE_CACHING | PAGE_CONTROL | PAGE_ALL, _) => return Err(Sense::invalid_field_in_cdb(3)),
        _ => return Err(Sense::invalid_field_in_cdb(2)),
    };
    let block_descriptor = match (req.dbd, req.llbaa) {
        (true, _) => Vec::new(),
        (false, false) => short_block_descriptor(lun).to_vec(),
        (false, true) => long_block_descriptor(lun).to_vec(),
    };
    // DEVICE-SPECIFIC PARAMETER for direct-access devices (SBC-3 §6.4.1): WP when the
    // LUN is read-only; DPOFUA because WRITE with FUA is honoured.
    let device_specific = if lun.read_only { 0x80 } else { 0 } | 0x10;

    let mut d = Vec::new();
    if req.ten {
        let total = 8 + block_descriptor.len() + pages.len();
        d.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        d.push(0); // MEDIUM TYPE
        d.push(device_specific);
        d.push(if req.llbaa && !req.dbd { 0x01 } else { 0 }); // LONGLBA
        d.push(0);
        d.extend_from_slice(&(block_descriptor.len() as u16).to_be_bytes());
    } else {
        let total = 4 + block_descriptor.len() + pages.len();
        d.push((total - 1) as u8);
        d.push(0);
        d.push(device_specific);
        d.push(block_descriptor.len() as u8);
    }
    d.extend_from_slice(&block_descriptor);
    d.extend_from_slice(&pages);
    Ok(d)
}

/// Short LBA mode parameter block descriptor (SBC-3 §6.4.2.2).
fn short_block_descriptor(lun: &Lun) -> [u8; 8] {
    let mut d = [0u8; 8];
    let blocks = u32::try_from(lun.blocks).unwrap_or(u32::MAX);
    d[0..4].copy_from_slice(&blocks.to_be_bytes());
    d[5..8].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes()[1..]);
    d
}

/// Long LBA mode parameter block descriptor (SBC-3 §6.4.2.3).
fn long_block_descriptor(lun: &Lun) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&lun.blocks.to_be_bytes());
    d[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    d
}

/// Caching mode page (SBC-3 §6.4.5). WCE tells the guest whether there is a volatile
/// cache it must flush (Linux then sends SYNCHRONIZE CACHE and uses FUA).
fn caching_page(lun: &Lun, pc: u8) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[0] = PAGE_CACHING;
    p[1] = (p.len() - 2) as u8;
    if pc != PC_CHANGEABLE && lun.volatile_cache {
        p[2] = 0x04; // WCE
    }
    p
}

/// Control mode page (SPC-4 §7.5.8): fixed-format sense (D_SENSE = 0) and unrestricted
/// reordering of simple commands (QUEUE ALGORITHM MODIFIER = 1).
fn control_page(pc: u8) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0] = PAGE_CONTROL;
    p[1] = (p.len() - 2) as u8;
    if pc != PC_CHANGEABLE {
        p[3] = 0x10;
    }
    p
}
