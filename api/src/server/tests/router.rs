//! The router without sockets: `dispatch::handle` with a recording mock controller.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::mock::Mock;
use crate::control::{
    ApiError, ApiRequest, MemoryMode, RestoreParams, RevertParams, SaveParams, ShutdownParams,
    SnapshotParams, VmAction,
};
use crate::server::dispatch::{handle, Ctx, Reply, MAX_BODY_BYTES};
use crate::server::routes::{Target, ROUTES};
use crate::server::worker::read_body;
use crate::VmConfig;

const VM: &str = r#"{ "name": "demo", "memory_mib": 64, "boot": { "kernel": "/k/vmlinux" } }"#;

fn ctx(mock: &Arc<Mock>) -> Ctx {
    Ctx {
        controller: mock.clone(),
        base_dir: PathBuf::from("/srv"),
        in_flight: AtomicUsize::new(0),
    }
}

fn call(mock: &Arc<Mock>, method: &str, url: &str, body: &str) -> Reply {
    let body = body.as_bytes().to_vec();
    handle(method, url, |_| Ok(body), &ctx(mock))
}

fn error_of(reply: &Reply) -> ApiError {
    serde_json::from_str(&reply.json).unwrap()
}

/// A refusal: the status, a message containing `needle`, and no controller call.
fn assert_refused(mock: &Arc<Mock>, reply: &Reply, status: u16, needle: &str) {
    assert_eq!(reply.status, status, "{}", reply.json);
    let e = error_of(reply);
    assert_eq!(e.status, status);
    assert!(
        e.message.contains(needle),
        "{:?} lacks {needle:?}",
        e.message
    );
    assert!(
        mock.calls().is_empty(),
        "a refused request reached the controller"
    );
}

#[test]
fn every_route_builds_its_request_and_status() {
    let cfg = VmConfig::from_json(VM, Path::new("/srv")).unwrap();
    let shutdown = ShutdownParams {
        timeout_s: Some(30),
        force: Some(false),
    };
    let cases: Vec<(&str, &str, &str, ApiRequest, u16)> = vec![
        ("GET", "/v1/vm", "", ApiRequest::Info, 200),
        ("GET", "/v1/vm/counters", "", ApiRequest::Counters, 200),
        (
            "PUT",
            "/v1/vm",
            VM,
            ApiRequest::Create(Box::new(cfg.clone())),
            201,
        ),
        (
            "POST",
            "/v1/vm/deploy",
            VM,
            ApiRequest::Deploy(Box::new(cfg)),
            201,
        ),
        (
            "POST",
            "/v1/vm/actions/boot",
            "",
            ApiRequest::Action(VmAction::Boot),
            200,
        ),
        (
            "POST",
            "/v1/vm/save",
            r#"{"dir": "/srv/saved", "stop": true}"#,
            ApiRequest::Save(SaveParams {
                dir: "/srv/saved".into(),
                stop: true,
            }),
            200,
        ),
        (
            "POST",
            "/v1/vm/restore",
            r#"{"dir": "/srv/saved", "memory": "copy", "disks": {"root": "/new/root.raw"}}"#,
            ApiRequest::Restore(RestoreParams {
                dir: "/srv/saved".into(),
                memory: MemoryMode::Copy,
                disks: [("root".to_string(), "/new/root.raw".into())].into(),
                ..Default::default()
            }),
            201,
        ),
        (
            "POST",
            "/v1/vm/actions/shutdown",
            r#"{"timeout_s": 30, "force": false}"#,
            ApiRequest::Action(VmAction::Shutdown(shutdown)),
            202,
        ),
        (
            "POST",
            "/v1/vm/actions/shutdown",
            "",
            ApiRequest::Action(VmAction::Shutdown(ShutdownParams::default())),
            202,
        ),
        (
            "POST",
            "/v1/vm/actions/destroy",
            "",
            ApiRequest::Action(VmAction::Destroy),
            200,
        ),
        (
            "POST",
            "/v1/vm/actions/reboot",
            "{}",
            ApiRequest::Action(VmAction::Reboot(ShutdownParams::default())),
            202,
        ),
        (
            "POST",
            "/v1/vm/actions/reset",
            "",
            ApiRequest::Action(VmAction::Reset),
            200,
        ),
        (
            "POST",
            "/v1/vm/actions/pause",
            "{}",
            ApiRequest::Action(VmAction::Pause),
            200,
        ),
        (
            "POST",
            "/v1/vm/actions/resume",
            " ",
            ApiRequest::Action(VmAction::Resume),
            200,
        ),
        ("GET", "/v1/vm/snapshots", "", ApiRequest::SnapshotList, 200),
        (
            "POST",
            "/v1/vm/snapshots",
            r#"{"name": "before-upgrade", "description": "kernel 6.1"}"#,
            ApiRequest::SnapshotCreate(SnapshotParams {
                name: "before-upgrade".into(),
                description: Some("kernel 6.1".into()),
            }),
            201,
        ),
        (
            "GET",
            "/v1/vm/snapshots/s1",
            "",
            ApiRequest::SnapshotGet("s1".into()),
            200,
        ),
        (
            "POST",
            "/v1/vm/snapshots/s1/revert",
            "",
            ApiRequest::SnapshotRevert("s1".into(), RevertParams::default()),
            200,
        ),
        (
            "POST",
            "/v1/vm/snapshots/s1/revert",
            r#"{"paused": true}"#,
            ApiRequest::SnapshotRevert("s1".into(), RevertParams { paused: Some(true) }),
            200,
        ),
        (
            "DELETE",
            "/v1/vm/snapshots/s1",
            "",
            ApiRequest::SnapshotDelete("s1".into()),
            200,
        ),
        // The query string is ignored.
        ("GET", "/v1/vm?pretty=1", "", ApiRequest::Info, 200),
    ];
    for (method, url, body, expected, status) in cases {
        let mock = Arc::new(Mock::default());
        let reply = call(&mock, method, url, body);
        assert_eq!(reply.status, status, "{method} {url}: {}", reply.json);
        assert_eq!(mock.calls(), vec![expected], "{method} {url}");
        assert!(reply.allow.is_none());
    }
}

