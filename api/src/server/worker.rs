//! The `api` thread and the request threads.
//!
//! tiny_http reads requests on its own connection threads and queues them; the `api`
//! thread takes each one off the queue and hands it to a fresh `api-req` thread. So a
//! request whose controller call blocks (a pause waits for every vCPU to stop) holds up
//! neither the queue nor other clients. The `api` thread itself never calls the
//! controller, so stopping the server cannot wait on the VM.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tiny_http::{Request, Server};

use super::dispatch::{self, Ctx, Reply, MAX_BODY_BYTES};
use super::{oversized, response};
use crate::control::ApiError;

/// Requests handled at once; more are answered 503 at once (a client looping without
/// waiting for answers must not make the VM process spawn threads without bound).
pub const MAX_IN_FLIGHT: usize = 64;

/// The `api` thread's loop: until [`super::ApiServer`] sets `stopping` and unblocks it.
pub(crate) fn accept_loop(server: Arc<Server>, ctx: Arc<Ctx>, stopping: Arc<AtomicBool>) {
    loop {
        match server.recv() {
            Ok(request) => spawn_request(request, &ctx),
            Err(_) if stopping.load(Ordering::Acquire) => break,
            // tiny_http reports a failed accept() once and stops accepting; requests on
            // connections already open are still served.
            Err(e) => tracing::error!("API server: {e}"),
        }
    }
}

/// Decrements the in-flight count when the request thread ends (or never starts).
struct InFlight(Arc<Ctx>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn spawn_request(request: Request, ctx: &Arc<Ctx>) {
    if ctx.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
        ctx.in_flight.fetch_sub(1, Ordering::AcqRel);
        let busy = ApiError::unavailable(format!(
            "too many API requests in flight (limit {MAX_IN_FLIGHT}); retry later"
        ));
        send(request, &Reply::error(busy));
        return;
    }
    let guard = InFlight(ctx.clone());
    let spawned = std::thread::Builder::new()
        .name("api-req".to_string())
        .spawn(move || {
            serve_request(request, &guard.0);
            drop(guard);
        });
    if let Err(e) = spawned {
        // The request went down with the closure; tiny_http answers it 500.
        tracing::error!("API server: cannot start a request thread: {e}");
    }
}

fn serve_request(mut request: Request, ctx: &Ctx) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let declared = request.body_length();
    if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES) {
        // Before routing: even a 404 would drop the request and drain the body.
        oversized::refuse(request, n, MAX_BODY_BYTES);
        return;
    }
    let reply = dispatch::handle(
        &method,
        &url,
        |limit| read_body(declared, request.as_reader(), limit),
        ctx,
    );
    if method == "GET" && reply.status < 400 {
        tracing::debug!("API {method} {url}: {}", reply.status);
    } else {
        tracing::info!("API {method} {url}: {}", reply.status);
    }
    send(request, &reply);
}

fn send(request: Request, reply: &Reply) {
    if let Err(e) = request.respond(response::build(reply)) {
        tracing::debug!("API client went away before its answer: {e}");
    }
}

/// Read at most `limit` bytes of body; a declared length over the limit is refused
/// before reading (and before tiny_http sends `100 Continue`).
pub(crate) fn read_body(
    declared: Option<usize>,
    reader: &mut dyn Read,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(ApiError::new(
            413,
            format!("request body is {n} bytes; the limit is {limit}"),
        ));
    }
    let mut body = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    if body.len() > limit {
        return Err(ApiError::new(
            413,
            format!("request body is over the limit of {limit} bytes"),
        ));
    }
    Ok(body)
}
