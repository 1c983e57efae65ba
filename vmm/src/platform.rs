//! The legacy PC devices every oxvm machine has, attached to the port bus.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use oxvm_api::{SerialConfig, SerialMode};
use oxvm_arch::layout;
use oxvm_arch::memory::RamLayout;
use oxvm_devices::{
    AcpiPmConfig, AcpiPmDevice, Bus, Cmos, EventFdTrigger, SerialDevice, ACPI_PM_PORT_LEN,
    CMOS_PORT_LEN, I8042, I8042_PORT_LEN, SERIAL_PORT_LEN,
};

use crate::error::{kvm_err, VmmError};
use crate::events::VmEvents;

/// The port bus with the platform devices on it.
pub struct Platform {
    pub pio: Bus,
    /// The ACPI PM block, kept to press the power button.
    pub acpi_pm: Arc<Mutex<AcpiPmDevice>>,
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
    let com1 = SerialDevice::new(com1_irq, serial_output(serial)?);
    insert(
        &pio,
        Arc::new(Mutex::new(com1)),
        layout::COM1_PORT,
        SERIAL_PORT_LEN,
    )?;

    let i8042 = I8042::new(events.reset.try_clone().map_err(dev_err("i8042 reset"))?);
    insert(
        &pio,
        Arc::new(Mutex::new(i8042)),
        layout::I8042_PORT,
        I8042_PORT_LEN,
    )?;

    let cmos = Cmos::new(ram.low_size, ram.high_size);
    insert(
        &pio,
        Arc::new(Mutex::new(cmos)),
        layout::CMOS_PORT,
        CMOS_PORT_LEN,
    )?;

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
    Ok(Platform { pio, acpi_pm })
}
