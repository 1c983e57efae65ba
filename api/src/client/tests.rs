//! The HTTP reading and error mapping, on canned bytes (the live server tests are in
//! `server::tests::live`).

use std::io::Cursor;

use super::http::{read_response, write_request, ReadError};
use super::*;

fn parse(raw: &str) -> Result<RawResponse, ReadError> {
    read_response(Cursor::new(raw.as_bytes().to_vec()))
}

#[test]
fn error_bodies_become_api_errors() {
    let r = parse(
        "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 56\r\n\r\n\
         {\"status\":409,\"message\":\"cannot pause a VM that is paused\"}",
    );
    // Content-Length counts 56 bytes of a 58-byte body: only those are read.
    let r = r.unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(r.body.len(), 56);

    let body = br#"{"status":409,"message":"cannot pause a VM that is paused"}"#;
    let r = RawResponse {
        status: 409,
        headers: vec![],
        body: body.to_vec(),
    };
    assert_eq!(
        api_error(&r),
        ApiError::conflict("cannot pause a VM that is paused")
    );
}

#[test]
fn a_non_json_error_body_keeps_status_and_text() {
    let r = parse("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops").unwrap();
    assert_eq!(api_error(&r), ApiError::new(500, "oops"));
    let r = parse("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(api_error(&r), ApiError::new(502, "HTTP status 502"));
}

#[test]
fn bodies_by_length_chunked_or_until_close() {
    let r = parse("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(r.header("Content-Length"), Some("2"));
    let r = parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.body, b"{\"a\":1}");
    let r = parse("HTTP/1.0 200 OK\r\n\r\n{\"state\":\"running\"}").unwrap();
    assert_eq!(r.body, b"{\"state\":\"running\"}");
}

#[test]
fn malformed_answers_are_named() {
    let bad = |raw: &str| match parse(raw) {
        Err(ReadError::Bad(m)) => m,
        other => panic!("{raw:?} parsed: {other:?}"),
    };
    assert!(bad("").contains("without an answer"));
    assert!(bad("SSH-2.0-OpenSSH\r\n\r\n").contains("not an HTTP/1"));
    assert!(bad("HTTP/1.1 abc\r\n\r\n").contains("status line"));
    assert!(bad("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}").contains("2 of 10"));
    assert!(bad("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").contains("Content-Length"));
}

#[test]
fn requests_carry_length_and_close() {
    let mut out = Vec::new();
    write_request(&mut out, "PUT", "/v1/vm", Some(b"{}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("PUT /v1/vm HTTP/1.1\r\n"), "{text}");
    assert!(text.contains("\r\nContent-Length: 2\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n{}"), "{text}");
}

#[test]
fn a_missing_socket_is_gone_not_an_io_error() {
    let e = Client::new("/nonexistent/oxvm-test.sock")
        .info()
        .unwrap_err();
    assert!(e.is_gone(), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/oxvm-test.sock"), "{e}");
    let http = ClientError::Http(ApiError::conflict("no"));
    assert!(!http.is_gone());
}

#[test]
fn a_silent_server_times_out() {
    let dir = std::env::temp_dir().join(format!("oxvm-client-timeout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("silent.sock");
    // Accepts (the kernel queues the connection) but never answers.
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = Client::new(&sock)
        .with_timeout(Duration::from_millis(100))
        .info()
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    match e {
        ClientError::Io { source, .. } => {
            assert_eq!(source.kind(), io::ErrorKind::TimedOut);
            assert!(source.to_string().contains("no answer within"), "{source}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}
