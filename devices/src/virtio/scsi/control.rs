//! The control queue (virtio 1.2 §5.6.6.2): task management functions and
//! asynchronous-notification queries.
//!
//! One worker runs every queue in order, and a command is complete before the next
//! chain is looked at, so by the time a TMF is processed no task of the nexus is in
//! flight: aborts and resets succeed trivially (FUNCTION COMPLETE) and queries find
//! nothing. No asynchronous events are supported, so AN requests get an empty
//! `event_actual`.

use std::sync::Mutex;

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_OK, VIRTIO_SCSI_T_AN_QUERY, VIRTIO_SCSI_T_AN_SUBSCRIBE, VIRTIO_SCSI_T_TMF,
    VIRTIO_SCSI_T_TMF_ABORT_TASK, VIRTIO_SCSI_T_TMF_ABORT_TASK_SET,
    VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET, VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET,
    VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, VIRTIO_SCSI_T_TMF_QUERY_TASK,
    VIRTIO_SCSI_T_TMF_QUERY_TASK_SET,
};
use virtio_queue::desc::split::Descriptor;

use super::lun::Lun;
use super::process::find_lun;
use super::request::{Area, Chain};
use crate::virtio::GuestMemoryMmap;

/// `virtio_scsi_ctrl_tmf_req`: type, subtype, lun[8], tag.
const TMF_REQ_LEN: usize = 24;
/// `virtio_scsi_ctrl_an_req`: type, lun[8], event_requested.
const AN_REQ_LEN: usize = 16;
/// `virtio_scsi_ctrl_an_resp`: event_actual, response.
const AN_RESP_LEN: usize = 5;

/// VIRTIO_SCSI_S_FUNCTION_COMPLETE shares the value of VIRTIO_SCSI_S_OK.
const FUNCTION_COMPLETE: u8 = VIRTIO_SCSI_S_OK as u8;

/// Process one control-queue chain; returns the used length.
pub(crate) fn process_control(
    mem: &GuestMemoryMmap,
    descs: impl IntoIterator<Item = Descriptor>,
    luns: &[Mutex<Lun>],
) -> u32 {
    let chain = Chain::parse(mem, descs);
    let mut req = [0u8; TMF_REQ_LEN];
    let have = usize::try_from(chain.readable.len()).unwrap_or(usize::MAX);
    let n = have.min(req.len());
    let readable_ok = chain.error.is_none() && chain.readable.read_at(0, &mut req[..n]).is_ok();
    let kind = u32::from_le_bytes([req[0], req[1], req[2], req[3]]);
    if let Some(e) = &chain.error {
        tracing::debug!(error = %e, "malformed scsi control request");
    }
    match kind {
        VIRTIO_SCSI_T_TMF if readable_ok && have >= TMF_REQ_LEN => {
            let subtype = u32::from_le_bytes([req[4], req[5], req[6], req[7]]);
            let mut lun = [0u8; 8];
            lun.copy_from_slice(&req[8..16]);
            let response = tmf(luns, subtype, &lun);
            respond(&chain.writable, &[response])
        }
        VIRTIO_SCSI_T_AN_QUERY | VIRTIO_SCSI_T_AN_SUBSCRIBE
            if readable_ok && have >= AN_REQ_LEN =>
        {
            let mut lun = [0u8; 8];
            lun.copy_from_slice(&req[4..12]);
            let mut resp = [0u8; AN_RESP_LEN];
            // event_actual = 0: no event class is supported.
            resp[4] = if find_lun(luns, &lun).is_some() {
                VIRTIO_SCSI_S_OK as u8
            } else {
                VIRTIO_SCSI_S_BAD_TARGET as u8
            };
            respond(&chain.writable, &resp)
        }
        // Unknown type, or a request too short for its type: the response byte comes
        // first in every control response, so FAILURE can still be reported.
        _ => respond(&chain.writable, &[VIRTIO_SCSI_S_FAILURE as u8]),
    }
}

/// The response of a task management function.
fn tmf(luns: &[Mutex<Lun>], subtype: u32, lun: &[u8; 8]) -> u8 {
    if find_lun(luns, lun).is_none() {
        return VIRTIO_SCSI_S_BAD_TARGET as u8;
    }
    match subtype {
        VIRTIO_SCSI_T_TMF_ABORT_TASK
        | VIRTIO_SCSI_T_TMF_ABORT_TASK_SET
        | VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET
        | VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET
        | VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET
        // QUERY: FUNCTION COMPLETE means "no such task" (SAM-5 §7.9, §7.10).
        | VIRTIO_SCSI_T_TMF_QUERY_TASK
        | VIRTIO_SCSI_T_TMF_QUERY_TASK_SET => FUNCTION_COMPLETE,
        // CLEAR ACA (no ACA support) and anything unknown.
        _ => VIRTIO_SCSI_S_FUNCTION_REJECTED as u8,
    }
}

/// Write `resp` at the start of the writable area if it fits; returns the used length.
fn respond(writable: &Area<'_>, resp: &[u8]) -> u32 {
    if writable.len() < resp.len() as u64 || writable.write_at(0, resp).is_err() {
        return 0;
    }
    resp.len() as u32
}
