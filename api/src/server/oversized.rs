//! Refusing a request whose declared body is over the limit, without letting tiny_http
//! drain it.
//!
//! tiny_http 0.12.0 drains an unread body when the request is dropped, into a buffer
//! allocated at the *declared* remaining size (`util/equal_reader.rs`:
//! `vec![0; remaining]`), and also when the body reader hits an early end of stream.
//! One request with `Content-Length: 100000000000000` aborts the whole VM process with
//! an allocation failure (reproduced here; upstream tiny-http/tiny-http#290). Every
//! ordinary way to answer drops the request, so such a request is answered through
//! `Request::upgrade`, which hands over the body reader with the connection, and that
//! stream is leaked instead of dropped.
//!
//! The cost: one file descriptor and one parked tiny_http connection thread per
//! oversized request, until the process ends — caused only by a client that may write
//! to the 0600 socket, i.e. the VM's own user — instead of a dead VM. A server that
//! reads bodies itself would not need this; see the note in docs/api.md.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use tiny_http::{Header, Request, Response, StatusCode};

use super::dispatch::Reply;
use crate::control::ApiError;

/// Connections left open this way (for the log).
static LEFT_OPEN: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn refuse(request: Request, declared: usize, limit: usize) {
    let reply = Reply::error(ApiError::new(
        413,
        format!("request body is {declared} bytes; the limit is {limit}"),
    ));
    let left_open = LEFT_OPEN.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        "API {} {}: 413, a {declared}-byte body refused unread; connections left open: \
         {left_open}",
        request.method(),
        request.url()
    );
    let mut response = Response::empty(StatusCode(413));
    if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
        response.add_header(h);
    }
    // `upgrade` writes no Content-Length and tiny_http drops one given as a header, but
    // the client needs it: the connection is never closed. The line is carried in the
    // value of a harmless header.
    let framing = format!("unread\r\nContent-Length: {}", reply.json.len());
    if let Ok(h) = Header::from_bytes("X-Oxvm-Body", framing) {
        response.add_header(h);
    }
    let mut stream = request.upgrade("oxvm-refused", response);
    if let Err(e) = stream
        .write_all(reply.json.as_bytes())
        .and_then(|()| stream.flush())
    {
        tracing::debug!("API client went away before its answer: {e}");
    }
    std::mem::forget(stream);
}
