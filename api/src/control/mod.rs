//! The control contract between the API server (HTTP over a Unix socket) and the VMM.
//!
//! The server parses a request into an [`ApiRequest`], hands it to a [`VmController`]
//! (the VMM implements it) and turns the reply or the [`ApiError`] into a response. The
//! same types are what `oxvm ctl` deserializes, so the wire format is defined once.

mod controller;
mod counters;
mod error;
mod info;
mod migration;
mod persist;
mod request;
mod snapshots;
mod state;

pub use controller::{ApiReply, VmController};
pub use counters::{Counters, DiskCounters, MemoryCounters, NicCounters, VcpuCounters};
pub use error::ApiError;
pub use info::{ActionReply, VcpuThread, VersionInfo, VmInfo};
pub use migration::{IncomingParams, MigrateParams, MigrationPhase, MigrationStatus};
pub use persist::{MemoryMode, RestoreParams, SaveParams};
pub use request::{ApiRequest, ShutdownParams, VmAction};
pub use snapshots::{
    check_snapshot_name, RevertParams, SnapshotDisk, SnapshotInfo, SnapshotList, SnapshotParams,
    MAX_SNAPSHOT_NAME_LEN,
};
pub use state::VmState;

/// Version of the HTTP API (the `/v1` prefix); bumped only on incompatible changes.
pub const API_VERSION: u32 = 1;

#[cfg(test)]
mod tests;
