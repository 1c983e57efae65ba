//! The saved state of a machine's devices, as the state file carries it (the file's
//! container holds the format version).
//!
//! Taken after the vCPUs are paused and the PCI devices quiesced, so no request is in
//! flight: in-flight requests are completed before the state is taken; the state never
//! contains half-done I/O. Restored into a machine built from the same VM config
//! (`Platform::restore_state`, `PciBus::restore_state`), before its vCPUs run.

use oxvm_devices::virtio::pci::VirtioPciState;
use serde::{Deserialize, Serialize};

use crate::platform::PlatformState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesState {
    pub platform: PlatformState,
    pub pci: PciBusState,
}

/// The virtio-pci functions of bus 0, by slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciBusState {
    pub devices: Vec<PciSlotState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciSlotState {
    pub slot: u8,
    /// The device's name (`blk-<id>`, `net-<id>`, `scsi0`): a state goes back to the
    /// device with the same slot and name, nowhere else.
    pub name: String,
    pub state: VirtioPciState,
}
