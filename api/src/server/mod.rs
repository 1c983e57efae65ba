//! The control API server: HTTP/1.1 over a Unix socket (tiny_http), one VM per socket.
//!
//! [`serve`] binds the socket (mode 0600: only the VM's user may drive it), registers it
//! in the runtime directory for `oxvm list`, and answers requests on its own threads
//! by calling the [`VmController`]. The routes are in [`ROUTES`]; `api/openapi.json`
//! and `docs/api.md` describe them.
//!
//! Request bodies are JSON; the Content-Type header is not checked (`curl -d` sends
//! `application/x-www-form-urlencoded` by default, and there is nothing else to send).

mod dispatch;
mod listener;
mod oversized;
mod response;
mod routes;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

pub use dispatch::MAX_BODY_BYTES;
pub use routes::{Route, Target, ROUTES};
pub use worker::MAX_IN_FLIGHT;

use crate::control::VmController;
use crate::runtime_dir::{self, Registration};

/// Why the API server could not start. Every variant names the socket path.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "API socket {}: another process is serving on it (stop it, or choose another path)",
        .path.display()
    )]
    InUse { path: PathBuf },
    #[error("API socket {}: the path exists and is not a socket; not replacing it", .path.display())]
    NotASocket { path: PathBuf },
    #[error(
        "API socket {}: a Unix socket path can be at most {max} bytes long",
        .path.display()
    )]
    PathTooLong { path: PathBuf, max: usize },
    #[error("API socket {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API socket {}: cannot start the server: {reason}", .path.display())]
    Start { path: PathBuf, reason: String },
}

/// A running API server. Dropping it (or [`ApiServer::shutdown`]) stops accepting,
/// joins the `api` thread, and removes the socket file and its registration. Requests
/// already being handled finish on their own threads (they hold the controller).
pub struct ApiServer {
    socket: PathBuf,
    server: Option<Arc<tiny_http::Server>>,
    thread: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    registration: Option<Registration>,
    /// Shared with the request threads: how many are still answering.
    ctx: Arc<dispatch::Ctx>,
}

/// How long a stopping server waits for requests already being answered. The VM
/// process exits right after the server stops; without this wait the answer to the
/// request that stopped it (`destroy`) would be cut off mid-write.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serve the control API on the Unix socket `socket`, registered in
/// [`runtime_dir::runtime_dir`]. Fails if another process serves on that path; a stale
/// socket file (nobody listening) is replaced.
///
/// The server's threads inherit the caller's signal mask: call it after blocking the
/// signals the caller reads from a signalfd.
pub fn serve(socket: &Path, controller: Arc<dyn VmController>) -> Result<ApiServer, ServerError> {
    serve_registered(socket, controller, &runtime_dir::runtime_dir())
}

/// [`serve`] with the registration directory given (tests use their own).
pub(crate) fn serve_registered(
    socket: &Path,
    controller: Arc<dyn VmController>,
    registry: &Path,
) -> Result<ApiServer, ServerError> {
    // Absolute, so the registration link, the removal at the end and tiny_http's own
    // bookkeeping do not depend on the working directory.
    let socket = std::path::absolute(socket).map_err(|source| ServerError::Io {
        path: socket.to_path_buf(),
        source,
    })?;
    let listener = listener::listen(&socket)?;
    let ctx = Arc::new(dispatch::Ctx {
        controller,
        base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        in_flight: AtomicUsize::new(0),
    });
    let stopping = Arc::new(AtomicBool::new(false));

    // tiny_http starts its accept and connection threads from the thread that builds
    // the server, and unnamed threads inherit their creator's name: building it on the
    // `api` thread makes them all `api` in `top -H` instead of the VM's name.
    let (tx, rx) = mpsc::channel();
    let thread_stopping = stopping.clone();
    let server_ctx = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("api".to_string())
        .spawn(move || {
            let server = match tiny_http::Server::from_listener(listener, None) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            if tx.send(Ok(server.clone())).is_err() {
                return;
            }
            worker::accept_loop(server, ctx, thread_stopping);
        });
    let start_failed = |reason: String| {
        let _ = std::fs::remove_file(&socket);
        ServerError::Start {
            path: socket.clone(),
            reason,
        }
    };
    let thread = spawned.map_err(|e| start_failed(e.to_string()))?;
    let server = match rx.recv() {
        Ok(Ok(server)) => server,
        Ok(Err(reason)) => return Err(start_failed(reason)),
        Err(_) => return Err(start_failed("the api thread ended".to_string())),
    };

    // `oxvm list` is a convenience: a VM whose registration fails still serves.
    let registration = match Registration::create(registry, &socket) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(
                "API socket {}: not registered in {} (oxvm list will not show it): {e}",
                socket.display(),
                registry.display()
            );
            None
        }
    };
    tracing::info!("API listening on {}", socket.display());
    Ok(ApiServer {
        socket,
        server: Some(server),
        thread: Some(thread),
        stopping,
        registration,
        ctx: server_ctx,
    })
}

impl ApiServer {
    /// The socket path (absolute).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The registration link in the runtime directory, if registering worked.
    pub fn registration(&self) -> Option<&Path> {
        self.registration.as_ref().map(Registration::link)
    }

    /// Stop now (the same as dropping it).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        server.unblock();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("API server: the api thread panicked");
            }
        }
        self.drain_in_flight();
        // The last reference: tiny_http closes the listener and removes the socket file.
        drop(server);
        if let Some(r) = self.registration.take() {
            r.remove();
        }
        tracing::info!("API socket {} closed", self.socket.display());
    }
}

impl ApiServer {
    /// Wait (bounded) until every request thread has written its answer. The
    /// controller must already refuse new work (the VMM closes its channel first), so
    /// the threads only have an answer left to write.
    fn drain_in_flight(&self) {
        let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
        while self.ctx.in_flight.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                tracing::warn!("API server: stopping with requests still in flight");
                return;
            }
            // The request threads keep a counter, not a condition variable: polling it
            // for a few milliseconds at shutdown costs nothing.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