#[test]
fn every_action_has_a_route() {
    for name in VmAction::NAMES {
        assert!(
            ROUTES.iter().any(|r| r.method == "POST"
                && r.path == format!("/v1/vm/actions/{name}")
                && r.target == Target::Action(name)),
            "no route for {name}"
        );
    }
}

#[test]
fn success_bodies_are_the_replies_as_json() {
    let mock = Arc::new(Mock::default());
    let reply = call(&mock, "GET", "/v1/vm", "");
    let info: crate::control::VmInfo = serde_json::from_str(&reply.json).unwrap();
    assert_eq!(info, super::mock::sample_info());
    let reply = call(&mock, "POST", "/v1/vm/actions/pause", "");
    assert_eq!(reply.json, r#"{"state":"running"}"#);
}

#[test]
fn version_is_answered_without_the_controller() {
    let mock = Arc::new(Mock::default());
    let reply = call(&mock, "GET", "/v1/version", "");
    assert_eq!(reply.status, 200);
    let v: crate::control::VersionInfo = serde_json::from_str(&reply.json).unwrap();
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.api, crate::control::API_VERSION);
    assert!(mock.calls().is_empty());
}

#[test]
fn unknown_paths_are_404_naming_the_path() {
    let mock = Arc::new(Mock::default());
    for url in [
        "/v1/vms",
        "/v1/vm/",
        "/v2/vm",
        "/v1/vm/actions/explode",
        "/",
    ] {
        let reply = call(&mock, "GET", url, "");
        let path = url.split('?').next().unwrap();
        assert_refused(&mock, &reply, 404, path);
    }
}

#[test]
fn a_wrong_method_is_405_with_the_allowed_ones() {
    let mock = Arc::new(Mock::default());
    let reply = call(&mock, "DELETE", "/v1/vm", "");
    assert_refused(&mock, &reply, 405, "GET, PUT");
    assert_eq!(reply.allow.as_deref(), Some("GET, PUT"));
    let reply = call(&mock, "GET", "/v1/vm/actions/pause", "");
    assert_refused(&mock, &reply, 405, "POST");
    assert_eq!(reply.allow.as_deref(), Some("POST"));
}

#[test]
fn malformed_vm_configs_are_400_naming_the_problem() {
    let mock = Arc::new(Mock::default());
    let reply = call(&mock, "PUT", "/v1/vm", "{ not json");
    assert_refused(&mock, &reply, 400, "VM config");
    let reply = call(
        &mock,
        "PUT",
        "/v1/vm",
        &VM.replace("\"memory_mib\"", "\"memory\""),
    );
    assert_refused(&mock, &reply, 400, "memory");
    let reply = call(&mock, "POST", "/v1/vm/deploy", &VM.replace("64", "0"));
    assert_refused(&mock, &reply, 400, "memory_mib");
    let reply = call(&mock, "PUT", "/v1/vm", "");
    assert_refused(&mock, &reply, 400, "EOF");
    let reply = handle("PUT", "/v1/vm", |_| Ok(vec![0xff, 0xfe]), &ctx(&mock));
    assert_refused(&mock, &reply, 400, "UTF-8");
}

#[test]
fn relative_paths_in_a_config_resolve_against_the_server_dir() {
    let mock = Arc::new(Mock::default());
    let reply = call(&mock, "PUT", "/v1/vm", &VM.replace("/k/vmlinux", "vmlinux"));
    assert_eq!(reply.status, 201);
    let ApiRequest::Create(cfg) = &mock.calls()[0] else {
        panic!("not a create: {:?}", mock.calls());
    };
    assert_eq!(cfg.boot.kernel.as_deref(), Some(Path::new("/srv/vmlinux")));
}

