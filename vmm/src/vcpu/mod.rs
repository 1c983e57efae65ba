//! vCPUs: per-vCPU setup and the thread that runs each one.

pub mod counters;
mod dump;
mod exit;
mod group;
pub mod kick;
pub mod pause;
pub mod state;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};
use oxvm_arch::regs::EntryMode;
use oxvm_devices::Bus;
use vmm_sys_util::signal::Killable;

use crate::error::{kvm_err, VmmError};
use crate::events::VmEvents;
use crate::GuestMemoryMmap;
use counters::ExitCounters;
use exit::ExitAction;
pub use group::VcpuGroup;
use pause::PauseControl;
use state::VcpuState;

/// Where a parked vCPU thread sends its state when asked (see `VcpuHandle::ask_state`).
type StateSlot = Arc<Mutex<Option<mpsc::Sender<Result<VcpuState, String>>>>>;

/// What a vCPU needs from the host, shared by all vCPUs of a VM.
pub struct VcpuSetup<'a> {
    pub vm: &'a VmFd,
    pub mem: &'a GuestMemoryMmap,
    pub supported_cpuid: &'a CpuId,
    pub supported_msrs: &'a [u32],
    pub count: u32,
    pub kvm_pv_features: u32,
}

/// Create vCPU `index` and load its start state. Only the boot vCPU (0) gets an entry
/// state; the others wait in KVM for INIT/SIPI from the guest, like a real AP.
pub fn create_vcpu(
    setup: &VcpuSetup,
    index: u32,
    entry: Option<EntryMode>,
) -> Result<VcpuFd, VmmError> {
    let vcpu = setup
        .vm
        .create_vcpu(u64::from(index))
        .map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let cpuid = oxvm_arch::cpuid::vcpu_cpuid(
        setup.supported_cpuid,
        index,
        setup.count,
        setup.kvm_pv_features,
    );
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    oxvm_arch::msr::setup_msrs(&vcpu, setup.supported_msrs)?;
    oxvm_arch::regs::setup_fpu(&vcpu)?;
    oxvm_arch::lapic::setup_lapic(&vcpu)?;
    if let Some(mode) = entry {
        oxvm_arch::regs::setup_boot_vcpu(&vcpu, setup.mem, mode)?;
    }
    Ok(vcpu)
}

/// A running vCPU thread and the means to stop it.
pub struct VcpuHandle {
    index: u32,
    stop: Arc<AtomicBool>,
    dump: Arc<AtomicBool>,
    /// The thread's kernel id, set by the thread itself (0 until it runs).
    tid: Arc<AtomicU32>,
    counters: Arc<ExitCounters>,
    state_slot: StateSlot,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Ask the (parked) thread for its vCPU state; it answers on the returned channel
    /// once poked (`PauseControl::poke`).
    pub fn ask_state(&self) -> mpsc::Receiver<Result<VcpuState, String>> {
        let (tx, rx) = mpsc::channel();
        *self.state_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn tid(&self) -> u32 {
        self.tid.load(Ordering::SeqCst)
    }

    pub fn counters(&self) -> &ExitCounters {
        &self.counters
    }

    /// Get the thread out of KVM_RUN (to park it for a pause).
    pub fn kick_out(&self) {
        self.kick();
    }

    /// Ask the thread to leave KVM_RUN and end.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Ask the thread to print its registers to stderr and go on running.
    pub fn request_dump(&self) {
        self.dump.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn kick(&self) {
        if let Some(t) = &self.thread {
            if !t.is_finished() {
                if let Err(e) = t.kill(kick::kick_signal()) {
                    tracing::debug!("kicking vcpu{}: {e}", self.index);
                }
            }
        }
    }

    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("vcpu{} thread panicked", self.index);
            }
        }
    }
}

/// Holds vCPU threads until every one of them is running (and so carries its name),
/// so the guest never runs with part of its vCPUs missing and `top -H` shows all of
/// them from the first guest instruction on.
#[derive(Default)]
pub struct StartGate {
    state: std::sync::Mutex<GateState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    arrived: usize,
    decision: Option<bool>,
}

