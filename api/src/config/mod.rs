//! The VM file: types, loading and validation.

mod boot;
mod cpu;
mod error;
mod load;
mod serial;
mod validate;
mod vm;

pub use boot::{BootConfig, BootEntry, RawPayload};
pub use cpu::{names_of as kvm_pv_feature_names, CpuConfig, KvmPvFeatures};
pub use error::ConfigError;
pub use serial::{SerialConfig, SerialMode};
pub use vm::{OnReboot, VmConfig};

#[cfg(test)]
mod tests;
