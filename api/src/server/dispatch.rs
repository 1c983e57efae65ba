//! From a request (method, URL, body) to a [`Reply`]: route lookup, body parsing, the
//! controller call. No sockets here, so every refusal is testable with a mock
//! controller — and every refusal happens before the controller is called, so a bad
//! request cannot change the VM.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use serde::Serialize;

use super::routes::{self, Miss, Route, Target};
use crate::config::{ConfigError, MAX_SHUTDOWN_TIMEOUT_S};
use crate::control::{
    check_snapshot_name, ApiError, ApiReply, ApiRequest, RevertParams, ShutdownParams,
    SnapshotParams, VersionInfo, VmAction, VmController, API_VERSION,
};
use crate::VmConfig;

/// Largest request body accepted (a VM config is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the request handlers share.
pub(crate) struct Ctx {
    pub controller: Arc<dyn VmController>,
    /// Relative paths in a VM config sent over the API resolve against this: the
    /// server's working directory when it started. Clients should send absolute paths
    /// (`oxvm ctl` does).
    pub base_dir: PathBuf,
    /// Requests being handled right now (bounded by the worker).
    pub in_flight: AtomicUsize,
}

/// An HTTP answer: status, JSON body and, for 405, the allowed methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub json: String,
    pub allow: Option<String>,
}

impl Reply {
    pub fn ok<T: Serialize>(status: u16, value: &T) -> Reply {
        match serde_json::to_string(value) {
            Ok(json) => Reply {
                status,
                json,
                allow: None,
            },
            Err(e) => Reply::error(ApiError::internal(format!("encoding the reply: {e}"))),
        }
    }

    /// The error's status is the HTTP status; a controller that returns a status that is
    /// not an error status gets 500 (with the odd status named) rather than a "success"
    /// with an error body.
    pub fn error(e: ApiError) -> Reply {
        let e = if (400..=599).contains(&e.status) {
            e
        } else {
            ApiError::internal(format!("{} (invalid status {})", e.message, e.status))
        };
        let json = serde_json::to_string(&e).unwrap_or_else(|_| {
            r#"{"status":500,"message":"cannot encode the error"}"#.to_string()
        });
        Reply {
            status: e.status,
            json,
            allow: None,
        }
    }
}

/// What a parsed request asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// `GET /v1/version`, answered here.
    Version,
    /// Hand to the controller; reply with this status on success.
    Call(ApiRequest, u16),
}

/// Answer one request. `read_body` is called (with the size limit) only once the route
/// is known, so a 404 or 405 never waits for a body.
pub(crate) fn handle(
    method: &str,
    url: &str,
    read_body: impl FnOnce(usize) -> Result<Vec<u8>, ApiError>,
    ctx: &Ctx,
) -> Reply {
    // The query string is ignored: no route takes parameters there.
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    let route = match routes::find(method, path) {
        Ok(r) => r,
        Err(Miss::NotFound) => {
            return Reply::error(ApiError::not_found(format!("no route for {path}")))
        }
        Err(Miss::WrongMethod(allowed)) => {
            let allow = allowed.join(", ");
            let mut r = Reply::error(ApiError::method_not_allowed(format!(
                "{method} is not allowed on {path}; allowed: {allow}"
            )));
            r.allow = Some(allow);
            return r;
        }
    };
    let body = match read_body(MAX_BODY_BYTES) {
        Ok(b) => b,
        Err(e) => return Reply::error(e),
    };
    match parse(route, path, &body, &ctx.base_dir) {
        Err(e) => Reply::error(e),
        Ok(Parsed::Version) => Reply::ok(
            200,
            &VersionInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                api: API_VERSION,
            },
        ),
        Ok(Parsed::Call(request, status)) => match ctx.controller.handle(request) {
            Ok(ApiReply::Info(info)) => Reply::ok(status, &info),
            Ok(ApiReply::Counters(counters)) => Reply::ok(status, &counters),
            Ok(ApiReply::Action(reply)) => Reply::ok(status, &reply),
            Ok(ApiReply::Migration(m)) => Reply::ok(status, &m),
            Ok(ApiReply::Snapshot(s)) => Reply::ok(status, &s),
            Ok(ApiReply::Snapshots(l)) => Reply::ok(status, &l),
            Err(e) => Reply::error(e),
        },
    }
}

