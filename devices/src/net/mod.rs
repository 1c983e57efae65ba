//! Host networking backends for virtio-net.

pub mod tap;

#[cfg(test)]
pub(crate) mod tests;

pub use tap::{offload_flags, Tap, TapError, TapQueue, VNET_HDR_LEN};
