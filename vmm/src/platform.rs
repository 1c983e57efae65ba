//! The legacy PC devices every oxvm machine has, attached to the port bus, and their
//! saved state.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use oxvm_api::{SerialConfig, SerialMode};
use oxvm_arch::layout;
use oxvm_arch::memory::RamLayout;
use oxvm_devices::{
    AcpiPmConfig, AcpiPmDevice, AcpiPmState, Bus, Cmos, CmosState, EventFdTrigger, I8042State,
    SerialDevice, SerialState, StateError, ACPI_PM_PORT_LEN, CMOS_PORT_LEN, I8042, I8042_PORT_LEN,
    SERIAL_PORT_LEN,
};
use serde::{Deserialize, Serialize};

use crate::error::{kvm_err, VmmError};
use crate::events::VmEvents;

/// The port bus with the platform devices on it.
pub struct Platform {
    pub pio: Bus,
    /// The ACPI PM block, kept to press the power button.
    pub acpi_pm: Arc<Mutex<AcpiPmDevice>>,
    // Kept for save/restore (the bus holds the other references).
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    cmos: Arc<Mutex<Cmos>>,
}

/// The platform devices' saved state. The COM1 output sink and every interrupt line
/// and eventfd are the restoring machine's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformState {
    pub serial: SerialState,
    pub i8042: I8042State,
    pub cmos: CmosState,
    pub acpi_pm: AcpiPmState,
}

/// A poisoned lock means a vCPU panicked inside the device; its state is still the
/// best there is.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn state_err(e: StateError) -> VmmError {
    VmmError::Device(format!("device state: {e}"))
}

impl Platform {
    /// The devices' state (the vCPUs are paused: no port access is half done).
    pub fn save_state(&self) -> PlatformState {
        PlatformState {
            serial: lock(&self.serial).save_state(),
            i8042: lock(&self.i8042).save_state(),
            cmos: lock(&self.cmos).save_state(),
            acpi_pm: lock(&self.acpi_pm).save_state(),
        }
    }

    /// Take over `state` before the vCPUs run. A pending COM1 interrupt is raised again
    /// and the SCI is driven to the saved level, so apply it after the in-kernel
    /// irqchip's state (which would overwrite them). Each device checks its part before
    /// using it; on an error the machine must not run (devices before the refused one
    /// already took theirs).
    pub fn restore_state(&self, state: &PlatformState) -> Result<(), VmmError> {
        lock(&self.serial)
            .restore_state(&state.serial)
            .map_err(state_err)?;
        lock(&self.i8042)
            .restore_state(&state.i8042)
            .map_err(state_err)?;
        lock(&self.cmos)
            .restore_state(&state.cmos)
            .map_err(state_err)?;
        lock(&self.acpi_pm)
            .restore_state(&state.acpi_pm)
            .map_err(state_err)
    }
}

fn serial_output(cfg: &SerialConfig) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match cfg.mode {
        SerialMode::Stdout => Box::new(std::io::stdout()),
        SerialMode::Off => Box::new(std::io::sink()),
        SerialMode::File => {
            let path = cfg.path.clone().unwrap_or_default();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| VmmError::SerialFile { path, source })?;
            Box::new(file)
        }
    })
}

fn dev_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |e| VmmError::Device(format!("{what}: {e}"))
}

