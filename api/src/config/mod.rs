//! The VM file: types, loading and validation.

mod boot;
mod cpu;
mod disk;
mod error;
mod load;
mod nic;
mod resources;
mod serial;
mod shutdown;
mod validate;
mod vm;

pub use boot::{BootConfig, BootEntry, RawPayload};
pub use cpu::{names_of as kvm_pv_feature_names, CpuConfig, KvmPvFeatures};
pub use disk::{CacheMode, DiscardMode, DiskBus, DiskConfig, DiskFormat, IoMode, IoTune};
pub use error::ConfigError;
pub use nic::{parse_mac, NicConfig, NicModel};
pub use resources::{Resources, DEFAULT_CGROUP_PARENT};
pub use serial::{SerialConfig, SerialMode};
pub use shutdown::{ShutdownConfig, MAX_SHUTDOWN_TIMEOUT_S};
pub use vm::{OnReboot, VmConfig};

#[cfg(test)]
mod tests;
