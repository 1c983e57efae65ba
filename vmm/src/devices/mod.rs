//! The VM's device model beyond the legacy platform: the PCI bus and the virtio
//! devices built from the VM config.

mod pci;
mod virtio;

pub use pci::PciBus;
pub use virtio::attach_virtio_devices;
