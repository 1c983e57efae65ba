//! The virtio-over-PCI transport (virtio 1.x "modern" only): a PCI function whose BAR 0
//! holds the common configuration, ISR, device configuration, per-queue notify
//! addresses (each backed by a KVM ioeventfd) and the MSI-X table. A function can be
//! quiesced, saved and restored (`lifecycle.rs`, `state.rs`, `restore.rs`).

mod common_cfg;
mod device;
mod interrupt;
pub mod layout;
mod lifecycle;
mod restore;
mod state;
#[cfg(test)]
mod tests;

pub use device::{msix_vector_count, IoEventRegistrar, VirtioPciDevice, VirtioPciResources};
pub use state::{CommonCfgState, VirtioPciState, VirtqueueState};

pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;
