//! A real server on a temporary socket, driven through the client.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::mock::Mock;
use super::TempDir;
use crate::client::{Client, ClientError};
use crate::control::{ApiRequest, VmAction, VmState};
use crate::runtime_dir::registered_in;
use crate::server::{serve_registered, ApiServer, ServerError, MAX_BODY_BYTES};

struct Setup {
    dir: TempDir,
    registry: TempDir,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        Setup {
            dir: TempDir::new(tag),
            registry: TempDir::new(&format!("{tag}-run")),
        }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("vm.sock")
    }

    fn serve(&self, mock: &Arc<Mock>) -> Result<ApiServer, ServerError> {
        serve_registered(&self.socket(), mock.clone(), self.registry.path())
    }
}

/// Send raw bytes and read one answer (for requests the client would not make).
fn raw_request(socket: &std::path::Path, bytes: &[u8]) -> crate::client::RawResponse {
    use std::io::Write;
    let mut raw = std::os::unix::net::UnixStream::connect(socket).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(bytes).unwrap();
    crate::client::http::read_response(&raw).unwrap()
}

#[test]
fn the_socket_is_0600_registered_and_removed_on_drop() {
    let s = Setup::new("mode");
    let mock = Arc::new(Mock::default());
    let server = s.serve(&mock).unwrap();
    let mode = std::fs::metadata(s.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(server.socket(), s.socket());
    assert_eq!(registered_in(s.registry.path()), vec![s.socket()]);
    let link = server.registration().unwrap().to_path_buf();
    assert_eq!(
        link.file_name().unwrap().to_str().unwrap(),
        format!("{}.sock", std::process::id())
    );
    assert_eq!(Client::new(s.socket()).version().unwrap().api, 1);

    drop(server);
    assert!(!s.socket().exists(), "the socket file is left");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the link is left"
    );
    assert!(registered_in(s.registry.path()).is_empty());
    let e = Client::new(s.socket()).info().unwrap_err();
    assert!(e.is_gone(), "{e}");
}

#[test]
fn twenty_concurrent_infos_all_succeed() {
    let s = Setup::new("parallel");
    let mock = Arc::new(Mock {
        delay: Duration::from_millis(50),
        ..Mock::default()
    });
    let _server = s.serve(&mock).unwrap();
    let start = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let client = Client::new(s.socket());
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                client.info()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap().state, VmState::Running);
    }
    assert_eq!(mock.calls().len(), 20);
    // Each call takes 50 ms: 20 clients at once overlap unless calls are serialized.
    let parallel = mock.max_parallel.load(Ordering::SeqCst);
    assert!(parallel > 1, "controller calls never overlapped");
}

#[test]
fn a_second_server_on_a_live_socket_is_refused() {
    let s = Setup::new("twice");
    let mock = Arc::new(Mock::default());
    let _first = s.serve(&mock).unwrap();
    let Err(e) = s.serve(&mock) else {
        panic!("a second server started on a live socket");
    };
    assert!(matches!(e, ServerError::InUse { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&s.socket().display().to_string()) && msg.contains("another process"),
        "{msg}"
    );
    // The refusal left the first server alone.
    assert_eq!(Client::new(s.socket()).info().unwrap().pid, 4242);
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let s = Setup::new("stale");
    // A listener that is closed leaves its file behind, as a killed process does.
    drop(UnixListener::bind(s.socket()).unwrap());
    assert!(s.socket().exists());
    let mock = Arc::new(Mock::default());
    let _server = s.serve(&mock).unwrap();
    assert_eq!(Client::new(s.socket()).info().unwrap().pid, 4242);
}

#[test]
fn a_path_that_is_not_a_socket_is_left_alone() {
    let s = Setup::new("file");
    std::fs::write(s.socket(), "precious").unwrap();
    let Err(e) = s.serve(&Arc::new(Mock::default())) else {
        panic!("served over a regular file");
    };
    assert!(matches!(e, ServerError::NotASocket { .. }), "{e:?}");
    assert_eq!(std::fs::read_to_string(s.socket()).unwrap(), "precious");
}

#[test]
fn a_too_long_path_is_refused_naming_it() {
    let s = Setup::new("long");
    let long = s.dir.path().join("x".repeat(120));
    let Err(e) = serve_registered(&long, Arc::new(Mock::default()), s.registry.path()) else {
        panic!("bound a path longer than sun_path");
    };
    assert!(matches!(e, ServerError::PathTooLong { .. }), "{e:?}");
}

#[test]
fn refusals_over_the_socket_never_reach_the_controller() {
    let s = Setup::new("refuse");
    let mock = Arc::new(Mock::default());
    let _server = s.serve(&mock).unwrap();
    let client = Client::new(s.socket());

    // Declared too large: answered without reading the body (sent in part only).
    let head = format!(
        "PUT /v1/vm HTTP/1.1\r\nContent-Length: {}\r\n\r\n{{",
        MAX_BODY_BYTES + 1
    );
    assert_eq!(raw_request(&s.socket(), head.as_bytes()).status, 413);
    // Not declared (chunked) and too large: refused once the limit is passed.
    let mut chunked = b"PUT /v1/vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b' '; 64 << 10];
    for _ in 0..(MAX_BODY_BYTES / chunk.len() + 1) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_request(&s.socket(), &chunked).status, 413);
    let r = client
        .request("POST", "/v1/vm/actions/pause", Some(b"{\"x\":1}"))
        .unwrap();
    assert_eq!(r.status, 400);
    let r = client.request("GET", "/v1/nothing", None).unwrap();
    assert_eq!(r.status, 404);
    let r = client.request("PATCH", "/v1/vm", None).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, PUT"));
    let r = client.request("POST", "/v1/vm/nics", None).unwrap();
    assert_eq!(r.status, 501);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let e: crate::control::ApiError = serde_json::from_slice(&r.body).unwrap();
    assert!(e.message.contains("hotplug"), "{e}");
    // A snapshot without its body is refused before the controller.
    let r = client.request("POST", "/v1/vm/snapshots", None).unwrap();
    assert_eq!(r.status, 400);
    // A migration without its body is refused before the controller.
    let r = client.request("POST", "/v1/vm/migration", None).unwrap();
    assert_eq!(r.status, 400);

    assert!(mock.calls().is_empty(), "{:?}", mock.calls());
}