/// Turn a matched route, the request path and its body into what to do. GET routes
/// ignore a body.
pub(crate) fn parse(
    route: &Route,
    path: &str,
    body: &[u8],
    base: &Path,
) -> Result<Parsed, ApiError> {
    Ok(match route.target {
        Target::Version => Parsed::Version,
        Target::Info => Parsed::Call(ApiRequest::Info, 200),
        Target::Counters => Parsed::Call(ApiRequest::Counters, 200),
        Target::Create => Parsed::Call(ApiRequest::Create(Box::new(vm_config(body, base)?)), 201),
        Target::Deploy => Parsed::Call(ApiRequest::Deploy(Box::new(vm_config(body, base)?)), 201),
        Target::Action(name) => {
            let params = if VmAction::takes_shutdown_params(name) {
                shutdown_params(body)?
            } else {
                no_body(name, body)?;
                ShutdownParams::default()
            };
            let action = VmAction::from_name(name, params)
                .ok_or_else(|| ApiError::internal(format!("route for unknown action {name}")))?;
            // The guest acts on a shutdown or reboot asynchronously: "accepted".
            let status = if VmAction::takes_shutdown_params(name) {
                202
            } else {
                200
            };
            Parsed::Call(ApiRequest::Action(action), status)
        }
        Target::Save => Parsed::Call(ApiRequest::Save(json_body(body, "save")?), 200),
        Target::Restore => Parsed::Call(ApiRequest::Restore(json_body(body, "restore")?), 201),
        Target::MigrationStatus => Parsed::Call(ApiRequest::MigrationStatus, 200),
        Target::Migrate => {
            let p: crate::control::MigrateParams = json_body(body, "migration")?;
            // With `wait` the answer is the final status: the migration is done.
            let status = if p.wait { 200 } else { 202 };
            Parsed::Call(ApiRequest::Migrate(p), status)
        }
        Target::Incoming => Parsed::Call(
            ApiRequest::Incoming(json_body(body, "incoming migration")?),
            202,
        ),
        Target::SnapshotList => Parsed::Call(ApiRequest::SnapshotList, 200),
        Target::SnapshotGet => {
            Parsed::Call(ApiRequest::SnapshotGet(snapshot_name(route, path)?), 200)
        }
        Target::SnapshotCreate => {
            let p: SnapshotParams = json_body(body, "snapshot")?;
            check_snapshot_name(&p.name).map_err(ApiError::bad_request)?;
            Parsed::Call(ApiRequest::SnapshotCreate(p), 201)
        }
        Target::SnapshotRevert => {
            let name = snapshot_name(route, path)?;
            let p = if text(body)?.trim().is_empty() {
                RevertParams::default()
            } else {
                json_body(body, "revert")?
            };
            Parsed::Call(ApiRequest::SnapshotRevert(name, p), 200)
        }
        Target::SnapshotDelete => {
            Parsed::Call(ApiRequest::SnapshotDelete(snapshot_name(route, path)?), 200)
        }
        Target::Reserved(feature) => {
            return Err(ApiError::not_implemented(format!(
                "{} {}: {feature} is not implemented in this release",
                route.method, route.path
            )))
        }
    })
}

/// The `{name}` segment of a snapshot route, checked like a new snapshot's name (so a
/// path can never reach outside the snapshots directory).
fn snapshot_name(route: &Route, path: &str) -> Result<String, ApiError> {
    let name = routes::segment(route.path, path, "{name}")
        .ok_or_else(|| ApiError::internal(format!("{} has no {{name}}", route.path)))?;
    check_snapshot_name(name).map_err(ApiError::bad_request)?;
    Ok(name.to_string())
}

/// A required JSON body of type `T` (unknown fields refused, serde names the field).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_str(text(body)?)
        .map_err(|e| ApiError::bad_request(format!("{what} parameters: {e}")))
}

fn text(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not UTF-8: {e}")))
}

fn vm_config(body: &[u8], base: &Path) -> Result<VmConfig, ApiError> {
    VmConfig::from_json(text(body)?, base).map_err(|e| {
        ApiError::bad_request(match e {
            // ConfigError::Parse names a file path, which an API body does not have.
            ConfigError::Parse { source, .. } => format!("VM config: {source}"),
            other => other.to_string(),
        })
    })
}

/// An empty body means "the VM file's `shutdown` defaults".
fn shutdown_params(body: &[u8]) -> Result<ShutdownParams, ApiError> {
    let text = text(body)?;
    if text.trim().is_empty() {
        return Ok(ShutdownParams::default());
    }
    let p: ShutdownParams = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("shutdown parameters: {e}")))?;
    if let Some(t) = p.timeout_s.filter(|t| *t > MAX_SHUTDOWN_TIMEOUT_S) {
        return Err(ApiError::bad_request(format!(
            "shutdown parameters: timeout_s: {t} s is above the limit of {MAX_SHUTDOWN_TIMEOUT_S} s"
        )));
    }
    Ok(p)
}

/// Actions without parameters take no body; `{}` is tolerated (what many HTTP clients
/// send for an empty POST).
fn no_body(name: &str, body: &[u8]) -> Result<(), ApiError> {
    let text = text(body)?.trim();
    let empty_object = || {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .is_ok_and(|m| m.is_empty())
    };
    if text.is_empty() || empty_object() {
        return Ok(());
    }
    let shown: String = text.chars().take(60).collect();
    Err(ApiError::bad_request(format!(
        "{name} takes no request body (got {shown:?})"
    )))
}
