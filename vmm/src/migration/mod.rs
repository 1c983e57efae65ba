//! Live migration between two oxvm processes: pre-copy of guest memory with dirty
//! tracking, then a short stop-and-copy of the last pages and the machine state.

pub mod dirty;
pub mod pages;
pub mod protocol;
pub mod receiver;
pub mod sender;
pub mod transport;

/// Why a migration failed (on either side). The source keeps running, except after
/// [`MigrationError::Unconfirmed`].
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
    /// The source told the destination to run the guest but got no confirmation: the
    /// guest may run there. The source stays paused; resuming it could run the guest
    /// twice on the same disks.
    #[error(
        "the destination was told to run the guest but did not confirm ({0}); it may \
         be running there: this VM stays paused (check the destination, then destroy \
         this one, or resume it only if the destination never received go)"
    )]
    Unconfirmed(String),
}