#[test]
fn statuses_and_bodies_over_the_socket() {
    let s = Setup::new("status");
    let mock = Arc::new(Mock::default());
    let _server = s.serve(&mock).unwrap();
    let client = Client::new(s.socket());
    let r = client
        .request("POST", "/v1/vm/actions/shutdown", Some(b"{\"force\":true}"))
        .unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(r.body, b"{\"state\":\"running\"}");
    let r = client.request("GET", "/v1/vm/counters", None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(client.counters().unwrap().disks.is_empty());
    let reply = client.action(&VmAction::Pause).unwrap();
    assert_eq!(reply.state, VmState::Running);
    // shutdown, counters (raw), counters (typed), pause.
    assert_eq!(mock.calls().len(), 4);
    assert_eq!(mock.calls()[3], ApiRequest::Action(VmAction::Pause));
}

#[test]
fn the_client_turns_error_statuses_into_api_errors() {
    let s = Setup::new("clienterr");
    let mock = Arc::new(Mock {
        fail: Some(crate::control::ApiError::conflict(
            "cannot boot a VM that is running",
        )),
        ..Mock::default()
    });
    let _server = s.serve(&mock).unwrap();
    match Client::new(s.socket()).action(&VmAction::Boot) {
        Err(ClientError::Http(e)) => {
            assert_eq!(e.status, 409);
            assert_eq!(e.message, "cannot boot a VM that is running");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
}

#[test]
fn create_sends_a_config_the_server_takes_as_is() {
    let s = Setup::new("create");
    let mock = Arc::new(Mock::default());
    let _server = s.serve(&mock).unwrap();
    let json = r#"{ "name": "web", "vcpus": 2, "memory_mib": 128,
        "boot": { "kernel": "/k/vmlinux", "cmdline": "console=ttyS0" },
        "disks": [ { "id": "vda", "path": "/d/root.qcow2", "format": "qcow2" } ],
        "shutdown": { "timeout_s": 30, "force": false } }"#;
    let cfg = crate::VmConfig::from_json(json, std::path::Path::new("/")).unwrap();
    let reply = Client::new(s.socket()).create(&cfg).unwrap();
    assert_eq!(reply.state, VmState::Created);
    Client::new(s.socket()).deploy(&cfg).unwrap();
    assert_eq!(
        mock.calls(),
        vec![
            ApiRequest::Create(Box::new(cfg.clone())),
            ApiRequest::Deploy(Box::new(cfg))
        ]
    );
}

#[test]
fn a_huge_declared_body_is_refused_and_the_server_lives_on() {
    let s = Setup::new("huge");
    let mock = Arc::new(Mock::default());
    let _server = s.serve(&mock).unwrap();
    // tiny_http alone would try to allocate the declared size to drain it, and abort.
    let r = raw_request(
        &s.socket(),
        b"GET /v1/nowhere HTTP/1.1\r\nContent-Length: 100000000000000\r\n\r\nabc",
    );
    assert_eq!(r.status, 413);
    let e: crate::control::ApiError = serde_json::from_slice(&r.body).unwrap();
    assert!(e.message.contains("100000000000000"), "{e}");
    assert_eq!(Client::new(s.socket()).info().unwrap().pid, 4242);
    assert_eq!(
        mock.calls().len(),
        1,
        "only the info reached the controller"
    );
}
