//! Logical units: the configuration of one disk, its runtime state, and how the
//! 8-byte virtio-scsi LUN field addresses it.
//!
//! Addressing choice: disk `i` is **target `i`, LUN 0** (channel 0). Linux's
//! virtio_scsi driver sets `max_id = max_target + 1` and `max_lun = max_lun + 1`
//! from the config space, INQUIRYs LUN 0 of every target and then uses REPORT LUNS
//! (which here lists just LUN 0). One target per disk is what QEMU's default
//! `scsi-hd` layout looks like, so every initiator scans it without surprises
//! (sequential or REPORT LUNS scanning, with or without sparse-LUN quirks), and a
//! missing disk is a whole missing target, which the driver probes quickly.

use std::fmt;
use std::sync::Arc;

use super::metrics::LunMetrics;
use crate::block::{DiskBackend, SECTOR_SIZE};

/// Logical block size presented to the guest.
pub const BLOCK_SIZE: u64 = SECTOR_SIZE;

/// Longest unit serial number (VPD page 0x80) we accept.
pub const MAX_SERIAL_LEN: usize = 64;

/// One disk attached to the controller.
pub struct LunConfig {
    /// Name used in logs and metrics (the disk id of the VM configuration).
    pub id: String,
    /// Where the blocks live; read-only-ness and the volatile cache come from it.
    pub backend: Box<dyn DiskBackend>,
    /// Advertise thin provisioning (UNMAP, WRITE SAME with UNMAP, LBPME) and pass the
    /// guest's discards to `backend.discard()`.
    pub discard: bool,
    /// Unit serial number for VPD page 0x80 (and the T10 designator of page 0x83):
    /// printable ASCII, at most [`MAX_SERIAL_LEN`] bytes. Without one, page 0x80 is
    /// not offered.
    pub serial: Option<String>,
}

impl fmt::Debug for LunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LunConfig")
            .field("id", &self.id)
            .field("size", &self.backend.size())
            .field("read_only", &self.backend.is_read_only())
            .field("discard", &self.discard)
            .field("serial", &self.serial)
            .finish()
    }
}

/// A LUN as the worker uses it: the backend plus what was learnt from it once at
/// construction (a backend's size and mode do not change while the VM runs).
pub(crate) struct Lun {
    pub id: String,
    pub target: u16,
    pub backend: Box<dyn DiskBackend>,
    pub discard: bool,
    pub serial: Option<String>,
    /// Capacity in logical blocks (a trailing partial block is not addressable).
    pub blocks: u64,
    pub read_only: bool,
    pub volatile_cache: bool,
    pub metrics: Arc<LunMetrics>,
}

impl Lun {
    pub fn new(target: u16, config: LunConfig) -> Self {
        let LunConfig {
            id,
            backend,
            discard,
            serial,
        } = config;
        Self {
            id,
            target,
            blocks: backend.size() / BLOCK_SIZE,
            read_only: backend.is_read_only(),
            volatile_cache: backend.has_volatile_cache(),
            backend,
            discard,
            serial,
            metrics: Arc::default(),
        }
    }

    /// Whether `count` blocks from `lba` are inside the disk.
    pub fn range_ok(&self, lba: u64, count: u64) -> bool {
        lba.checked_add(count).is_some_and(|end| end <= self.blocks)
    }
}

/// Where an 8-byte LUN field points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LunAddress {
    pub target: u8,
    pub lun: u16,
}

/// Decode the virtio-scsi LUN field (virtio 1.2 §5.6.6.1): byte 0 is 1, byte 1 the
/// target, bytes 2-3 a single-level LUN (flat space `0x40 | lun >> 8, lun & 0xff` as
/// Linux sends it, or peripheral `0, lun` as some firmware does), bytes 4-7 zero.
/// Anything else (other address methods, well-known LUNs, multi-level LUNs) addresses
/// nothing here.
pub(crate) fn parse_lun(raw: &[u8; 8]) -> Option<LunAddress> {
    if raw[0] != 1 || raw[4..].iter().any(|&b| b != 0) {
        return None;
    }
    let lun = match raw[2] >> 6 {
        // Peripheral device addressing, bus 0.
        0b00 if raw[2] == 0 => u16::from(raw[3]),
        // Flat space addressing.
        0b01 => (u16::from(raw[2] & 0x3f) << 8) | u16::from(raw[3]),
        _ => return None,
    };
    Some(LunAddress {
        target: raw[1],
        lun,
    })
}
