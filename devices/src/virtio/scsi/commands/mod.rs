//! SCSI command emulation for a direct-access block device (SBC-3 on top of SPC-4),
//! limited to what Linux's `sd` driver and discard need. One file per family; this
//! module holds the CDB accessor, the data-buffer traits and the opcode dispatch.
//!
//! Data-in produced by emulated commands (INQUIRY, MODE SENSE...) is truncated to the
//! allocation length and to the guest's buffer, and the shortfall is reported as
//! `resid`. Transfers whose size the CDB fixes (READ/WRITE, parameter lists) must fit
//! the guest's buffer, otherwise the request fails with VIRTIO_SCSI_S_OVERRUN as the
//! virtio spec asks.

mod capacity;
mod inquiry;
mod misc;
mod mode_sense;
mod rw;
mod unmap;

use super::lun::Lun;
use super::metrics::LunMetrics;
use super::sense::Sense;

pub(crate) mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8A;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    /// SERVICE ACTION IN(16); service action 0x10 is READ CAPACITY(16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
}

/// Largest READ/WRITE in blocks (block limits VPD, and `max_sectors` in the config
/// space so Linux never builds a larger one). Bounds the work of a single request.
pub(crate) const MAX_TRANSFER_BLOCKS: u32 = 0xFFFF;

/// Largest total of blocks one UNMAP may deallocate (1 GiB of 512-byte blocks).
pub(crate) const MAX_UNMAP_BLOCKS: u32 = 2 * 1024 * 1024;

/// Most block descriptors one UNMAP parameter list may carry.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// Largest WRITE SAME in blocks.
pub(crate) const MAX_WRITE_SAME_BLOCKS: u32 = MAX_UNMAP_BLOCKS;

/// Preferred discard granularity in blocks (4 KiB: a host page, what hole punching
/// frees at least).
pub(crate) const UNMAP_GRANULARITY: u32 = 8;

/// Size of the bounce buffer between guest memory and the backend: large transfers are
/// done in pieces of this size.
pub(crate) const IO_CHUNK: usize = 1 << 20;

/// Longest CDB any supported command uses; longer CDBs are accepted but the tail is
/// never looked at.
pub(crate) const MAX_CDB_LEN: usize = 16;

/// The CDB of one request. Copied into a fixed array so that handlers can index any
/// byte of their command's length without bounds worries: `execute` refuses a CDB
/// shorter than its opcode needs (possible only if the driver shrank `cdb_size`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cdb {
    bytes: [u8; MAX_CDB_LEN],
    len: usize,
}

impl Cdb {
    pub fn new(raw: &[u8]) -> Self {
        let len = raw.len().min(MAX_CDB_LEN);
        let mut bytes = [0u8; MAX_CDB_LEN];
        bytes[..len].copy_from_slice(&raw[..len]);
        Self { bytes, len }
    }

    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }

    pub fn byte(&self, i: usize) -> u8 {
        self.bytes[i]
    }

    pub fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.bytes[i], self.bytes[i + 1]])
    }

    pub fn be24(&self, i: usize) -> u32 {
        u32::from_be_bytes([0, self.bytes[i], self.bytes[i + 1], self.bytes[i + 2]])
    }

    pub fn be32(&self, i: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[i..i + 4]);
        u32::from_be_bytes(b)
    }

    pub fn be64(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[i..i + 8]);
        u64::from_be_bytes(b)
    }
}

/// The guest memory behind a request could not be accessed.
#[derive(Debug, thiserror::Error)]
#[error("guest memory access failed at offset {offset:#x} of the buffer")]
pub(crate) struct GuestAccessError {
    pub offset: u64,
}

/// The device-readable data-out buffer of a request (parameter lists, write data).
pub(crate) trait DataOut {
    fn len(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), GuestAccessError>;
}

/// The device-writable data-in buffer of a request.
pub(crate) trait DataIn {
    fn len(&self) -> u64;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), GuestAccessError>;
}

/// How a command failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CmdError {
    /// CHECK CONDITION with this sense.
    Check(Sense),
    /// The CDB needs more data than the guest's buffers hold (VIRTIO_SCSI_S_OVERRUN).
    Overrun,
    /// Guest memory went away under us (VIRTIO_SCSI_S_FAILURE).
    Guest,
}

impl From<Sense> for CmdError {
    fn from(sense: Sense) -> Self {
        Self::Check(sense)
    }
}

impl From<GuestAccessError> for CmdError {
    fn from(_: GuestAccessError) -> Self {
        Self::Guest
    }
}

/// Bytes a successful command moved, for `resid`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Transferred {
    pub data_in: u64,
    pub data_out: u64,
}

pub(crate) type CmdResult = Result<Transferred, CmdError>;

