//! One request-queue chain in, one completed response out: parse, address the LUN, run
//! the command and write `virtio_scsi_cmd_resp`.

use std::sync::{Mutex, MutexGuard};

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_OK, VIRTIO_SCSI_S_OVERRUN,
};
use virtio_queue::desc::split::Descriptor;

use super::commands::{execute, CmdError, DataIn, DataOut, Exec, Transferred};
use super::lun::{parse_lun, Lun};
use super::request::{
    parse_cmd_request, write_cmd_response, Area, Chain, ChainError, CmdResponse, CMD_REQ_FIXED_LEN,
    CMD_RESP_FIXED_LEN,
};
use super::sense::{STATUS_CHECK_CONDITION, STATUS_GOOD};
use crate::virtio::GuestMemoryMmap;

/// The driver-settable sizes of the request and response headers (config space
/// `cdb_size` and `sense_size`), fixed for the life of one activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderSizes {
    pub cdb_size: u32,
    pub sense_size: u32,
}

/// Lock a LUN even if a previous holder panicked: its state is a backend handle and
/// counters, which a panic cannot leave half-updated in a way that matters more than
/// losing the disk.
pub(crate) fn lock(lun: &Mutex<Lun>) -> MutexGuard<'_, Lun> {
    lun.lock().unwrap_or_else(|e| e.into_inner())
}

/// The LUN an 8-byte LUN field addresses, if it exists (target `i` = disk `i`, LUN 0).
pub(crate) fn find_lun<'a>(luns: &'a [Mutex<Lun>], raw: &[u8; 8]) -> Option<&'a Mutex<Lun>> {
    let addr = parse_lun(raw)?;
    if addr.lun != 0 {
        return None;
    }
    luns.get(usize::from(addr.target))
}

/// Process one request-queue chain; returns the used length (bytes made valid in the
/// device-writable part).
pub(crate) fn process_command(
    mem: &GuestMemoryMmap,
    descs: impl IntoIterator<Item = Descriptor>,
    luns: &[Mutex<Lun>],
    sizes: HeaderSizes,
    scratch: &mut Vec<u8>,
) -> u32 {
    let chain = Chain::parse(mem, descs);
    let resp_len = CMD_RESP_FIXED_LEN + u64::from(sizes.sense_size);
    if let Some(e) = chain.error {
        return fail(&chain.writable, &e);
    }
    let req = match parse_cmd_request(&chain.readable, sizes.cdb_size) {
        Ok(req) => req,
        Err(e) => return fail(&chain.writable, &e),
    };
    if chain.writable.len() < resp_len {
        let e = ChainError::ShortResponse {
            need: resp_len,
            have: chain.writable.len(),
        };
        return fail(&chain.writable, &e);
    }
    let data_out = chain
        .readable
        .tail(CMD_REQ_FIXED_LEN + u64::from(sizes.cdb_size));
    let mut data_in = chain.writable.tail(resp_len);
    let in_len = DataIn::len(&data_in);
    let out_len = DataOut::len(&data_out);

    let Some(lun) = find_lun(luns, &req.lun) else {
        tracing::trace!(lun = ?req.lun, tag = req.tag, "scsi request for a missing target/LUN");
        let resp = CmdResponse {
            response: VIRTIO_SCSI_S_BAD_TARGET as u8,
            ..Default::default()
        };
        return complete(&chain.writable, sizes, &resp, 0);
    };
    let mut lun = lock(lun);
    let result = execute(&mut Exec {
        lun: &mut lun,
        cdb: &req.cdb,
        data_out: &data_out,
        data_in: &mut data_in,
        scratch,
    });
    drop(lun);

    // resid: what the driver's buffer (data-in if it gave one, else data-out) held
    // beyond what the command moved.
    let resid = |t: Transferred| {
        let r = if in_len > 0 {
            in_len.saturating_sub(t.data_in)
        } else {
            out_len.saturating_sub(t.data_out)
        };
        u32::try_from(r).unwrap_or(u32::MAX)
    };
    let sense;
    let (resp, data_in_written) = match result {
        Ok(t) => (
            CmdResponse {
                resid: resid(t),
                status: STATUS_GOOD,
                response: VIRTIO_SCSI_S_OK as u8,
                sense: &[],
            },
            t.data_in,
        ),
        Err(CmdError::Check(s)) => {
            sense = s.to_fixed();
            (
                CmdResponse {
                    resid: resid(Transferred::default()),
                    status: STATUS_CHECK_CONDITION,
                    response: VIRTIO_SCSI_S_OK as u8,
                    sense: &sense,
                },
                0,
            )
        }
        Err(CmdError::Overrun) => (
            CmdResponse {
                response: VIRTIO_SCSI_S_OVERRUN as u8,
                ..Default::default()
            },
            0,
        ),
        Err(CmdError::Guest) => (
            CmdResponse {
                response: VIRTIO_SCSI_S_FAILURE as u8,
                ..Default::default()
            },
            0,
        ),
    };
    complete(&chain.writable, sizes, &resp, data_in_written)
}

/// Write a full response; the used length covers the header and the data-in written.
fn complete(area: &Area<'_>, sizes: HeaderSizes, resp: &CmdResponse<'_>, data_in: u64) -> u32 {
    match write_cmd_response(area, sizes.sense_size, resp) {
        Ok(()) => {
            let used = CMD_RESP_FIXED_LEN + u64::from(sizes.sense_size) + data_in;
            u32::try_from(used.min(area.len())).unwrap_or(u32::MAX)
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot write scsi response");
            0
        }
    }
}

/// Fail a malformed chain with VIRTIO_SCSI_S_FAILURE if its writable part can hold the
/// fixed response fields; otherwise return it with nothing written.
fn fail(writable: &Area<'_>, e: &ChainError) -> u32 {
    tracing::debug!(error = %e, "malformed scsi request");
    if writable.len() < CMD_RESP_FIXED_LEN {
        return 0;
    }
    let resp = CmdResponse {
        response: VIRTIO_SCSI_S_FAILURE as u8,
        ..Default::default()
    };
    // Only the fixed fields: the sense area may be what is missing.
    match write_cmd_response(writable, 0, &resp) {
        Ok(()) => CMD_RESP_FIXED_LEN as u32,
        Err(_) => 0,
    }
}
