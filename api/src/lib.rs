//! oxvm configuration and wire types.
//!
//! The VM file a user writes (`oxvm run vm.json`) deserializes into [`VmConfig`]. Later
//! the control API reuses the same types on the wire, so every field has a serde default
//! where a default makes sense and unknown fields are always an error.

pub mod config;

pub use config::{
    parse_mac, BootConfig, BootEntry, CacheMode, ConfigError, CpuConfig, DiscardMode, DiskBus,
    DiskConfig, DiskFormat, IoMode, IoTune, KvmPvFeatures, NicConfig, NicModel, OnReboot,
    RawPayload, SerialConfig, SerialMode, ShutdownConfig, VmConfig,
};

// OpenNebula templates as VM files, and loading a VM file of either format.
pub mod template;

pub use template::{
    convert_template, load_vm_file, parse_template, read_vm_file, Converted, Paths, TemplateError,
    TemplateExtras, VmFile, VmFileError, VmFileFormat, Warning,
};

// The control API contract: requests, replies, states and errors (server and client).
pub mod control;

pub use control::{ApiError, ApiReply, ApiRequest, VmController, VmState};

// The control API over a Unix socket: the HTTP server the VMM runs, the client `oxvm
// ctl` uses, and the runtime directory where servers register for `oxvm list`.
pub mod client;
pub mod runtime_dir;
pub mod server;

pub use client::{Client, ClientError};
pub use server::{serve, ApiServer, ServerError};
