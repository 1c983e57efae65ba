//! PCI: configuration space, the root bus with its host bridge, configuration access
//! (ports and ECAM) and MSI-X. Devices attach to the root through [`PciDevice`]; their
//! BARs live on the MMIO bus, so the same path serves virtio-pci, VFIO and hotplug.

mod config;
mod device;
pub mod msix;
mod root;

pub use config::{Bar, BarChange, BarKind, PciConfig, PciConfigState, PciId, COMMAND_MEMORY};
pub use device::PciDevice;
pub use msix::{MsiMessage, MsiRouter, Msix, MsixEntryState, MsixState, MsixVector};
pub use root::{PciConfigIo, PciConfigMmio, PciError, PciRoot, NUM_SLOTS};