/// Everything a command handler works with.
pub(crate) struct Exec<'a> {
    pub lun: &'a mut Lun,
    pub cdb: &'a Cdb,
    pub data_out: &'a dyn DataOut,
    pub data_in: &'a mut dyn DataIn,
    /// Reusable bounce buffer for block transfers, owned by the worker.
    pub scratch: &'a mut Vec<u8>,
}

impl Exec<'_> {
    /// Send emulated data-in (already complete, e.g. an INQUIRY page): truncated to the
    /// CDB's allocation length and to the guest's buffer.
    fn reply(&mut self, data: &[u8], alloc_len: usize) -> CmdResult {
        let buf_len = usize::try_from(self.data_in.len()).unwrap_or(usize::MAX);
        let n = data.len().min(alloc_len).min(buf_len);
        self.data_in.write_at(0, &data[..n])?;
        Ok(Transferred {
            data_in: n as u64,
            data_out: 0,
        })
    }

    /// Read an exact-length parameter list from data-out.
    fn param_list(&self, len: usize) -> Result<Vec<u8>, CmdError> {
        if len as u64 > self.data_out.len() {
            return Err(CmdError::Overrun);
        }
        let mut buf = vec![0u8; len];
        self.data_out.read_at(0, &mut buf)?;
        Ok(buf)
    }

    fn fail_if_read_only(&self) -> Result<(), CmdError> {
        if self.lun.read_only {
            Err(Sense::write_protected().into())
        } else {
            Ok(())
        }
    }
}

/// CDB length of each supported opcode (SPC-4 §4.2.5.1 group codes).
fn cdb_len(op: u8) -> Option<usize> {
    use opcode::*;
    Some(match op {
        TEST_UNIT_READY
        | REQUEST_SENSE
        | READ_6
        | WRITE_6
        | INQUIRY
        | MODE_SENSE_6
        | START_STOP_UNIT
        | PREVENT_ALLOW_MEDIUM_REMOVAL => 6,
        READ_CAPACITY_10 | READ_10 | WRITE_10 | SYNCHRONIZE_CACHE_10 | WRITE_SAME_10 | UNMAP
        | MODE_SENSE_10 => 10,
        READ_16 | WRITE_16 | SYNCHRONIZE_CACHE_16 | WRITE_SAME_16 | SERVICE_ACTION_IN_16 => 16,
        REPORT_LUNS => 12,
        _ => return None,
    })
}

/// Run one command against `exec.lun`.
pub(crate) fn execute(exec: &mut Exec<'_>) -> CmdResult {
    let result = dispatch(exec);
    if let Err(CmdError::Check(sense)) = &result {
        LunMetrics::inc(&exec.lun.metrics.check_conditions);
        tracing::debug!(
            lun = %exec.lun.id,
            opcode = exec.cdb.opcode(),
            key = ?sense.key,
            asc = sense.asc,
            ascq = sense.ascq,
            "scsi command failed"
        );
    }
    result
}

fn dispatch(exec: &mut Exec<'_>) -> CmdResult {
    use opcode::*;
    let op = exec.cdb.opcode();
    let Some(len) = cdb_len(op) else {
        return Err(Sense::invalid_opcode().into());
    };
    if exec.cdb.len < len {
        return Err(Sense::invalid_field_in_cdb(0).into());
    }
    // CONTROL byte: NACA (bit 2) asks for ACA handling, which we do not implement
    // (SPC-4 §7.2.1: then INVALID FIELD IN CDB).
    if exec.cdb.byte(len - 1) & 0x04 != 0 {
        return Err(Sense::invalid_field_in_cdb((len - 1) as u16).into());
    }
    match op {
        TEST_UNIT_READY => Ok(Transferred::default()),
        REQUEST_SENSE => misc::request_sense(exec),
        INQUIRY => inquiry::inquiry(exec),
        MODE_SENSE_6 => mode_sense::mode_sense(exec, false),
        MODE_SENSE_10 => mode_sense::mode_sense(exec, true),
        START_STOP_UNIT => misc::start_stop_unit(exec),
        PREVENT_ALLOW_MEDIUM_REMOVAL => misc::prevent_allow_medium_removal(exec),
        READ_CAPACITY_10 => capacity::read_capacity_10(exec),
        SERVICE_ACTION_IN_16 => capacity::service_action_in_16(exec),
        READ_6 | READ_10 | READ_16 => rw::read(exec),
        WRITE_6 | WRITE_10 | WRITE_16 => rw::write(exec),
        SYNCHRONIZE_CACHE_10 | SYNCHRONIZE_CACHE_16 => rw::synchronize_cache(exec),
        UNMAP => unmap::unmap(exec),
        WRITE_SAME_10 | WRITE_SAME_16 => unmap::write_same(exec),
        REPORT_LUNS => misc::report_luns(exec),
        _ => Err(Sense::invalid_opcode().into()),
    }
}
