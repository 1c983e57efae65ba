//! Why a named snapshot could not be taken, listed, reverted to or deleted. Each
//! refusal happens before anything changes and says which field or file is at fault.

use std::path::PathBuf;

use crate::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum NamedSnapshotError {
    #[error(
        "snapshots_dir: the VM config has none; set it to the directory where named \
         snapshots keep their VM state and memory"
    )]
    NoDir,
    #[error("no snapshot named {0:?}")]
    NotFound(String),
    #[error("a snapshot named {0:?} exists already")]
    Exists(String),
    /// The request cannot work with this VM (e.g. a raw disk): 400.
    #[error("{0}")]
    Refused(String),
    /// The files on the host are in the way (a layer name taken, a layer missing): 409.
    #[error("{0}")]
    Conflict(String),
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] SnapshotError),
    /// The machine could not be quiesced, saved or rebuilt.
    #[error("{0}")]
    Vm(#[from] crate::VmmError),
}

impl NamedSnapshotError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            path,
            action,
            source,
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoDir | Self::Refused(_) => 400,
            Self::NotFound(_) => 404,
            Self::Exists(_) | Self::Conflict(_) => 409,
            Self::Io { .. } | Self::State(_) | Self::Vm(_) => 500,
        }
    }
}
