//! The destination side, on its own thread (`migrate-recv`): accept one source, check
//! its hello, fill fresh guest memory with the pages it sends, and hand the machine
//! state to the control loop, which builds and starts the VM.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use oxvm_api::control::{MigrationPhase, MigrationStatus};
use oxvm_api::VmConfig;
use oxvm_arch::memory::RamLayout;
use oxvm_devices::virtio::GuestMemoryMmap;

use super::pages::{store_pages, store_zero_pages};
use super::protocol::{
    check_hello, parse_json, read_frame, split_pages, split_zero_pages, write_json, Hello, Reason,
    Tag,
};
use super::transport::{Listener, Stream};
use super::MigrationError;
use crate::memory::{allocate_guest_memory, is_sealed_memfd, map_file_regions, SharedRegion};

/// What the receiver hands the control loop once all memory and the state are in.
pub struct Incoming {
    pub config: VmConfig,
    pub memory: GuestMemoryMmap,
    /// The encoded machine state (the snapshot container, kind `migration`).
    pub state: Vec<u8>,
    /// Answer: `Ok` once the VM is built here (paused until [`FromReceiver::Go`]).
    pub started: mpsc::SyncSender<Result<(), String>>,
}

pub enum FromReceiver {
    /// Build the VM (paused) from what arrived, and answer through `started`.
    Ready(Box<Incoming>),
    /// The source let go of the guest: run it, then answer whether it runs.
    Go(mpsc::SyncSender<bool>),
    /// The incoming migration failed; this process has nothing to run.
    Failed(MigrationError),
}

/// Computes the CPUID a vCPU of this host gets for a config.
pub type CpuidProbe =
    Box<dyn Fn(&VmConfig) -> Result<Vec<kvm_bindings::kvm_cpuid_entry2>, String> + Send>;

pub struct ReceiveJob {
    pub listener: Listener,
    pub accept_timeout: Duration,
    /// The CPUID a vCPU of this host gets for a config (for the hello check).
    pub host_cpuid: CpuidProbe,
    pub status: Arc<Mutex<MigrationStatus>>,
    pub notify: Box<dyn Fn(FromReceiver) + Send>,
}

fn update(status: &Mutex<MigrationStatus>, f: impl FnOnce(&mut MigrationStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

pub fn run(job: ReceiveJob) {
    if let Err(e) = receive(&job) {
        update(&job.status, |s| {
            s.phase = MigrationPhase::Failed;
            s.error = Some(e.to_string());
        });
        (job.notify)(FromReceiver::Failed(e));
    }
}

fn accept(job: &ReceiveJob) -> Result<Box<dyn Stream>, MigrationError> {
    let deadline = Instant::now() + job.accept_timeout;
    job.listener
        .set_nonblocking(true)
        .map_err(|source| MigrationError::Io {
            what: "listening".into(),
            source,
        })?;
    loop {
        match job.listener.accept() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(MigrationError::Protocol(format!(
                        "no source connected within {} s",
                        job.accept_timeout.as_secs()
                    )));
                }
                // Waiting for a peer with a deadline: std has no accept timeout.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(MigrationError::Io {
                    what: "accepting".into(),
                    source,
                })
            }
        }
    }
}

fn refuse(stream: &mut dyn Stream, reason: String) -> MigrationError {
    let _ = write_json(
        stream,
        Tag::Refuse,
        &Reason {
            reason: reason.clone(),
        },
    );
    MigrationError::Refused(reason)
}

/// Local migration: map the source's memfd, after checking that its layout is the one
/// this VM's RAM has (the same file offsets a saved memory file uses).
fn take_shared_memory(
    stream: &mut dyn Stream,
    ram: &RamLayout,
) -> Result<GuestMemoryMmap, MigrationError> {
    let file = stream.recv_file().map_err(|source| MigrationError::Io {
        what: "receiving the guest memory".into(),
        source,
    })?;
    let layout: Vec<SharedRegion> = match read_frame(stream)? {
        (Tag::SharedMemory, p) => parse_json(&p, "shared memory layout")?,
        (t, _) => {
            return Err(MigrationError::Protocol(format!(
                "expected the shared memory layout, got {t:?}"
            )))
        }
    };
    let regions = ram.regions();
    let expected: Vec<SharedRegion> = regions
        .iter()
        .map(|(a, size)| SharedRegion {
            gpa: a.0,
            size: *size as u64,
            offset: a.0,
        })
        .collect();
    if layout != expected {
        return Err(MigrationError::Protocol(format!(
            "shared memory layout {layout:?} is not this VM's {expected:?}"
        )));
    }
    // Only a memfd whose size is sealed: a file the peer could shrink later would make
    // guest memory fault under us.
    if !is_sealed_memfd(&file) {
        return Err(MigrationError::Protocol(
            "the shared guest memory is not a size-sealed memfd".into(),
        ));
    }
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let needed = expected
        .iter()
        .map(|r| r.offset + r.size)
        .max()
        .unwrap_or(0);
    if len != needed {
        return Err(MigrationError::Protocol(format!(
            "the shared memory file has {len} bytes, the VM needs {needed}"
        )));
    }
    map_file_regions(Arc::new(file), &regions, libc::MAP_SHARED)
        .map_err(|e| MigrationError::Vmm(format!("mapping the shared guest memory: {e}")))
}