#[test]
fn bad_shutdown_parameters_are_400_naming_the_field() {
    let mock = Arc::new(Mock::default());
    let reply = call(
        &mock,
        "POST",
        "/v1/vm/actions/shutdown",
        r#"{"timeout": 5}"#,
    );
    assert_refused(&mock, &reply, 400, "timeout");
    let reply = call(
        &mock,
        "POST",
        "/v1/vm/actions/reboot",
        r#"{"force": "yes"}"#,
    );
    assert_refused(&mock, &reply, 400, "shutdown parameters");
    let reply = call(
        &mock,
        "POST",
        "/v1/vm/actions/shutdown",
        r#"{"timeout_s": 999999}"#,
    );
    assert_refused(&mock, &reply, 400, "timeout_s");
}

#[test]
fn a_body_on_an_action_without_parameters_is_400() {
    let mock = Arc::new(Mock::default());
    let reply = call(&mock, "POST", "/v1/vm/actions/pause", r#"{"now": true}"#);
    assert_refused(&mock, &reply, 400, "pause takes no request body");
    let reply = call(&mock, "POST", "/v1/vm/actions/destroy", "force");
    assert_refused(&mock, &reply, 400, "destroy");
}

#[test]
fn bodies_over_the_limit_are_413_before_reading_them() {
    let limit = MAX_BODY_BYTES;
    // Declared too large: refused without reading a byte.
    let mut never_read = Cursor::new(Vec::new());
    let e = read_body(Some(limit + 1), &mut never_read, limit).unwrap_err();
    assert_eq!(e.status, 413);
    assert!(e.message.contains(&limit.to_string()), "{e}");
    // Not declared (chunked) and too large: refused after limit + 1 bytes.
    let mut big = Cursor::new(vec![b' '; limit + 10]);
    assert_eq!(read_body(None, &mut big, limit).unwrap_err().status, 413);
    assert_eq!(big.position(), limit as u64 + 1);
    // Exactly the limit is fine.
    let mut just = Cursor::new(vec![b' '; limit]);
    assert_eq!(
        read_body(Some(limit), &mut just, limit).unwrap().len(),
        limit
    );

    let mock = Arc::new(Mock::default());
    let reply = handle(
        "PUT",
        "/v1/vm",
        |limit| read_body(Some(limit * 2), &mut Cursor::new(Vec::new()), limit),
        &ctx(&mock),
    );
    assert_refused(&mock, &reply, 413, "limit");
}

#[test]
fn reserved_routes_are_501_naming_the_feature() {
    let mock = Arc::new(Mock::default());
    let reserved: Vec<_> = ROUTES
        .iter()
        .filter_map(|r| match r.target {
            Target::Reserved(feature) => Some((r, feature)),
            _ => None,
        })
        .collect();
    assert_eq!(reserved.len(), 4);
    for (route, feature) in reserved {
        let url = route
            .path
            .replace("{name}", "before-upgrade")
            .replace("{id}", "vdb");
        let reply = call(&mock, route.method, &url, "{}");
        assert_refused(&mock, &reply, 501, feature);
    }
}

#[test]
fn bad_snapshot_names_are_refused_before_the_controller() {
    let mock = Arc::new(Mock::default());
    for (method, url, body) in [
        ("POST", "/v1/vm/snapshots", r#"{"name": "../etc"}"#),
        ("POST", "/v1/vm/snapshots", r#"{"name": ""}"#),
        ("GET", "/v1/vm/snapshots/.hidden", ""),
        ("DELETE", "/v1/vm/snapshots/a%2Fb", ""),
        ("POST", "/v1/vm/snapshots/-x/revert", ""),
    ] {
        let reply = call(&mock, method, url, body);
        assert_refused(&mock, &reply, 400, "name");
    }
    let reply = call(&mock, "POST", "/v1/vm/snapshots", r#"{"nam": "s1"}"#);
    assert_refused(&mock, &reply, 400, "nam");
    let reply = call(
        &mock,
        "POST",
        "/v1/vm/snapshots/s1/revert",
        r#"{"paused": 1}"#,
    );
    assert_refused(&mock, &reply, 400, "revert parameters");
}

#[test]
fn controller_errors_become_the_http_status() {
    let mock = Arc::new(Mock {
        fail: Some(ApiError::conflict("cannot pause a VM that is paused")),
        ..Mock::default()
    });
    let reply = call(&mock, "POST", "/v1/vm/actions/pause", "");
    assert_eq!(reply.status, 409);
    assert_eq!(error_of(&reply).message, "cannot pause a VM that is paused");

    // A status that is not an error status would turn a failure into a "success".
    let mock = Arc::new(Mock {
        fail: Some(ApiError::new(200, "odd")),
        ..Mock::default()
    });
    let reply = call(&mock, "GET", "/v1/vm", "");
    assert_eq!(reply.status, 500);
    assert!(error_of(&reply).message.contains("odd"), "{}", reply.json);
}
