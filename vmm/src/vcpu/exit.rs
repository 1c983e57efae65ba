//! What a vCPU thread does with each KVM exit.

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::VcpuExit;
use oxvm_devices::Bus;

pub enum ExitAction {
    Continue,
    PowerOff,
    Reset,
    Fail(String),
}

/// Port and MMIO accesses go to the bus; an access nobody owns reads as all ones and
/// writes are dropped, as on a PC bus, so a guest probing for hardware cannot stop us.
pub fn handle(
    index: u32,
    result: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    pio: &Bus,
    mmio: &Bus,
) -> ExitAction {
    match result {
        Ok(VcpuExit::IoIn(port, data)) => {
            tracing::trace!("vcpu{index}: in {port:#x} len {}", data.len());
            if !pio.read(u64::from(port), data) {
                tracing::trace!("vcpu{index}: unhandled port read {port:#x}");
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::IoOut(port, data)) => {
            tracing::trace!("vcpu{index}: out {port:#x} {data:x?}");
            if !pio.write(u64::from(port), data) {
                tracing::trace!("vcpu{index}: unhandled port write {port:#x} {data:x?}");
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            tracing::trace!("vcpu{index}: mmio read {addr:#x} len {}", data.len());
            if !mmio.read(addr, data) {
                tracing::debug!("vcpu{index}: unhandled MMIO read {addr:#x}");
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            tracing::trace!("vcpu{index}: mmio write {addr:#x} {data:x?}");
            if !mmio.write(addr, data) {
                tracing::debug!("vcpu{index}: unhandled MMIO write {addr:#x} {data:x?}");
            }
            ExitAction::Continue
        }
        Ok(VcpuExit::Intr) => ExitAction::Continue,
        // A triple fault: a PC resets (this is also Linux's last-resort reboot).
        Ok(VcpuExit::Shutdown) => {
            tracing::info!("vcpu{index}: triple fault, resetting");
            ExitAction::Reset
        }
        Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitAction::PowerOff,
            KVM_SYSTEM_EVENT_RESET => ExitAction::Reset,
            KVM_SYSTEM_EVENT_CRASH => ExitAction::Fail("guest crash event".into()),
            other => ExitAction::Fail(format!("unknown system event {other}")),
        },
        Ok(VcpuExit::InternalError) => {
            ExitAction::Fail("KVM internal error (emulation failure?)".into())
        }
        Ok(VcpuExit::FailEntry(reason, cpu)) => ExitAction::Fail(format!(
            "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
        )),
        Ok(other) => ExitAction::Fail(format!("unexpected KVM exit {other:?}")),
        Err(e) if e.errno() == libc::EINTR => ExitAction::Continue,
        // KVM_RUN returns EAGAIN once on an AP after INIT/SIPI: run it again.
        Err(e) if e.errno() == libc::EAGAIN => ExitAction::Continue,
        Err(e) => ExitAction::Fail(format!("KVM_RUN failed: {e}")),
    }
}
