//! Transport-agnostic virtio device model.
//!
//! A device (blk, net, scsi) implements [`VirtioDevice`]; a transport (virtio-pci)
//! owns the register interface, negotiates features, sets up the queues and, when the
//! driver sets DRIVER_OK, hands the device its queues, their kick eventfds and an
//! [`VirtioInterrupt`]. Devices do their I/O on worker threads of their own, never on
//! a vCPU thread.

pub mod blk;
mod device;
pub mod net;
pub mod pci;
pub mod scsi;
mod state;

pub use blk::VirtioBlk;
pub use device::{ActivateError, ActiveQueue, DiskVisitor, VirtioDevice, VirtioInterrupt};
pub use net::VirtioNet;
pub use scsi::VirtioScsi;
pub use state::VirtioDeviceState;

/// Guest memory as devices see it: the same type as `oxvm_arch::memory::GuestMemoryMmap`
/// (devices does not depend on arch; vmm checks at compile time that the two agree).
/// The bitmap records every write a device makes through vm-memory, for live migration.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;

/// Device type IDs (virtio 1.x §5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_SCSI: u32 = 8;

/// Feature bits common to all devices (virtio 1.x §6).
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;
