//! VM-level events raised by devices and vCPU threads and consumed by the control loop.

use oxvm_devices::EventFdTrigger;

/// One eventfd per kind of event. They outlive a guest reboot: the control loop keeps
/// them across machine rebuilds and drains them before each boot.
pub struct VmEvents {
    /// The guest asked to power off (ACPI S5, KVM system event).
    pub power_off: EventFdTrigger,
    /// The guest asked to reset (keyboard controller, ACPI reset register, triple fault).
    pub reset: EventFdTrigger,
    /// A vCPU stopped on an error (it has already dumped its registers).
    pub error: EventFdTrigger,
}

impl VmEvents {
    pub fn new() -> std::io::Result<Self> {
        Ok(VmEvents {
            power_off: EventFdTrigger::new()?,
            reset: EventFdTrigger::new()?,
            error: EventFdTrigger::new()?,
        })
    }

    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(VmEvents {
            power_off: self.power_off.try_clone()?,
            reset: self.reset.try_clone()?,
            error: self.error.try_clone()?,
        })
    }

    /// Forget events of a previous boot.
    pub fn drain(&self) {
        for e in [&self.power_off, &self.reset, &self.error] {
            let _ = e.read();
        }
    }
}
