//! A [`Reply`] as a tiny_http response.

use std::io::Cursor;

use tiny_http::{Header, Response, StatusCode};

use super::dispatch::Reply;

pub(crate) fn build(reply: &Reply) -> Response<Cursor<Vec<u8>>> {
    let mut response = Response::from_string(reply.json.clone())
        .with_status_code(StatusCode(reply.status))
        // Always a Content-Length, never chunked: replies are small, and simple clients
        // (ours, `nc`, scripts) only need to read that many bytes.
        .with_chunked_threshold(usize::MAX)
        .with_header(header("Content-Type", "application/json"));
    if let Some(allow) = &reply.allow {
        response.add_header(header("Allow", allow));
    }
    response
}

fn header(name: &str, value: &str) -> Header {
    // Both are ASCII constants or method names, which tiny_http always accepts.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}
