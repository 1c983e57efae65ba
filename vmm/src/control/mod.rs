//! The VM process's control loop on the main thread. It owns the VM (see
//! [`lifecycle`]) and waits on everything that can change its course: guest power-off
//! and reset, a failed vCPU, stop signals, the shutdown timer and API requests, which
//! the API threads pass in through [`bridge`].

mod actions;
mod bridge;
mod counters;
mod lifecycle;
mod migrate;
mod persist;
mod snapshots;
mod watcher;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use kvm_ioctls::Kvm;
use oxvm_api::{VmConfig, VmState};
use vmm_sys_util::timerfd::TimerFd;

use crate::error::VmmError;
use crate::events::VmEvents;
use crate::signals;
use lifecycle::Lifecycle;
use watcher::{ControlEvent, Watcher};

/// How a VM process ended (a failed vCPU is an `Err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (by itself, through the API's shutdown, or after a stop
    /// signal it honoured).
    PowerOff,
    /// The guest reset and `on_reboot` is `exit`.
    Reboot,
    /// The API's `destroy` (or a forced shutdown).
    Destroyed,
    /// Saved with `stop` (the state is on disk; `oxvm restore` continues it).
    Saved,
    /// Migrated: the destination runs the guest now.
    Migrated,
    /// A stop signal ended the VM without the guest powering off (its number).
    Signal(i32),
}

/// What `oxvm run` and `oxvm serve` ask of the VMM.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The VM to boot at once (`oxvm run`); `None` waits for one over the API
    /// (`oxvm serve`).
    pub config: Option<VmConfig>,
    /// Serve the control API here (overrides `config.api_socket`).
    pub api_socket: Option<PathBuf>,
    /// Restore a saved VM instead of booting one (`oxvm restore`).
    pub restore: Option<oxvm_api::control::RestoreParams>,
}

/// Boot `cfg` and run it until it ends, without an API socket unless the config has one.
pub fn run_vm(cfg: &VmConfig) -> Result<VmExit, VmmError> {
    run(RunOptions {
        config: Some(cfg.clone()),
        api_socket: None,
        restore: None,
    })
}

/// Run a VM process: boot `opts.config` (or wait for one over the API) and serve the
/// control API when a socket is given. Returns when the VM has stopped. Must be called
/// on the main thread before any other thread is started (it blocks the stop signals
/// for the whole process).
pub fn run(opts: RunOptions) -> Result<VmExit, VmmError> {
    crate::thread_name::set_current(opts.config.as_ref().map_or("oxvm-serve", |c| &c.name));
    let signal_fd = signals::block_stop_signals()?;
    crate::vcpu::kick::install_kick_handler()?;
    let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;
    let events = VmEvents::new()?;
    let (bridge, api_rx, api_wake) = bridge::channel()?;
    let timer =
        Arc::new(Mutex::new(TimerFd::new().map_err(|e| {
            VmmError::Io(std::io::Error::from_raw_os_error(e.errno()))
        })?));
    let (migration_tx, migration_rx) = std::sync::mpsc::channel();
    let migration_wake = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?;
    let link = migrate::MigrationLink::new(migration_tx, migration_wake.try_clone()?);
    let watcher = Arc::new(Mutex::new(Watcher::new(
        events.try_clone()?,
        signal_fd,
        api_wake,
        migration_wake,
        timer.clone(),
    )));
    let mut manager = EventManager::<Arc<Mutex<Watcher>>>::new()
        .map_err(|e| VmmError::Device(format!("event loop: {e:?}")))?;
    manager.add_subscriber(watcher.clone());

    let mut life = Lifecycle::new(kvm, events, timer, link);
    let socket = opts
        .api_socket
        .clone()
        .or_else(|| opts.config.as_ref().and_then(|c| c.api_socket.clone()));
    let boot_now = opts.config.is_some();
    if let Some(cfg) = opts.config {
        // A VM that cannot be built fails before the socket appears.
        life.create(cfg)?;
    }
    if let Some(p) = &opts.restore {
        // Likewise a refused state file: nothing starts, no socket appears.
        life.restore(p)?;
    }
    let server = match socket {
        Some(path) => Some(
            oxvm_api::server::serve(&path, Arc::new(bridge))
                .map_err(|e| VmmError::Device(format!("API socket: {e}")))?,
        ),
        None => None,
    };
    if boot_now {
        life.boot()?;
    }

    loop {
        if let Err(e) = manager.run() {
            tracing::error!("event loop: {e:?}");
        }
        let batch = watcher.lock().unwrap_or_else(|e| e.into_inner()).take();
        let generation = life.generation();
        for event in batch {
            if event.raised_by_guest() && life.generation() != generation {
                // Raised by a machine this batch already tore down.
                continue;
            }
            dispatch(&mut life, event, &api_rx, &migration_rx);
            if life.state() == VmState::Stopped {
                break;
            }
        }
        if let Some(exit) = life.take_exit() {
            // Requests that raced the stop get their answer; then the channel closes
            // (later ones get 503) and the server waits for the answers to be written
            // before the socket goes.
            answer_api(&mut life, &api_rx);
            drop(api_rx);
            drop(server);
            return exit;
        }
    }
}

fn dispatch(
    life: &mut Lifecycle,
    event: ControlEvent,
    api_rx: &std::sync::mpsc::Receiver<bridge::Envelope>,
    migration_rx: &std::sync::mpsc::Receiver<migrate::MigrationMsg>,
) {
    match event {
        ControlEvent::PowerOff => life.on_power_off(),
        ControlEvent::GuestReset => life.on_guest_reset(),
        ControlEvent::Failed => life.on_vcpu_failed(),
        ControlEvent::Signal(s) => life.on_signal(s),
        ControlEvent::Dump => life.on_dump_request(),
        ControlEvent::ShutdownTimeout => life.on_shutdown_timeout(),
        ControlEvent::Api => answer_api(life, api_rx),
        ControlEvent::Migration => {
            while let Ok(msg) = migration_rx.try_recv() {
                life.on_migration(msg);
            }
        }
    }
}

fn answer_api(life: &mut Lifecycle, api_rx: &std::sync::mpsc::Receiver<bridge::Envelope>) {
    while let Ok((request, reply)) = api_rx.try_recv() {
        if let oxvm_api::ApiRequest::Migrate(p) = &request {
            if p.wait {
                // Answered when the migration ends (see `Lifecycle::on_migration`).
                if let Err(e) = life.api_migrate(p.clone(), Some(reply.clone())) {
                    let _ = reply.send(Err(e));
                }
                continue;
            }
        }
        // The client may have gone; its answer is then simply dropped.
        let _ = reply.send(life.handle_api(request));
    }
}