impl StartGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until `count` threads have arrived, then let them run.
    pub fn open_when_arrived(&self, count: usize) {
        let mut s = self.lock();
        while s.arrived < count && s.decision.is_none() {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.decision.get_or_insert(true);
        self.cv.notify_all();
    }

    /// Release the threads without running the guest (start-up failed).
    pub fn cancel(&self) {
        self.lock().decision = Some(false);
        self.cv.notify_all();
    }

    /// Called by each vCPU thread: check in, then wait for the decision.
    fn arrive_and_wait(&self) -> bool {
        let mut s = self.lock();
        s.arrived += 1;
        self.cv.notify_all();
        loop {
            if let Some(run) = s.decision {
                return run;
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What every vCPU thread of one boot shares.
pub struct VcpuShared {
    pub pio: Bus,
    pub mmio: Bus,
    pub gate: Arc<StartGate>,
    pub pause: Arc<PauseControl>,
    /// The MSRs a saved state includes (the host's KVM_GET_MSR_INDEX_LIST).
    pub msr_list: Arc<Vec<u32>>,
}

/// Start the thread `vcpu<index>`; it waits at the start gate, then runs `vcpu` until
/// stopped or until the guest powers off, resets or fails.
pub fn spawn_vcpu(
    index: u32,
    vcpu: VcpuFd,
    shared: &VcpuShared,
    events: VmEvents,
    pin: Option<Vec<usize>>,
) -> Result<VcpuHandle, VmmError> {
    let stop = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicU32::new(0));
    let counters = Arc::new(ExitCounters::default());
    let state_slot = StateSlot::default();
    let flags = VcpuFlags {
        stop: stop.clone(),
        dump: dump.clone(),
        pause: shared.pause.clone(),
        counters: counters.clone(),
        state_slot: state_slot.clone(),
        msr_list: shared.msr_list.clone(),
    };
    let (pio, mmio, gate) = (shared.pio.clone(), shared.mmio.clone(), shared.gate.clone());
    let thread_tid = tid.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            thread_tid.store(crate::thread_name::current_tid(), Ordering::SeqCst);
            // Pinned before the guest runs, so no guest instruction runs elsewhere. The
            // thread checks in at the gate even when pinning failed: the gate waits
            // for every vCPU thread.
            let pinned = match &pin {
                Some(cpus) => crate::cgroup::pin_current_thread(cpus),
                None => Ok(()),
            };
            let run = gate.arrive_and_wait();
            match pinned {
                Err(e) => {
                    eprintln!("oxvm: vCPU {index}: {e}");
                    fire(&events.error);
                }
                Ok(()) if run => run_vcpu(index, vcpu, &pio, &mmio, &events, &flags),
                Ok(()) => {}
            }
            flags.pause.thread_gone();
        })
        .map_err(|source| VmmError::VcpuThread { index, source })?;
    Ok(VcpuHandle {
        index,
        stop,
        dump,
        tid,
        counters,
        state_slot,
        thread: Some(thread),
    })
}

/// Requests from the control thread, checked whenever KVM_RUN returns.
struct VcpuFlags {
    stop: Arc<AtomicBool>,
    dump: Arc<AtomicBool>,
    pause: Arc<PauseControl>,
    counters: Arc<ExitCounters>,
    state_slot: StateSlot,
    msr_list: Arc<Vec<u32>>,
}

/// While parked: answer a pending state request.
fn answer_state_request(index: u32, vcpu: &VcpuFd, flags: &VcpuFlags) {
    let Some(tx) = flags
        .state_slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let state = state::save_vcpu(vcpu, index, &flags.msr_list).map_err(|e| e.to_string());
    let _ = tx.send(state);
}

fn run_vcpu(
    index: u32,
    mut vcpu: VcpuFd,
    pio: &Bus,
    mmio: &Bus,
    events: &VmEvents,
    flags: &VcpuFlags,
) {
    kick::bind_immediate_exit(&mut vcpu.get_kvm_run().immediate_exit as *mut u8);
    loop {
        // Clear before checking the flag: a kick that lands after this point either
        // sees the flag set or makes the next KVM_RUN return at once.
        vcpu.set_kvm_immediate_exit(0);
        if flags.stop.load(Ordering::SeqCst) {
            break;
        }
        if flags.dump.swap(false, Ordering::SeqCst) {
            eprint!("{}", dump::dump_registers(index, &vcpu));
        }
        flags
            .pause
            .park_if_paused(|| answer_state_request(index, &vcpu, flags));
        if flags.stop.load(Ordering::SeqCst) {
            break;
        }
        let result = vcpu.run();
        flags.counters.record(&result);
        let action = exit::handle(index, result, pio, mmio);
        match action {
            ExitAction::Continue => {}
            ExitAction::PowerOff => {
                fire(&events.power_off);
                break;
            }
            ExitAction::Reset => {
                fire(&events.reset);
                break;
            }
            ExitAction::Fail(reason) => {
                eprintln!("oxvm: vCPU {index} failed: {reason}");
                eprint!("{}", dump::dump_registers(index, &vcpu));
                tracing::error!("vcpu{index}: {reason}");
                fire(&events.error);
                break;
            }
        }
    }
    kick::bind_immediate_exit(std::ptr::null_mut());
}

fn fire(evt: &oxvm_devices::EventFdTrigger) {
    if let Err(e) = evt.write(1) {
        tracing::error!("cannot signal the control loop: {e}");
    }
}
