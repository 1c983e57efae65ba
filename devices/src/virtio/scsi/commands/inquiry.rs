//! INQUIRY (SPC-4 §6.6): standard data and the VPD pages Linux reads to configure a
//! disk (supported pages, serial, identification, block limits, characteristics,
//! logical block provisioning).

use super::{CmdResult, Exec, MAX_TRANSFER_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS};
use super::{MAX_WRITE_SAME_BLOCKS, UNMAP_GRANULARITY};
use crate::virtio::scsi::lun::Lun;
use crate::virtio::scsi::sense::Sense;

/// T10 vendor identification (8 bytes, space padded).
pub(crate) const VENDOR: &[u8; 8] = b"OXVM    ";
/// Product identification (16 bytes, space padded).
pub(crate) const PRODUCT: &[u8; 16] = b"VIRTUAL DISK    ";
/// Product revision level (4 bytes).
pub(crate) const REVISION: &[u8; 4] = b"0001";

/// Peripheral qualifier 000b (connected) and device type 00h (direct access block).
const PERIPHERAL: u8 = 0x00;

pub(crate) const VPD_SUPPORTED_PAGES: u8 = 0x00;
pub(crate) const VPD_SERIAL: u8 = 0x80;
pub(crate) const VPD_DEVICE_ID: u8 = 0x83;
pub(crate) const VPD_BLOCK_LIMITS: u8 = 0xB0;
pub(crate) const VPD_BLOCK_CHARACTERISTICS: u8 = 0xB1;
pub(crate) const VPD_LOGICAL_BLOCK_PROVISIONING: u8 = 0xB2;

pub(super) fn inquiry(exec: &mut Exec<'_>) -> CmdResult {
    let cdb = exec.cdb;
    let evpd = cdb.byte(1) & 0x01 != 0;
    // CMDDT (bit 1) is obsolete; the other bits of byte 1 are reserved.
    if cdb.byte(1) & !0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(1).into());
    }
    let page = cdb.byte(2);
    let alloc_len = usize::from(cdb.be16(3));
    let data = if evpd {
        vpd_page(exec.lun, page).ok_or(Sense::invalid_field_in_cdb(2))?
    } else if page != 0 {
        return Err(Sense::invalid_field_in_cdb(2).into());
    } else {
        standard().to_vec()
    };
    exec.reply(&data, alloc_len)
}

/// Standard INQUIRY data (SPC-4 table 142), the 36 bytes every initiator reads.
pub(crate) fn standard() -> [u8; 36] {
    let mut d = [0u8; 36];
    d[0] = PERIPHERAL;
    d[1] = 0x00; // RMB = 0: not removable.
    d[2] = 0x06; // VERSION: SPC-4, so Linux uses READ CAPACITY(16) and the VPD pages.
    d[3] = 0x02; // RESPONSE DATA FORMAT = 2.
    d[4] = (d.len() - 5) as u8; // ADDITIONAL LENGTH.
    d[7] = 0x02; // CMDQUE: tagged queuing, so Linux keeps several commands in flight.
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    d
}

/// The VPD pages this LUN offers, ascending as page 0x00 must list them.
fn supported_pages(lun: &Lun) -> Vec<u8> {
    let mut pages = vec![VPD_SUPPORTED_PAGES];
    if lun.serial.is_some() {
        pages.push(VPD_SERIAL);
    }
    pages.extend([
        VPD_DEVICE_ID,
        VPD_BLOCK_LIMITS,
        VPD_BLOCK_CHARACTERISTICS,
        VPD_LOGICAL_BLOCK_PROVISIONING,
    ]);
    pages
}

