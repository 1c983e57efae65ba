//! The VM's state machine on the main thread: it owns the machine and its vCPU
//! threads and applies guest events, signals and API actions to them. The transition
//! table itself is `VmState::check` in the API crate, shared with the docs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use oxvm_api::control::{ActionReply, VcpuThread, VmInfo};
use oxvm_api::{ApiError, ApiReply, ApiRequest, OnReboot, VmConfig, VmState};
use vmm_sys_util::timerfd::TimerFd;

use super::counters::CounterTotals;
use super::migrate::{Migration, MigrationLink};
use super::VmExit;
use crate::cgroup::CgroupGuard;
use crate::error::VmmError;
use crate::events::VmEvents;
use crate::machine::Machine;
use crate::vcpu::VcpuGroup;

/// A graceful shutdown (or ACPI reboot) waiting for the guest to power off.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingShutdown {
    /// Boot again when the guest has powered off (API `reboot`).
    pub reboot: bool,
    /// Destroy the VM when the timer expires.
    pub force: bool,
    /// The stop signal that asked for it: the process ends either way.
    pub signal: Option<i32>,
    pub timeout_s: u64,
}

pub struct Lifecycle {
    kvm: Kvm,
    events: VmEvents,
    timer: Arc<Mutex<TimerFd>>,
    pub(super) cfg: Option<VmConfig>,
    /// Dropped last: moves the process out of the VM's cgroup and removes it.
    _cgroup: Option<CgroupGuard>,
    pub(super) machine: Option<Machine>,
    pub(super) vcpus: Option<VcpuGroup>,
    pub(super) state: VmState,
    booted_at: Option<Instant>,
    boots: u64,
    /// Bumped whenever a machine is torn down; guest events read in the same batch
    /// as a teardown come from the old machine and are ignored.
    generation: u64,
    pub(super) last_error: Option<String>,
    pub(super) pending: Option<PendingShutdown>,
    pub(super) totals: CounterTotals,
    /// A live migration this process sends or receives.
    pub(super) migration: Option<Migration>,
    pub(super) migration_link: MigrationLink,
    /// The devices stay drained after a migration whose outcome is unknown (the guest
    /// may run on the destination): only a resume, which the operator asks for once
    /// the destination is known not to run it, restarts them.
    pub(super) devices_held: bool,
    /// Set when the VM has stopped: how the process ends.
    exit: Option<Result<VmExit, VmmError>>,
}

impl Lifecycle {
    pub fn new(
        kvm: Kvm,
        events: VmEvents,
        timer: Arc<Mutex<TimerFd>>,
        migration_link: MigrationLink,
    ) -> Self {
        Lifecycle {
            kvm,
            events,
            timer,
            cfg: None,
            _cgroup: None,
            machine: None,
            vcpus: None,
            state: VmState::Empty,
            booted_at: None,
            boots: 0,
            generation: 0,
            last_error: None,
            pending: None,
            totals: CounterTotals::default(),
            migration: None,
            migration_link,
            devices_held: false,
            exit: None,
        }
    }