pub fn attach_platform(
    vm: &Arc<VmFd>,
    ram: &RamLayout,
    serial: &SerialConfig,
    events: &VmEvents,
) -> Result<Platform, VmmError> {
    let pio = Bus::new();
    let insert = |bus: &Bus, dev, base: u16, len| {
        bus.insert(dev, u64::from(base), len)
            .map_err(|e| VmmError::Device(e.to_string()))
    };

    // COM1: its interrupt is an irqfd, so the guest gets it without a VMM round trip.
    let com1_irq = EventFdTrigger::new().map_err(dev_err("COM1 eventfd"))?;
    vm.register_irqfd(&com1_irq, layout::COM1_IRQ)
        .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
    let com1 = Arc::new(Mutex::new(SerialDevice::new(
        com1_irq,
        serial_output(serial)?,
    )));
    insert(&pio, com1.clone(), layout::COM1_PORT, SERIAL_PORT_LEN)?;

    let i8042 = Arc::new(Mutex::new(I8042::new(
        events.reset.try_clone().map_err(dev_err("i8042 reset"))?,
    )));
    insert(&pio, i8042.clone(), layout::I8042_PORT, I8042_PORT_LEN)?;

    let cmos = Arc::new(Mutex::new(Cmos::new(ram.low_size, ram.high_size)));
    insert(&pio, cmos.clone(), layout::CMOS_PORT, CMOS_PORT_LEN)?;

    let mut pm = AcpiPmDevice::new(
        AcpiPmConfig {
            s5_slp_typ: layout::S5_SLP_TYP,
            reset_value: layout::ACPI_RESET_VALUE,
        },
        events.reset.try_clone().map_err(dev_err("ACPI reset"))?,
        events
            .power_off
            .try_clone()
            .map_err(dev_err("ACPI power-off"))?,
    );
    // The SCI is level triggered: drive the line, an irqfd could only pulse it.
    let sci_vm = vm.clone();
    pm.set_sci(Box::new(move |high: bool| {
        if let Err(e) = sci_vm.set_irq_line(layout::SCI_IRQ, high) {
            tracing::warn!("cannot drive the ACPI SCI: {e}");
        }
    }));
    let acpi_pm = Arc::new(Mutex::new(pm));
    insert(
        &pio,
        acpi_pm.clone(),
        layout::ACPI_PM_PORT_BASE,
        ACPI_PM_PORT_LEN,
    )?;
    Ok(Platform {
        pio,
        acpi_pm,
        serial: com1,
        i8042,
        cmos,
    })
}

#[cfg(test)]
mod tests {
    use kvm_ioctls::Kvm;
    use oxvm_api::SerialMode;

    use super::*;

    fn platform() -> (Platform, Arc<VmFd>) {
        let vm = Arc::new(Kvm::new().unwrap().create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let serial = SerialConfig {
            mode: SerialMode::Off,
            path: None,
        };
        let events = VmEvents::new().unwrap();
        let p = attach_platform(&vm, &RamLayout::new(64 << 20), &serial, &events).unwrap();
        (p, vm)
    }

    fn out(p: &Platform, port: u16, value: &[u8]) {
        assert!(p.pio.write(u64::from(port), value));
    }

    fn inb(p: &Platform, port: u16) -> u8 {
        let mut b = [0u8];
        assert!(p.pio.read(u64::from(port), &mut b));
        b[0]
    }

    #[test]
    fn platform_state_round_trips_into_a_new_machine() {
        let (old, _vm) = platform();
        out(&old, layout::COM1_PORT + 7, &[0x5a]); // scratch
        out(&old, layout::COM1_PORT + 3, &[0x1b]); // line control
        out(&old, layout::CMOS_PORT, &[0x41]);
        out(&old, layout::CMOS_PORT + 1, &[0x77]);
        out(&old, layout::ACPI_PM_PORT_BASE + 2, &0x100u16.to_le_bytes()); // PWRBTN_EN
        lock(&old.acpi_pm).press_power_button();
        let state = old.save_state();
        let state: PlatformState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

        let (new, _vm2) = platform();
        new.restore_state(&state).unwrap();
        assert_eq!(new.save_state(), state);
        assert_eq!(inb(&new, layout::COM1_PORT + 7), 0x5a);
        assert_eq!(inb(&new, layout::COM1_PORT + 3), 0x1b);
        out(&new, layout::CMOS_PORT, &[0x41]);
        assert_eq!(inb(&new, layout::CMOS_PORT + 1), 0x77);
        assert_eq!(inb(&new, layout::ACPI_PM_PORT_BASE + 1), 0x01, "PWRBTN_STS");
        assert!(lock(&new.acpi_pm).sci_asserted(), "SCI driven high again");
    }

    #[test]
    fn a_bad_platform_state_is_refused_with_its_field() {
        let (p, _vm) = platform();
        let mut state = p.save_state();
        state.cmos.nvram.truncate(10);
        let e = p.restore_state(&state).unwrap_err().to_string();
        assert!(e.contains("cmos") && e.contains("`nvram`"), "{e}");
        let mut state = p.save_state();
        state.serial.in_buffer = vec![0; 100];
        let e = p.restore_state(&state).unwrap_err().to_string();
        assert!(e.contains("serial") && e.contains("`in_buffer`"), "{e}");
    }
}
