//! The source side, on its own thread (`migrate-send`): hello, pre-copy rounds with
//! dirty tracking, then stop-and-copy, which the control loop performs (it owns the
//! vCPUs and devices) and hands back as the encoded machine state.

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use oxvm_api::control::{MigrateParams, MigrationPhase, MigrationStatus};
use oxvm_devices::virtio::GuestMemoryMmap;

use super::pages::{all_pages, send_pages, Sent};
use super::protocol::{parse_json, read_frame, write_frame, write_json, Hello, Reason, Tag};
use super::transport::{connect, Address, Stream};
use super::MigrationError;
use crate::memory::shared_memory;

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

/// How long sending `dirty` pages while the guest is paused will take, from the
/// round just sent (`sent` in `elapsed` seconds): each page is read and checked (the
/// round's time outside writes, per page read) and, as dirtied pages are data, sent
/// (its write time per data page). Round 0 reads every page of guest memory, mostly
/// zero, so a plain time per page or per byte would be off. The fixed cost of the stop
/// (pausing, draining the devices, the state, the destination's start: ~15 ms on the
/// PVM test machines) is not included.
fn expected_ms(dirty: usize, sent: Sent, elapsed: f64) -> f64 {
    let read_s = (elapsed - sent.write_s).max(0.0) / (sent.pages as f64).max(1.0);
    let write_s = if sent.data_pages > 0 {
        sent.write_s / sent.data_pages as f64
    } else {
        // Nothing was written this round: assume writing costs what reading did.
        read_s
    };
    dirty as f64 * (read_s + write_s) * 1000.0
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
    if job.hello.local {
        return hand_over_memory(job, &mut *stream);
    }
    // Round 0 sends everything; from then on only what was dirtied meanwhile.
    take_dirty(&job.vm, &job.mem)?;
    let mut round_start = Instant::now();
    let mut sent = send_pages(&mut *stream, &job.mem, &all, true)?;
    let mut totals = sent;
    let mut iteration = 0u32;
    let remaining = loop {
        let elapsed = round_start.elapsed().as_secs_f64().max(1e-3);
        let dirty = take_dirty(&job.vm, &job.mem)?;
        let expected_ms = expected_ms(dirty.len(), sent, elapsed);
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

    finish(job, &mut *stream, remaining, totals)
}

/// Local migration: pass the memfd holding guest memory and its layout, then stop
/// and hand the guest over; not a page is copied.
fn hand_over_memory(job: &SendJob, stream: &mut dyn Stream) -> Result<(), MigrationError> {
    let (file, layout) = shared_memory(&job.mem).ok_or_else(|| {
        MigrationError::Vmm("local: the guest memory is not a shared memfd".into())
    })?;
    stream
        .send_file(&file)
        .map_err(|source| MigrationError::Io {
            what: "passing the guest memory".into(),
            source,
        })?;
    write_json(stream, Tag::SharedMemory, &layout)?;
    finish(job, stream, BTreeSet::new(), Sent::default())
}

/// Stop-and-copy: the control loop pauses the guest and quiesces the devices; the last
/// dirty pages (none for a local migration) and the state go; then the two-step
/// hand-over.
fn finish(
    job: &SendJob,
    stream: &mut dyn Stream,
    remaining: BTreeSet<u64>,
    totals: Sent,
) -> Result<(), MigrationError> {
    update(&job.status, |s| s.phase = MigrationPhase::StopAndCopy);
    let paused_at = Instant::now();
    let (tx, rx) = mpsc::sync_channel(1);
    (job.notify)(ToControl::StopAndCopy(tx));
    let state = rx
        .recv()
        .map_err(|_| MigrationError::Vmm("the control loop went away".into()))?
        .map_err(MigrationError::Vmm)?;
    let fin = if job.hello.local {
        // The destination maps the very same memory: nothing to send.
        Sent::default()
    } else {
        let mut last = remaining;
        last.extend(take_dirty(&job.vm, &job.mem)?);
        let pages: Vec<u64> = last.into_iter().collect();
        send_pages(stream, &job.mem, &pages, false)?
    };
    write_frame(stream, Tag::State, &state)?;
    match read_frame(stream)? {
        (Tag::Built, _) => {}
        (Tag::Failed, p) => {
            return Err(MigrationError::DestinationFailed(
                parse_json::<Reason>(&p, "failure")?.reason,
            ))
        }
        (t, _) => {
            return Err(MigrationError::Protocol(format!(
                "expected built, got {t:?}"
            )))
        }
    }
    // From here on the guest may run on the destination: no way back.
    write_frame(stream, Tag::Go, &[])
        .and_then(|()| match read_frame(stream)? {
            (Tag::Done, _) => Ok(()),
            (t, _) => Err(MigrationError::Protocol(format!(
                "expected done, got {t:?}"
            ))),
        })
        .map_err(|e| MigrationError::Unconfirmed(e.to_string()))?;
    update(&job.status, |s| {
        s.phase = MigrationPhase::Completed;
        s.bytes_sent = totals.bytes + fin.bytes + state.len() as u64;
        s.pages_sent = totals.pages + fin.pages;
        s.remaining_pages = 0;
        s.downtime_ms = Some(paused_at.elapsed().as_millis() as u64);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::protocol::PAGE_SIZE;

    #[test]
    fn downtime_estimates() {
        // Round 0: 1000 pages read in 100 ms, 100 of them data whose writes took 50 ms:
        // 0.05 ms to read a page, 0.5 ms to write one.
        let round0 = Sent {
            pages: 1000,
            data_pages: 100,
            bytes: 100 * (PAGE_SIZE as u64 + 8),
            write_s: 0.05,
        };
        let e = expected_ms(10, round0, 0.1);
        assert!((5.4..=5.6).contains(&e), "{e}");
        // A round that wrote nothing: reading cost counts twice.
        let idle = Sent {
            pages: 100,
            ..Sent::default()
        };
        let e = expected_ms(10, idle, 0.01);
        assert!((1.9..=2.1).contains(&e), "{e}");
        // Nothing read at all must not divide by zero.
        assert_eq!(expected_ms(0, Sent::default(), 0.001), 0.0);
    }
}
