//! The VM's control loop on the main thread: boots the machine, waits for what ends a
//! boot (power-off, reset, a failed vCPU, a stop signal) and reboots in place when the
//! guest resets and `on_reboot` is `restart`.

use std::os::fd::{AsRawFd, OwnedFd};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::Kvm;
use oxvm_api::{OnReboot, VmConfig};
use vmm_sys_util::epoll::EventSet;

use crate::error::VmmError;
use crate::events::VmEvents;
use crate::machine::{stop_all, Machine};
use crate::signals;

/// How a VM run ended (a failed vCPU is an `Err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off.
    PowerOff,
    /// The guest reset and `on_reboot` is `exit`.
    Reboot,
    /// A stop signal arrived (its number).
    Signal(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    PowerOff,
    Reset,
    Failed,
    Signal(i32),
}

/// Waits on the event fds; records the first outcome.
struct Watcher {
    events: VmEvents,
    signal_fd: OwnedFd,
    outcome: Option<Outcome>,
    /// SIGUSR1 arrived since the last look.
    dump_requested: bool,
}

impl MutEventSubscriber for Watcher {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [
            self.events.power_off.as_raw_fd(),
            self.events.reset.as_raw_fd(),
            self.events.error.as_raw_fd(),
            signals::raw(&self.signal_fd),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, 0, EventSet::IN)) {
                tracing::error!("control loop cannot watch fd {fd}: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        let outcome = if fd == self.events.power_off.as_raw_fd() {
            Outcome::PowerOff
        } else if fd == self.events.reset.as_raw_fd() {
            Outcome::Reset
        } else if fd == self.events.error.as_raw_fd() {
            Outcome::Failed
        } else {
            match signals::read_signal(fd) {
                Some(signals::DUMP_SIGNAL) => {
                    // Not an end: the vCPUs print their registers and keep running.
                    self.dump_requested = true;
                    return;
                }
                Some(s) => Outcome::Signal(s),
                None => return,
            }
        };
        // The first event decides: a reset racing a power-off on another vCPU must
        // not turn into two actions.
        self.outcome.get_or_insert(outcome);
    }
}

/// Boot `cfg` and run it until it ends. Must be called on the main thread before any
/// other thread is started (it blocks the stop signals for the whole process).
pub fn run_vm(cfg: &VmConfig) -> Result<VmExit, VmmError> {
    crate::thread_name::set_current(&cfg.name);
    let signal_fd = signals::block_stop_signals()?;
    // Enter the VM's cgroup before the machine exists, so guest RAM is charged to it.
    let _resources = crate::cgroup::apply(cfg)?;
    crate::vcpu::kick::install_kick_handler()?;
    let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;
    let events = VmEvents::new()?;
    let watcher = std::sync::Arc::new(std::sync::Mutex::new(Watcher {
        events: events.try_clone()?,
        signal_fd,
        outcome: None,
        dump_requested: false,
    }));
    let mut manager = EventManager::<std::sync::Arc<std::sync::Mutex<Watcher>>>::new()
        .map_err(|e| VmmError::Device(format!("event loop: {e:?}")))?;
    manager.add_subscriber(watcher.clone());

    loop {
        events.drain();
        let mut machine = Machine::build(&kvm, cfg, &events)?;
        let mut vcpus = machine.start(&events)?;
        let outcome = loop {
            if let Err(e) = manager.run() {
                tracing::error!("event loop: {e:?}");
            }
            let mut w = watcher.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::take(&mut w.dump_requested) {
                vcpus.iter().for_each(|v| v.request_dump());
            }
            if let Some(o) = w.outcome.take() {
                break o;
            }
        };
        stop_all(&mut vcpus);
        drop(machine);
        match outcome {
            Outcome::PowerOff => {
                tracing::info!("guest powered off");
                return Ok(VmExit::PowerOff);
            }
            Outcome::Reset if cfg.on_reboot == OnReboot::Restart => {
                tracing::info!("guest reset: restarting");
            }
            Outcome::Reset => {
                tracing::info!("guest reset: exiting (on_reboot = exit)");
                return Ok(VmExit::Reboot);
            }
            Outcome::Failed => {
                return Err(VmmError::VcpuFailed {
                    index: 0,
                    reason: "see the register dump above".into(),
                })
            }
            Outcome::Signal(s) => {
                tracing::info!("stopping on {}", signals::signal_name(s));
                return Ok(VmExit::Signal(s));
            }
        }
    }
}

/// What `oxvm run` and `oxvm serve` ask of the VMM.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The VM to boot at once (`oxvm run`); `None` waits for one over the API
    /// (`oxvm serve`).
    pub config: Option<VmConfig>,
    /// Serve the control API here (overrides `config.api_socket`).
    pub api_socket: Option<std::path::PathBuf>,
}

/// Run a VM process: boot `opts.config` (or wait for one over the API) and serve the
/// control API when a socket is given. Returns when the VM has stopped.
pub fn run(opts: RunOptions) -> Result<VmExit, VmmError> {
    match opts.config {
        Some(cfg) => run_vm(&cfg),
        None => Err(VmmError::Device(
            "oxvm serve: not implemented yet".to_string(),
        )),
    }
}