/// A complete VPD page (4-byte header + payload), or None when not supported.
pub(crate) fn vpd_page(lun: &Lun, page: u8) -> Option<Vec<u8>> {
    if !supported_pages(lun).contains(&page) {
        return None;
    }
    let payload = match page {
        VPD_SUPPORTED_PAGES => supported_pages(lun),
        VPD_SERIAL => lun
            .serial
            .as_deref()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
        VPD_DEVICE_ID => device_identification(lun),
        VPD_BLOCK_LIMITS => block_limits(lun),
        VPD_BLOCK_CHARACTERISTICS => block_characteristics(),
        VPD_LOGICAL_BLOCK_PROVISIONING => logical_block_provisioning(lun),
        _ => return None,
    };
    let mut d = Vec::with_capacity(4 + payload.len());
    d.push(PERIPHERAL);
    d.push(page);
    // Payloads are bounded (the serial is at most 64 bytes), so this always fits.
    d.extend_from_slice(
        &u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    d.extend_from_slice(&payload);
    Some(d)
}

/// What makes this LUN's identity: the serial when there is one, else the disk id.
fn identity(lun: &Lun) -> Vec<u8> {
    let raw = lun.serial.as_deref().unwrap_or(&lun.id);
    raw.bytes()
        .filter(|b| (0x20..0x7f).contains(b))
        .take(crate::virtio::scsi::lun::MAX_SERIAL_LEN)
        .collect()
}

/// Device identification (SPC-4 §7.8.6): a T10 vendor ID designator (what udev builds
/// /dev/disk/by-id/scsi-1... from) and an NAA locally-assigned designator (the
/// `wwn-` link), both for the logical unit.
fn device_identification(lun: &Lun) -> Vec<u8> {
    let id = identity(lun);
    let mut d = Vec::new();
    // T10 vendor ID: code set 2 (ASCII); association 00b (LU), designator type 1.
    d.extend_from_slice(&[0x02, 0x01, 0x00, (VENDOR.len() + id.len()) as u8]);
    d.extend_from_slice(VENDOR);
    d.extend_from_slice(&id);
    // NAA: code set 1 (binary); association 00b (LU), designator type 3. NAA 3
    // ("locally assigned") needs no IEEE OUI; the 60 bits come from a stable hash of
    // the identity and target so they survive restarts.
    let mut naa = fnv1a(&id) ^ u64::from(lun.target);
    naa = (naa & 0x0FFF_FFFF_FFFF_FFFF) | (0x3 << 60);
    d.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
    d.extend_from_slice(&naa.to_be_bytes());
    d
}

/// 64-bit FNV-1a: tiny and stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Block limits (SBC-3 §6.5.3), page length 0x3C.
fn block_limits(lun: &Lun) -> Vec<u8> {
    let mut d = vec![0u8; 0x3C];
    // Payload offsets are the page's byte offsets minus the 4-byte header.
    // WSNZ: a WRITE SAME with NUMBER OF LOGICAL BLOCKS = 0 ("to the end") is refused.
    d[0] = 0x01;
    d[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
    if lun.discard {
        d[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
        d[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        d[24..28].copy_from_slice(&UNMAP_GRANULARITY.to_be_bytes());
    }
    // MAXIMUM WRITE SAME LENGTH: WRITE SAME works with or without discard (without, it
    // writes zeroes or the pattern), so Linux can use it for REQ_OP_WRITE_ZEROES.
    d[32..40].copy_from_slice(&u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
    d
}

/// Block device characteristics (SBC-3 §6.5.2): MEDIUM ROTATION RATE 1 means
/// non-rotating, so Linux marks the queue non-rotational.
fn block_characteristics() -> Vec<u8> {
    let mut d = vec![0u8; 0x3C];
    d[0..2].copy_from_slice(&1u16.to_be_bytes());
    d
}

/// Logical block provisioning (SBC-3 §6.5.4), page length 4.
fn logical_block_provisioning(lun: &Lun) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    if lun.discard {
        // LBPU (UNMAP) | LBPWS (WRITE SAME(16) with UNMAP) | LBPWS10. LBPRZ stays 0: a
        // backend may ignore a discard, so unmapped blocks need not read as zero.
        d[1] = 0x80 | 0x40 | 0x20;
        // PROVISIONING TYPE 010b: thin provisioned.
        d[2] = 0x02;
    }
    d
}
