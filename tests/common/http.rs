//! A deliberately raw HTTP/1.1 client over a Unix socket, so tests can send exactly
//! the bytes they mean (malformed ones included) to the VM's API socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Send raw request bytes; returns (status, parsed JSON body or Null).
pub fn raw(socket: &Path, request: &[u8]) -> (u16, Value) {
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

/// One request with an optional JSON body (`Connection: close`).
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(socket, req.as_bytes())
}

pub fn get(socket: &Path, path: &str) -> Value {
    let (status, v) = call(socket, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// POST an action; asserts the status and returns the body.
pub fn action(socket: &Path, name: &str, body: Option<&str>, want: u16) -> Value {
    let (status, v) = call(socket, "POST", &format!("/v1/vm/actions/{name}"), body);
    assert_eq!(status, want, "action {name}: {v}");
    v
}

pub fn state(socket: &Path) -> String {
    get(socket, "/v1/vm")["state"].as_str().unwrap().to_string()
}

/// Wait until the socket exists and answers (the VM process is up).
pub fn wait_ready(socket: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "API socket {} never answered",
            socket.display()
        );
        // Polling for a file another process creates; nothing to block on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll the VM's state until `pred` holds.
pub fn wait_state(socket: &Path, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let info = get(socket, "/v1/vm");
        if pred(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "state never matched; last: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