    pub fn state(&self) -> VmState {
        self.state
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How the process ends, once the VM has stopped.
    pub fn take_exit(&mut self) -> Option<Result<VmExit, VmmError>> {
        self.exit.take()
    }

    /// Build the VM (`empty` → `created`). On error nothing is left behind.
    pub fn create(&mut self, cfg: VmConfig) -> Result<(), VmmError> {
        self.create_with(cfg, Machine::build)
    }

    /// [`create`](Self::create) with another way of building the machine (a restore).
    pub(super) fn create_with(
        &mut self,
        cfg: VmConfig,
        build: impl FnOnce(&Kvm, &VmConfig, &VmEvents) -> Result<Machine, VmmError>,
    ) -> Result<(), VmmError> {
        crate::thread_name::set_current(&cfg.name);
        // Enter the VM's cgroup before the machine exists, so guest RAM is charged to it.
        let cgroup = crate::cgroup::apply(&cfg)?;
        self.events.drain();
        let machine = build(&self.kvm, &cfg, &self.events)?;
        self._cgroup = Some(cgroup);
        self.machine = Some(machine);
        self.cfg = Some(cfg);
        self.state = VmState::Created;
        Ok(())
    }

    /// Start the vCPUs of the built machine (`created` → `running`).
    pub fn boot(&mut self) -> Result<(), VmmError> {
        self.start_vcpus(false)
    }

    /// Start the vCPU threads; with `paused` they park before the first guest
    /// instruction (`created` → `paused`).
    pub(super) fn start_vcpus(&mut self, paused: bool) -> Result<(), VmmError> {
        let machine = self
            .machine
            .as_mut()
            .ok_or_else(|| VmmError::Device("no VM to boot".into()))?;
        self.vcpus = Some(machine.start(&self.events, paused)?);
        self.state = if paused {
            VmState::Paused
        } else {
            VmState::Running
        };
        self.booted_at = Some(Instant::now());
        self.boots += 1;
        Ok(())
    }

    /// Stop the vCPUs and drop the machine, keeping what they counted.
    fn teardown(&mut self) {
        self.generation += 1;
        self.totals
            .absorb(self.machine.as_ref(), self.vcpus.as_ref());
        if let Some(mut v) = self.vcpus.take() {
            v.stop();
        }
        self.machine = None;
        self.devices_held = false;
        self.disarm_timer();
        self.pending = None;
    }

    /// Reset in place: a new machine from the same config, booted from the start.
    pub(super) fn rebuild(&mut self) -> Result<(), VmmError> {
        self.teardown();
        let cfg = self
            .cfg
            .clone()
            .ok_or_else(|| VmmError::Device("no VM to rebuild".into()))?;
        self.events.drain();
        self.machine = Some(Machine::build(&self.kvm, &cfg, &self.events)?);
        self.boot()
    }

    /// Replace the machine with one `build` makes from `cfg` and start it (paused if
    /// asked): a snapshot revert. The old machine goes first, so its taps and disks
    /// are free for the new one. On error there is no machine; the caller fails the VM.
    pub(super) fn replace_machine(
        &mut self,
        cfg: VmConfig,
        paused: bool,
        build: impl FnOnce(&Kvm, &VmConfig, &VmEvents) -> Result<Machine, VmmError>,
    ) -> Result<(), VmmError> {
        self.teardown();
        self.events.drain();
        let mut machine = build(&self.kvm, &cfg, &self.events)?;
        // A machine built from a state keeps its devices drained until told.
        machine.resume_devices()?;
        self.machine = Some(machine);
        self.cfg = Some(cfg);
        self.start_vcpus(paused)
    }

    /// Drop a VM that could not be started, back to `empty`.
    pub(super) fn discard(&mut self) {
        self.teardown();
        self.cfg = None;
        self._cgroup = None;
        self.state = VmState::Empty;
    }

    /// The VM is over: stop everything and remember how the process ends.
    pub(super) fn stop(&mut self, exit: VmExit) {
        self.teardown();
        self.state = VmState::Stopped;
        self.exit.get_or_insert(Ok(exit));
    }

    pub(super) fn fail(&mut self, e: VmmError) {
        self.teardown();
        self.state = VmState::Stopped;
        self.exit.get_or_insert(Err(e));
    }

    /// Rebuild, or end the process if that fails.
    pub(super) fn rebuild_or_fail(&mut self) {
        if let Err(e) = self.rebuild() {
            self.fail(e);
        }
    }

    // --- guest events ---

    pub fn on_power_off(&mut self) {
        match self.pending {
            Some(p) if p.reboot => {
                tracing::info!("guest powered off for a reboot: booting again");
                self.rebuild_or_fail();
            }
            _ => {
                tracing::info!("guest powered off");
                self.stop(VmExit::PowerOff);
            }
        }
    }

    pub fn on_guest_reset(&mut self) {
        if self.pending.is_some() {
            // Going down during a shutdown: the guest has left; finish the shutdown.
            return self.on_power_off();
        }
        match self.cfg.as_ref().map(|c| c.on_reboot) {
            Some(OnReboot::Restart) => {
                tracing::info!("guest reset: restarting");
                self.rebuild_or_fail();
            }
            _ => {
                tracing::info!("guest reset: exiting (on_reboot = exit)");
                self.stop(VmExit::Reboot);
            }
        }
    }

    pub fn on_vcpu_failed(&mut self) {
        self.fail(VmmError::VcpuFailed {
            index: 0,
            reason: "see the register dump above".into(),
        });
    }

    pub fn on_dump_request(&self) {
        if let Some(v) = &self.vcpus {
            v.request_dump();
        }
    }

    // --- graceful shutdown ---

    /// Press the power button and give the guest `p.timeout_s` to power off.
    pub(super) fn begin_shutdown(&mut self, p: PendingShutdown) -> Result<(), VmmError> {
        let Some(machine) = &self.machine else {
            return Err(VmmError::Device("no VM to shut down".into()));
        };
        machine.press_power_button();
        self.timer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset(Duration::from_secs(p.timeout_s.max(1)), None)
            .map_err(|e| VmmError::Io(std::io::Error::from_raw_os_error(e.errno())))?;
        tracing::info!(
            "power button pressed; the guest has {} s to power off",
            p.timeout_s
        );
        self.pending = Some(p);
        self.state = VmState::ShuttingDown;
        Ok(())
    }

    fn disarm_timer(&self) {
        if let Err(e) = self.timer.lock().unwrap_or_else(|e| e.into_inner()).clear() {
            tracing::warn!("cannot disarm the shutdown timer: {e}");
        }
    }

    pub fn on_shutdown_timeout(&mut self) {
        let Some(p) = self.pending else { return };
        if let Some(s) = p.signal {
            tracing::warn!(
                "the guest did not power off within {} s: stopping it",
                p.timeout_s
            );
            return self.stop(VmExit::Signal(s));
        }
        if p.force {
            tracing::warn!(
                "the guest did not power off within {} s: destroying it (force)",
                p.timeout_s
            );
            return self.stop(VmExit::Destroyed);
        }
        self.pending = None;
        self.state = VmState::Running;
        let what = if p.reboot { "reboot" } else { "shutdown" };
        self.last_error = Some(format!(
            "{what} timed out after {} s: the guest did not power off (force was off, the VM keeps running)",
            p.timeout_s
        ));
        tracing::warn!("{}", self.last_error.as_deref().unwrap_or_default());
    }

    /// SIGTERM/SIGINT: graceful shutdown with the VM file's timeout; the process ends
    /// either way. A second one, or SIGHUP, stops at once.
    pub fn on_signal(&mut self, signo: i32) {
        // During a migration the guest belongs to no one yet: stop at once.
        // Nor may a VM whose guest may run on a migration's destination run here.
        let graceful = signo != libc::SIGHUP
            && !self.migration_active()
            && !self.devices_held
            && self.pending.is_none()
            && matches!(self.state, VmState::Running | VmState::Paused);
        if !graceful {
            tracing::info!("stopping on {}", crate::signals::signal_name(signo));
            return self.stop(VmExit::Signal(signo));
        }
        if self.state == VmState::Paused {
            self.resume_vcpus();
        }
        let timeout_s = self.cfg.as_ref().map_or(0, |c| c.shutdown.timeout_s);
        tracing::info!(
            "{}: shutting the guest down (up to {timeout_s} s)",
            crate::signals::signal_name(signo)
        );
        let p = PendingShutdown {
            reboot: false,
            force: true,
            signal: Some(signo),
            timeout_s,
        };
        if let Err(e) = self.begin_shutdown(p) {
            tracing::error!("graceful shutdown: {e}");
            self.stop(VmExit::Signal(signo));
        }
    }

    pub(super) fn resume_vcpus(&mut self) {
        if std::mem::take(&mut self.devices_held) {
            if let Some(Err(e)) = self.machine.as_mut().map(Machine::resume_devices) {
                return self.fail(e);
            }
        }
        if let Some(v) = &self.vcpus {
            v.resume();
        }
        self.state = VmState::Running;
    }

    /// Refuse what would run the devices again (or take a state of them) while a
    /// migration's outcome is unknown.
    pub(super) fn check_not_held(&self, what: &str) -> Result<(), ApiError> {
        if self.devices_held {
            return Err(ApiError::conflict(format!(
                "cannot {what}: the last migration's outcome is unknown and the guest may \
                 run on the destination; destroy this VM, or resume it once the \
                 destination is known not to run it"
            )));
        }
        Ok(())
    }

    // --- API reads ---

    pub(super) fn info(&self) -> VmInfo {
        VmInfo {
            name: self.cfg.as_ref().map(|c| c.name.clone()),
            state: self.state,
            pid: std::process::id(),
            uptime_s: self
                .booted_at
                .filter(|_| self.vcpus.is_some())
                .map(|t| t.elapsed().as_secs_f64()),
            boots: self.boots,
            vcpu_threads: self
                .vcpus
                .as_ref()
                .map(|v| {
                    v.threads()
                        .into_iter()
                        .map(|(index, tid)| VcpuThread { index, tid })
                        .collect()
                })
                .unwrap_or_default(),
            last_error: self.last_error.clone(),
            config: self.cfg.clone(),
        }
    }

    pub(super) fn reply_state(&self) -> Result<ApiReply, ApiError> {
        Ok(ApiReply::Action(ActionReply { state: self.state }))
    }

    pub fn handle_api(&mut self, request: ApiRequest) -> Result<ApiReply, ApiError> {
        match request {
            ApiRequest::Info => Ok(ApiReply::Info(Box::new(self.info()))),
            ApiRequest::Counters => {
                let guest = self.cfg.as_ref().map_or(0, |c| c.memory_mib << 20);
                Ok(ApiReply::Counters(Box::new(self.totals.report(
                    self.machine.as_ref(),
                    self.vcpus.as_ref(),
                    guest,
                ))))
            }
            ApiRequest::Create(cfg) => self.api_create(*cfg, false),
            ApiRequest::Deploy(cfg) => self.api_create(*cfg, true),
            ApiRequest::Action(a) => self.api_action(a),
            ApiRequest::Save(p) => self.api_save(p),
            ApiRequest::Restore(p) => self.api_restore(p),
            ApiRequest::MigrationStatus => {
                Ok(ApiReply::Migration(Box::new(self.migration_status())))
            }
            ApiRequest::Migrate(p) => self.api_migrate(p, None),
            ApiRequest::Incoming(p) => self.api_incoming(p),
            ApiRequest::SnapshotList => self.api_snapshot_list(),
            ApiRequest::SnapshotGet(name) => self.api_snapshot_get(&name),
            ApiRequest::SnapshotCreate(p) => self.api_snapshot_create(p),
            ApiRequest::SnapshotRevert(name, p) => self.api_snapshot_revert(&name, p),
            ApiRequest::SnapshotDelete(name) => self.api_snapshot_delete(&name),
        }
    }
}
