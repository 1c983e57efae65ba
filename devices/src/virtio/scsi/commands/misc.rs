//! Commands with no data path: REQUEST SENSE, START STOP UNIT, PREVENT ALLOW MEDIUM
//! REMOVAL (SBC-3) and REPORT LUNS (SPC-4 §6.33).

use super::{rw, CmdResult, Exec, Transferred};
use crate::virtio::scsi::sense::Sense;

/// REQUEST SENSE: with autosense there is never a pending sense, so the answer is
/// always NO SENSE (SPC-4 §6.39), in fixed format.
pub(super) fn request_sense(exec: &mut Exec<'_>) -> CmdResult {
    // DESC = 1 asks for descriptor format, which we do not produce.
    if exec.cdb.byte(1) & 0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(1).into());
    }
    let alloc_len = usize::from(exec.cdb.byte(4));
    exec.reply(&Sense::no_sense().to_fixed(), alloc_len)
}

/// START STOP UNIT: the disk is always spinning, so start is a no-op; a stop makes the
/// cache durable first (what a real drive does before it spins down, and what a guest
/// shutting down relies on). Loading or ejecting a non-removable disk is refused.
pub(super) fn start_stop_unit(exec: &mut Exec<'_>) -> CmdResult {
    let b4 = exec.cdb.byte(4);
    let power_condition = b4 >> 4;
    let loej = b4 & 0x02 != 0;
    let start = b4 & 0x01 != 0;
    if loej {
        return Err(Sense::invalid_field_in_cdb(4).into());
    }
    if power_condition == 0 && !start {
        return rw::flush(exec);
    }
    Ok(Transferred::default())
}

/// PREVENT ALLOW MEDIUM REMOVAL: nothing to prevent on a fixed disk; allowing is fine,
/// preventing is refused as for any device without removable medium.
pub(super) fn prevent_allow_medium_removal(exec: &mut Exec<'_>) -> CmdResult {
    if exec.cdb.byte(4) & 0x03 != 0 {
        return Err(Sense::invalid_field_in_cdb(4).into());
    }
    Ok(Transferred::default())
}

/// REPORT LUNS: each target has exactly LUN 0 (see `lun.rs`).
pub(super) fn report_luns(exec: &mut Exec<'_>) -> CmdResult {
    let select = exec.cdb.byte(2);
    let alloc_len = usize::try_from(exec.cdb.be32(6)).unwrap_or(usize::MAX);
    let data = report_luns_data(select).ok_or(Sense::invalid_field_in_cdb(2))?;
    exec.reply(&data, alloc_len)
}

/// REPORT LUNS parameter data for SELECT REPORT `select`, or None if unsupported.
pub(crate) fn report_luns_data(select: u8) -> Option<Vec<u8>> {
    let luns: &[[u8; 8]] = match select {
        // All logical units (0x00), or all including well-known ones (0x02): LUN 0 in
        // single-level peripheral device addressing is eight zero bytes.
        0x00 | 0x02 => &[[0; 8]],
        // Well-known logical units only: we have none.
        0x01 => &[],
        _ => return None,
    };
    let mut d = Vec::with_capacity(8 + luns.len() * 8);
    d.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for lun in luns {
        d.extend_from_slice(lun);
    }
    Some(d)
}
