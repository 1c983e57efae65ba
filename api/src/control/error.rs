use serde::{Deserialize, Serialize};

/// An error answer: an HTTP status and a message that names the problem. It is also the
/// JSON body of every error response: `{"status": 409, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (HTTP {status})")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// Malformed request: bad JSON, unknown field, bad value, invalid VM config.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, message)
    }
    /// The action is not valid in the VM's current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    /// A route reserved for a later release (snapshots, migration, hotplug).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(501, message)
    }
    /// The VMM is gone (the VM stopped while the request was in flight).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }
}
