//! The VM's device model beyond the legacy platform: the PCI bus and the virtio
//! devices built from the VM config.

mod metrics;
mod pci;
mod state;
mod virtio;

pub use metrics::DeviceMetrics;
pub use pci::PciBus;
pub use state::DevicesState;
pub use virtio::attach_virtio_devices;
