//! Live migration through the lifecycle. The migration threads move pages; the
//! control loop does what needs the machine: dirty logging on and off, the pause and
//! quiesce of stop-and-copy, the state, and on the destination building and starting
//! the received VM. A failed send leaves the source running as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use oxvm_api::control::{
    ActionReply, IncomingParams, MigrateParams, MigrationPhase, MigrationStatus,
};
use oxvm_api::{ApiError, ApiReply, VmState};
use vmm_sys_util::eventfd::EventFd;

use super::lifecycle::Lifecycle;
use super::VmExit;
use crate::error::VmmError;
use crate::machine::{Machine, Start};
use crate::machine_state::{MemorySource, RestoreSource, VmSnapshot};
use crate::migration::protocol::{Hello, MAGIC, PROTOCOL_VERSION};
use crate::migration::receiver::{self, FromReceiver, ReceiveJob};
use crate::migration::sender::{self, SendJob, ToControl};
use crate::migration::transport::{Address, Listener};
use crate::snapshot::{decode, encode, Kind};

/// Messages from the migration threads; each one is followed by a wake of the loop.
pub enum MigrationMsg {
    Send(ToControl),
    Receive(FromReceiver),
}

/// How migration threads reach the control loop.
#[derive(Clone)]
pub struct MigrationLink {
    tx: mpsc::Sender<MigrationMsg>,
    wake: Arc<EventFd>,
}

impl MigrationLink {
    pub fn new(tx: mpsc::Sender<MigrationMsg>, wake: EventFd) -> Self {
        MigrationLink {
            tx,
            wake: Arc::new(wake),
        }
    }

    fn post(&self, msg: MigrationMsg) {
        if self.tx.send(msg).is_ok() {
            if let Err(e) = self.wake.write(1) {
                tracing::error!("cannot wake the control loop: {e}");
            }
        }
    }
}

/// The migration this process takes part in.
pub struct Migration {
    pub status: Arc<Mutex<MigrationStatus>>,
    /// Source: the thread is still sending (actions are refused meanwhile).
    pub active: bool,
    /// Source: the guest is paused for stop-and-copy.
    pub stopped_for_copy: bool,
    /// Source: a client waiting for the end (`wait: true`).
    pub waiter: Option<mpsc::SyncSender<super::bridge::Reply>>,
    /// Destination: disk paths and tap names of this host, by id.
    pub overrides: (BTreeMap<String, PathBuf>, BTreeMap<String, String>),
}

impl Migration {
    fn new(status: Arc<Mutex<MigrationStatus>>) -> Self {
        Migration {
            status,
            active: true,
            stopped_for_copy: false,
            waiter: None,
            overrides: Default::default(),
        }
    }

    fn snapshot(&self) -> MigrationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tell a waiting client how it ended.
    fn answer_waiter(&mut self, result: Result<(), String>) {
        if let Some(w) = self.waiter.take() {
            let reply = match result {
                Ok(()) => Ok(ApiReply::Migration(Box::new(self.snapshot()))),
                Err(e) => Err(ApiError::internal(format!("migration failed: {e}"))),
            };
            let _ = w.send(reply);
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ApiError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| ApiError::internal(format!("cannot start the {name} thread: {e}")))
}

impl Lifecycle {
    pub(super) fn migration_status(&self) -> MigrationStatus {
        self.migration
            .as_ref()
            .map(Migration::snapshot)
            .unwrap_or_default()
    }

    pub(super) fn migration_active(&self) -> bool {
        self.migration.as_ref().is_some_and(|m| m.active)
    }

