//! A blocking client for the control API (what `oxvm ctl` and `oxvm list` use): one
//! connection per request, HTTP/1.1 over the VM's Unix socket.

pub(crate) mod http;

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use http::RawResponse;

use crate::control::{
    ActionReply, ApiError, Counters, IncomingParams, MigrateParams, MigrationStatus, RestoreParams,
    RevertParams, SaveParams, SnapshotInfo, SnapshotList, SnapshotParams, VersionInfo, VmAction,
    VmInfo,
};
use crate::VmConfig;

/// How long a request may take by default. Long enough for a pause that waits for
/// every vCPU; short enough that a hung VMM does not hang a script forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed; see [`ClientError::is_gone`].
    #[error("cannot connect to the VM at {}: {source}", .path.display())]
    Connect { path: PathBuf, source: io::Error },
    /// The connection broke or timed out mid-request.
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The VM answered with an error status (the server's message).
    #[error("{0}")]
    Http(ApiError),
    /// Not a well-formed answer (or not the JSON expected).
    #[error("{}: unexpected answer: {message}", .path.display())]
    BadReply { path: PathBuf, message: String },
}

impl ClientError {
    /// No process serves on the socket: the file is missing, or nobody listens (a VM
    /// process that ended, or one that has not created its socket yet).
    pub fn is_gone(&self) -> bool {
        matches!(self, ClientError::Connect { source, .. }
            if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused))
    }
}

/// A client for the VM serving on one socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Per-request read and write timeout (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/version`.
    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        self.call("GET", "/v1/version", None)
    }

    /// `GET /v1/vm`.
    pub fn info(&self) -> Result<VmInfo, ClientError> {
        self.call("GET", "/v1/vm", None)
    }

    /// `GET /v1/vm/counters`.
    pub fn counters(&self) -> Result<Counters, ClientError> {
        self.call("GET", "/v1/vm/counters", None)
    }

    /// `PUT /v1/vm`. Relative paths in `config` would resolve against the server's
    /// working directory: send absolute ones.
    pub fn create(&self, config: &VmConfig) -> Result<ActionReply, ClientError> {
        self.call("PUT", "/v1/vm", Some(&self.encode(config)?))
    }

    /// `POST /v1/vm/deploy` (create and boot).
    pub fn deploy(&self, config: &VmConfig) -> Result<ActionReply, ClientError> {
        self.call("POST", "/v1/vm/deploy", Some(&self.encode(config)?))
    }

    /// `POST /v1/vm/save`.
    pub fn save(&self, params: &SaveParams) -> Result<ActionReply, ClientError> {
        self.call("POST", "/v1/vm/save", Some(&self.encode(params)?))
    }

    /// `POST /v1/vm/restore` (into an empty `oxvm serve` process).
    pub fn restore(&self, params: &RestoreParams) -> Result<ActionReply, ClientError> {
        self.call("POST", "/v1/vm/restore", Some(&self.encode(params)?))
    }

    /// `GET /v1/vm/migration`.
    pub fn migration_status(&self) -> Result<MigrationStatus, ClientError> {
        self.call("GET", "/v1/vm/migration", None)
    }

    /// `POST /v1/vm/migration`: start sending this VM.
    pub fn migrate(&self, params: &MigrateParams) -> Result<ActionReply, ClientError> {
        self.call("POST", "/v1/vm/migration", Some(&self.encode(params)?))
    }

    /// `POST /v1/vm/migration` with `wait`: the answer is the final status.
    pub fn migrate_and_wait(&self, params: &MigrateParams) -> Result<MigrationStatus, ClientError> {
        self.call("POST", "/v1/vm/migration", Some(&self.encode(params)?))
    }

    /// `POST /v1/vm/migration/incoming`: listen for a migrating VM.
    pub fn migrate_incoming(&self, params: &IncomingParams) -> Result<ActionReply, ClientError> {
        self.call(
            "POST",
            "/v1/vm/migration/incoming",
            Some(&self.encode(params)?),
        )
    }

    /// `GET /v1/vm/snapshots`.
    pub fn snapshots(&self) -> Result<SnapshotList, ClientError> {
        self.call("GET", "/v1/vm/snapshots", None)
    }

    /// `POST /v1/vm/snapshots`.
    pub fn snapshot_create(&self, params: &SnapshotParams) -> Result<SnapshotInfo, ClientError> {
        self.call("POST", "/v1/vm/snapshots", Some(&self.encode(params)?))
    }

    /// `POST /v1/vm/snapshots/{name}/revert`.
    pub fn snapshot_revert(
        &self,
        name: &str,
        params: &RevertParams,
    ) -> Result<ActionReply, ClientError> {
        let path = format!("/v1/vm/snapshots/{name}/revert");
        self.call("POST", &path, Some(&self.encode(params)?))
    }

    /// `DELETE /v1/vm/snapshots/{name}`: the snapshots left.
    pub fn snapshot_delete(&self, name: &str) -> Result<SnapshotList, ClientError> {
        self.call("DELETE", &format!("/v1/vm/snapshots/{name}"), None)
    }

    /// `POST /v1/vm/actions/<name>`, with the shutdown parameters as body for
    /// shutdown and reboot.
    pub fn action(&self, action: &VmAction) -> Result<ActionReply, ClientError> {
        let path = format!("/v1/vm/actions/{}", action.name());
        let body = match action {
            VmAction::Shutdown(p) | VmAction::Reboot(p) => Some(self.encode(p)?),
            _ => None,
        };
        self.call("POST", &path, body.as_deref())
    }

    /// Any request; a non-2xx status is returned, not turned into an error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        })?;
        let io_err = |source: io::Error| ClientError::Io {
            path: self.socket.clone(),
            source: match source.kind() {
                // What a read or write timeout looks like on a Unix socket.
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", self.timeout.as_secs_f64()),
                ),
                _ => source,
            },
        };
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(io_err)?;
        let written = http::write_request(&mut &stream, method, path, body);
        // A server may answer (413, say) without reading the whole body and stop
        // reading: the answer is still worth more than the failed write.
        match (http::read_response(&stream), written) {
            (Ok(response), _) => Ok(response),
            (Err(_), Err(e)) => Err(io_err(e)),
            (Err(http::ReadError::Io(e)), Ok(())) => Err(io_err(e)),
            (Err(http::ReadError::Bad(message)), Ok(())) => Err(ClientError::BadReply {
                path: self.socket.clone(),
                message,
            }),
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let response = self.request(method, path, body)?;
        if !(200..300).contains(&response.status) {
            return Err(ClientError::Http(api_error(&response)));
        }
        serde_json::from_slice(&response.body).map_err(|e| ClientError::BadReply {
            path: self.socket.clone(),
            message: format!("{method} {path}: {e}"),
        })
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value).map_err(|e| ClientError::BadReply {
            path: self.socket.clone(),
            message: format!("cannot encode the request: {e}"),
        })
    }
}

/// The error body, or (from something that is not our server) the status with the
/// body's text.
pub(crate) fn api_error(response: &RawResponse) -> ApiError {
    serde_json::from_slice::<ApiError>(&response.body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(&response.body);
        let text = text.trim();
        ApiError::new(
            response.status,
            if text.is_empty() {
                format!("HTTP status {}", response.status)
            } else {
                text.chars().take(200).collect()
            },
        )
    })
}

#[cfg(test)]
mod tests;
