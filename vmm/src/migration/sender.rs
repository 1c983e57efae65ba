//! The source side, on its own thread (`migrate-send`): hello, pre-copy rounds with
//! dirty tracking, then stop-and-copy, which the control loop performs (it owns the
//! vCPUs and devices) and hands back as the encoded machine state.

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use oxvm_api::control::{MigrateParams, MigrationPhase, MigrationStatus};
use oxvm_devices::virtio::GuestMemoryMmap;

use super::pages::{all_pages, send_pages};
use super::protocol::{
    parse_json, read_frame, write_frame, write_json, Hello, Reason, Tag, PAGE_SIZE,
};
use super::transport::{connect, Address};
use super::MigrationError;

/// Messages from the migration thread to the control loop.
pub enum ToControl {
    /// Pause the guest, quiesce the devices and send back the encoded state.
    StopAndCopy(mpsc::SyncSender<Result<Vec<u8>, String>>),
    /// The migration is over: `Ok` = the destination runs the guest.
    SendFinished(Result<(), MigrationError>),
}

pub struct SendJob {
    pub to: Address,
    pub params: MigrateParams,
    pub hello: Hello,
    pub mem: GuestMemoryMmap,
    pub vm: Arc<VmFd>,
    pub status: Arc<Mutex<MigrationStatus>>,
    /// Wakes the control loop after each message.
    pub notify: Box<dyn Fn(ToControl) + Send>,
}

fn update(status: &Mutex<MigrationStatus>, f: impl FnOnce(&mut MigrationStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Pages dirtied since the last call: by vCPUs (KVM's log) and by the VMM's own
/// device threads (vm-memory's bitmaps).
fn take_dirty(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<BTreeSet<u64>, MigrationError> {
    let mut set: BTreeSet<u64> = super::dirty::take_kvm_dirty(vm, mem)
        .map_err(|e| MigrationError::Vmm(e.to_string()))?
        .into_iter()
        .collect();
    set.extend(super::dirty::take_bitmap_dirty(mem));
    Ok(set)
}

pub fn run(job: SendJob) {
    let result = send(&job);
    if let Err(e) = &result {
        update(&job.status, |s| {
            s.phase = MigrationPhase::Failed;
            s.error = Some(e.to_string());
        });
    }
    (job.notify)(ToControl::SendFinished(result));
}

fn send(job: &SendJob) -> Result<(), MigrationError> {
    let mut stream = connect(&job.to)?;
    // A destination that stops answering must not hold the source forever.
    let _ = stream.set_timeout(Some(Duration::from_secs(60)));
    write_json(&mut *stream, Tag::Hello, &job.hello)?;
    match read_frame(&mut *stream)? {
        (Tag::Accept, _) => {}
        (Tag::Refuse, p) => {
            return Err(MigrationError::Refused(
                parse_json::<Reason>(&p, "refusal")?.reason,
            ))
        }
        (t, _) => {
            return Err(MigrationError::Protocol(format!(
                "expected accept, got {t:?}"
            )))
        }
    }
    let all = all_pages(&job.mem);
    update(&job.status, |s| {
        s.total_pages = all.len() as u64;
        s.phase = MigrationPhase::Precopy;
    });
    // Round 0 sends everything; from then on only what was dirtied meanwhile.
    take_dirty(&job.vm, &job.mem)?;
    let mut round_start = Instant::now();
    let mut sent = send_pages(&mut *stream, &job.mem, &all, true)?;
    let mut totals = sent;
    let mut iteration = 0u32;
    let remaining = loop {
        let elapsed = round_start.elapsed().as_secs_f64().max(1e-3);
        let bandwidth = (sent.bytes as f64 / elapsed).max(1.0);
        let dirty = take_dirty(&job.vm, &job.mem)?;
        let expected_ms = (dirty.len() * (PAGE_SIZE + 8)) as f64 / bandwidth * 1000.0;
        update(&job.status, |s| {
            s.iteration = iteration;
            s.bytes_sent = totals.bytes;
            s.pages_sent = totals.pages;
            s.dirty_pages_per_s = (dirty.len() as f64 / elapsed) as u64;
            s.remaining_pages = dirty.len() as u64;
            s.expected_downtime_ms = expected_ms as u64;
        });
        if expected_ms <= job.params.downtime_ms as f64 || iteration >= job.params.max_iterations {
            break dirty;
        }
        iteration += 1;
        round_start = Instant::now();
        let pages: Vec<u64> = dirty.into_iter().collect();
        sent = send_pages(&mut *stream, &job.mem, &pages, false)?;
        totals.pages += sent.pages;
        totals.bytes += sent.bytes;
    };

    // Stop-and-copy: the control loop pauses the guest and quiesces the devices.
    update(&job.status, |s| s.phase = MigrationPhase::StopAndCopy);
    let paused_at = Instant::now();
    let (tx, rx) = mpsc::sync_channel(1);
    (job.notify)(ToControl::StopAndCopy(tx));
    let state = rx
        .recv()
        .map_err(|_| MigrationError::Vmm("the control loop went away".into()))?
        .map_err(MigrationError::Vmm)?;
    let mut last = remaining;
    last.extend(take_dirty(&job.vm, &job.mem)?);
    let pages: Vec<u64> = last.into_iter().collect();
    let fin = send_pages(&mut *stream, &job.mem, &pages, false)?;
    write_frame(&mut *stream, Tag::State, &state)?;
    match read_frame(&mut *stream)? {
        (Tag::Done, _) => {}
        (Tag::Failed, p) => {
            return Err(MigrationError::DestinationFailed(
                parse_json::<Reason>(&p, "failure")?.reason,
            ))
        }
        (t, _) => {
            return Err(MigrationError::Protocol(format!(
                "expected done, got {t:?}"
            )))
        }
    }
    update(&job.status, |s| {
        s.phase = MigrationPhase::Completed;
        s.bytes_sent = totals.bytes + fin.bytes + state.len() as u64;
        s.pages_sent = totals.pages + fin.pages;
        s.remaining_pages = 0;
        s.downtime_ms = Some(paused_at.elapsed().as_millis() as u64);
    });
    Ok(())
}