    pub(super) fn api_migrate(
        &mut self,
        p: MigrateParams,
        waiter: Option<mpsc::SyncSender<super::bridge::Reply>>,
    ) -> Result<ApiReply, ApiError> {
        if self.state != VmState::Running || self.migration_active() {
            return Err(ApiError::conflict(format!(
                "cannot migrate a VM that is {}{} (running only)",
                self.state,
                if self.migration_active() {
                    " and already migrating"
                } else {
                    ""
                }
            )));
        }
        let to = Address::parse(&p.to).map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
        let (Some(machine), Some(cfg)) = (self.machine.as_ref(), self.cfg.as_ref()) else {
            return Err(ApiError::internal("no machine to migrate"));
        };
        let local = p.local;
        if local {
            if !matches!(to, Address::Unix(_)) {
                return Err(ApiError::bad_request(
                    "local: needs a unix: address (the guest memory is handed over as a \
                     file descriptor, which only a Unix socket carries)",
                ));
            }
            if crate::memory::shared_memory(&machine.mem).is_none() {
                return Err(ApiError::bad_request(
                    "local: the guest memory is not shared: set memory_shared in the VM \
                     config (a lazily restored VM's memory is a private file mapping)",
                ));
            }
        } else {
            // Pre-copy needs to know what the guest writes; a local hand-over does not.
            crate::memory::set_dirty_logging(&machine.vm, &machine.mem, true)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        let status = Arc::new(Mutex::new(MigrationStatus {
            phase: MigrationPhase::Precopy,
            ..Default::default()
        }));
        let link = self.migration_link.clone();
        let job = SendJob {
            to,
            params: p,
            hello: Hello {
                magic: MAGIC.into(),
                protocol: PROTOCOL_VERSION,
                oxvm_version: env!("CARGO_PKG_VERSION").into(),
                config: cfg.clone(),
                cpuid: machine.guest_cpuid.clone(),
                local,
            },
            mem: machine.mem.clone(),
            vm: machine.vm.clone(),
            status: status.clone(),
            notify: Box::new(move |m| link.post(MigrationMsg::Send(m))),
        };
        spawn("migrate-send", move || sender::run(job))?;
        let mut m = Migration::new(status);
        m.waiter = waiter;
        self.migration = Some(m);
        self.last_error = None;
        Ok(ApiReply::Action(ActionReply { state: self.state }))
    }

    pub(super) fn api_incoming(&mut self, p: IncomingParams) -> Result<ApiReply, ApiError> {
        if self.state != VmState::Empty || self.migration.is_some() {
            return Err(ApiError::conflict(format!(
                "an incoming migration needs an empty `oxvm serve` process; this one is {}",
                self.state
            )));
        }
        let addr =
            Address::parse(&p.listen).map_err(|e| ApiError::bad_request(format!("listen: {e}")))?;
        let listener =
            Listener::bind(&addr).map_err(|e| ApiError::bad_request(format!("listen: {e}")))?;
        let status = Arc::new(Mutex::new(MigrationStatus {
            phase: MigrationPhase::Listening,
            ..Default::default()
        }));
        let link = self.migration_link.clone();
        let job = ReceiveJob {
            listener,
            accept_timeout: Duration::from_secs(p.timeout_s),
            host_cpuid: Box::new(|cfg| {
                crate::machine::probe_guest_cpuid(cfg).map_err(|e| e.to_string())
            }),
            status: status.clone(),
            notify: Box::new(move |m| link.post(MigrationMsg::Receive(m))),
        };
        spawn("migrate-recv", move || receiver::run(job))?;
        tracing::info!("waiting for an incoming migration on {addr}");
        let mut m = Migration::new(status);
        m.overrides = (p.disks, p.taps);
        self.migration = Some(m);
        Ok(ApiReply::Action(ActionReply { state: self.state }))
    }

    pub fn on_migration(&mut self, msg: MigrationMsg) {
        match msg {
            MigrationMsg::Send(ToControl::StopAndCopy(reply)) => {
                let r = self.stop_for_copy();
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            MigrationMsg::Send(ToControl::SendFinished(Ok(()))) => {
                tracing::info!("migrated: the destination runs the guest");
                if let Some(m) = self.migration.as_mut() {
                    m.active = false;
                    m.answer_waiter(Ok(()));
                }
                self.stop(VmExit::Migrated);
            }
            MigrationMsg::Send(ToControl::SendFinished(Err(e))) => self.migration_failed(e),
            MigrationMsg::Receive(FromReceiver::Ready(incoming)) => {
                let r = self.start_incoming(&incoming.config, incoming.memory, &incoming.state);
                let _ = incoming
                    .started
                    .send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    self.fail(e);
                }
            }
            MigrationMsg::Receive(FromReceiver::Go(done)) => {
                if let Some(m) = self.migration.as_mut() {
                    m.active = false;
                }
                // Only now may the devices touch guest memory, disks and taps.
                if let Some(Err(e)) = self.machine.as_mut().map(Machine::resume_devices) {
                    // No `done`: the source stays paused and can take the guest back,
                    // which never ran here.
                    let _ = done.send(false);
                    return self.fail(e);
                }
                self.resume_vcpus();
                let _ = done.send(true);
                tracing::info!("incoming migration complete: the guest runs here");
            }
            MigrationMsg::Receive(FromReceiver::Failed(e)) => {
                self.fail(VmmError::Device(format!("incoming migration: {e}")));
            }
        }
    }

    /// Pause, quiesce, take the state; the guest stays paused until the end.
    fn stop_for_copy(&mut self) -> Result<Vec<u8>, VmmError> {
        let (Some(machine), Some(vcpus), Some(cfg)) = (
            self.machine.as_mut(),
            self.vcpus.as_ref(),
            self.cfg.as_ref(),
        ) else {
            return Err(VmmError::Device("no machine".into()));
        };
        vcpus.pause();
        if let Some(m) = self.migration.as_mut() {
            m.stopped_for_copy = true;
        }
        machine.quiesce_devices()?;
        // The destination opens the same disk images: everything must be on them.
        machine.flush_disks()?;
        let snap = machine.save_state(cfg, vcpus)?;
        encode(Kind::Migration, &snap)
            .map_err(|e| VmmError::Device(format!("encoding the state: {e}")))
    }

    /// The source goes on as before the migration, unless the destination may have
    /// the guest already: then it stays paused, its devices drained.
    fn migration_failed(&mut self, e: crate::migration::MigrationError) {
        if matches!(e, crate::migration::MigrationError::Unconfirmed(_)) {
            tracing::error!("{e}");
            if let Some(m) = self.migration.as_mut() {
                m.active = false;
                m.stopped_for_copy = false;
                m.answer_waiter(Err(e.to_string()));
            }
            if let Some(machine) = self.machine.as_ref() {
                if let Err(e) = crate::memory::set_dirty_logging(&machine.vm, &machine.mem, false) {
                    tracing::warn!("turning dirty logging off: {e}");
                }
            }
            self.devices_held = true;
            self.state = VmState::Paused;
            self.last_error = Some(format!("migration: {e}"));
            return;
        }
        tracing::warn!("migration failed, the VM keeps running here: {e}");
        let stopped = self
            .migration
            .as_mut()
            .map(|m| {
                m.active = false;
                m.answer_waiter(Err(e.to_string()));
                std::mem::take(&mut m.stopped_for_copy)
            })
            .unwrap_or(false);
        if let Some(machine) = self.machine.as_mut() {
            if let Err(e) = crate::memory::set_dirty_logging(&machine.vm, &machine.mem, false) {
                tracing::warn!("turning dirty logging off: {e}");
            }
            if stopped {
                if let Err(e) = machine.resume_devices() {
                    return self.fail(e);
                }
            }
        }
        if stopped {
            self.resume_vcpus();
        }
        self.last_error = Some(format!("migration failed: {e}"));
    }

    fn start_incoming(
        &mut self,
        config: &oxvm_api::VmConfig,
        memory: oxvm_devices::virtio::GuestMemoryMmap,
        state: &[u8],
    ) -> Result<(), VmmError> {
        let (header, snap): (_, VmSnapshot) = decode(state, Path::new("<migration stream>"))?;
        if header.kind != Kind::Migration {
            return Err(VmmError::Device(
                "the migration stream holds a snapshot, not a migration state".into(),
            ));
        }
        if &snap.config != config {
            return Err(VmmError::Device(
                "the state's VM config differs from the hello's".into(),
            ));
        }
        let mut snap = snap;
        if let Some(m) = &self.migration {
            super::persist::apply_overrides(&mut snap.config, &m.overrides.0, &m.overrides.1)?;
        }
        let src = RestoreSource {
            state: &snap,
            memory: MemorySource::Filled(memory),
        };
        self.create_with(snap.config.clone(), |kvm, cfg, events| {
            Machine::build_from(kvm, cfg, events, Start::Restore(&src))
        })?;
        // Paused until the source says go (see `migration::protocol`).
        self.start_vcpus(true)?;
        tracing::info!("incoming migration: the VM is built, waiting for the source to let go");
        Ok(())
    }
}
