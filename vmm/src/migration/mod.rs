//! Live migration between two oxvm processes: pre-copy of guest memory with dirty
//! tracking, then a short stop-and-copy of the last pages and the machine state.

pub mod dirty;
pub mod pages;
pub mod protocol;
pub mod receiver;
pub mod sender;
pub mod transport;

/// Why a migration failed (on either side). The source keeps running either way.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration address {0}")]
    Address(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("migration stream: {0}")]
    Protocol(String),
    #[error("the destination refused: {0}")]
    Refused(String),
    #[error("the destination failed: {0}")]
    DestinationFailed(String),
    #[error("migration: {0}")]
    Vmm(String),
}