fn receive(job: &ReceiveJob) -> Result<(), MigrationError> {
    let mut stream = accept(job)?;
    // A source that stops sending must not hold this process forever.
    let _ = stream.set_timeout(Some(Duration::from_secs(60)));
    let hello: Hello = match read_frame(&mut *stream)? {
        (Tag::Hello, p) => parse_json(&p, "hello")?,
        (t, _) => {
            return Err(MigrationError::Protocol(format!(
                "expected hello, got {t:?}"
            )))
        }
    };
    if let Err(reason) = check_hello(&hello) {
        return Err(refuse(&mut *stream, reason));
    }
    if let Err(e) = hello.config.validate() {
        return Err(refuse(&mut *stream, format!("the VM config: {e}")));
    }
    let here = (job.host_cpuid)(&hello.config).map_err(MigrationError::Vmm)?;
    if let Err(reason) = crate::vcpu::state::check_cpuid(&hello.cpuid, &here) {
        return Err(refuse(&mut *stream, reason));
    }
    if hello.local && !job.listener.is_unix() {
        return Err(refuse(
            &mut *stream,
            "local: a local migration needs a unix: connection (the guest memory comes as a \
             file descriptor)"
                .into(),
        ));
    }
    let ram = RamLayout::new(hello.config.memory_mib << 20);
    let memory = if hello.local {
        None
    } else {
        Some(
            allocate_guest_memory(&ram, hello.config.memory_shared)
                .map_err(|e| MigrationError::Vmm(format!("guest memory: {e}")))?,
        )
    };
    write_json(&mut *stream, Tag::Accept, &serde_json::json!({}))?;
    update(&job.status, |s| s.phase = MigrationPhase::Precopy);
    let memory = match memory {
        Some(m) => m,
        None => take_shared_memory(&mut *stream, &ram)?,
    };

    let state = loop {
        match read_frame(&mut *stream)? {
            (Tag::Pages, p) => {
                let pages = split_pages(&p)?;
                store_pages(&memory, &pages)?;
                update(&job.status, |s| {
                    s.pages_sent += pages.len() as u64;
                    s.bytes_sent += p.len() as u64;
                });
            }
            (Tag::ZeroPages, p) => store_zero_pages(&memory, &split_zero_pages(&p)?)?,
            (Tag::State, p) => break p,
            (t, _) => return Err(MigrationError::Protocol(format!("unexpected {t:?}"))),
        }
    };
    update(&job.status, |s| s.phase = MigrationPhase::StopAndCopy);
    let (tx, rx) = mpsc::sync_channel(1);
    (job.notify)(FromReceiver::Ready(Box::new(Incoming {
        config: hello.config,
        memory,
        state,
        started: tx,
    })));
    match rx.recv() {
        Ok(Ok(())) => {
            // Built and paused: run it only when the source lets go of it.
            write_json(&mut *stream, Tag::Built, &serde_json::json!({}))?;
            match read_frame(&mut *stream)? {
                (Tag::Go, _) => {}
                (t, _) => return Err(MigrationError::Protocol(format!("expected go, got {t:?}"))),
            }
            update(&job.status, |s| s.phase = MigrationPhase::Completed);
            // `Done` once the guest runs, so the source's downtime covers the resume.
            let (tx, rx) = mpsc::sync_channel(1);
            (job.notify)(FromReceiver::Go(tx));
            // No timeout: the control loop answers (or drops the sender) whatever happens,
            // and giving up here while it starts the guest would stop a running guest.
            if rx.recv() != Ok(true) {
                return Err(MigrationError::Vmm(
                    "the VM could not be started here after the source let go".into(),
                ));
            }
            // The guest is ours now; a lost `Done` leaves the source paused, not running.
            if let Err(e) = write_json(&mut *stream, Tag::Done, &serde_json::json!({})) {
                tracing::warn!("the guest runs here, but the source did not get our done: {e}");
            }
            Ok(())
        }
        Ok(Err(reason)) => {
            let _ = write_json(
                &mut *stream,
                Tag::Failed,
                &Reason {
                    reason: reason.clone(),
                },
            );
            Err(MigrationError::Vmm(reason))
        }
        Err(_) => Err(MigrationError::Vmm("the control loop went away".into())),
    }
}
