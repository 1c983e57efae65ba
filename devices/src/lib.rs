//! oxvm devices: the port/MMIO bus and the platform devices of an x86 machine.

pub mod acpi_pm;
pub mod block;
pub mod bus;
pub mod irq;
pub mod legacy;
pub mod net;
pub mod pci;
pub mod state;
pub mod trigger;
pub mod virtio;

pub use acpi_pm::{AcpiPmConfig, AcpiPmDevice, AcpiPmState, ACPI_PM_PORT_LEN};
pub use block::{open_disk, DiskBackend, DiskError};
pub use bus::{Bus, BusDevice, BusError, WeakBus};
pub use irq::IrqLine;
pub use legacy::cmos::{CmosState, CMOS_PORT_LEN};
pub use legacy::i8042::{I8042State, I8042_PORT_LEN};
pub use legacy::serial::{SerialState, SERIAL_PORT_LEN};
pub use legacy::{Cmos, CmosClock, SerialDevice, SerialInputError, I8042};
pub use net::{Tap, TapError};
pub use state::StateError;
pub use trigger::EventFdTrigger;
pub use virtio::blk::{BlkMetrics, BlkMetricsSnapshot, VirtioBlk};
