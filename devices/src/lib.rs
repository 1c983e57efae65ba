//! oxvm devices: the port/MMIO bus and the platform devices of an x86 machine.

pub mod bus;

pub use bus::{Bus, BusDevice, BusError};
