//! The control API on small guests (milliseconds to boot): states and their 409s, bad
//! requests, pause/resume seen in guest memory, shutdown timeouts, destroy, reset,
//! `oxvm serve` + deploy, concurrency and the socket's mode.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::counting::*;
use common::http::{action, call, get, raw, state, wait_ready, wait_state};
use common::vm::{raw_vm, RunningVm, Scratch};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

struct ApiVm {
    vm: RunningVm,
    sock: PathBuf,
    _s: Scratch,
}

/// `oxvm run --api-socket` on the counting guest, with the runtime dir in the scratch.
fn start_counting(vcpus: u32, extra: Value) -> ApiVm {
    let s = Scratch::new();
    // For tests that attach a disk (`"path": "d0.raw"`).
    s.write("d0.raw", &[0u8; 1 << 16]);
    let file = raw_vm(&s, &counting_guest(), vcpus, extra);
    let sock = s.path().join("api.sock");
    let mut cmd = api_command(&s, &["run"], &sock);
    cmd.arg(&file);
    let vm = RunningVm::start_with(&mut cmd);
    vm.expect_stdout(T, |o| o.contains("up\n"), "guest start");
    wait_ready(&sock, T);
    ApiVm { vm, sock, _s: s }
}

fn io_out_exits(sock: &Path) -> u64 {
    get(sock, "/v1/vm/counters")["vcpus"][0]["exits"]["io_out"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn info_reports_the_vm_and_the_socket_is_private() {
    let v = start_counting(2, json!({}));
    let mode = std::fs::metadata(&v.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let info = get(&v.sock, "/v1/vm");
    assert_eq!(info["state"], "running");
    assert_eq!(info["name"], "smallguest");
    assert_eq!(info["pid"], v.vm.pid());
    assert_eq!(info["boots"], 1);
    assert!(info["uptime_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(info["config"]["memory_mib"], 32);
    // The vCPU thread ids are the process's threads named vcpu0 and vcpu1.
    let tids = info["vcpu_threads"].as_array().unwrap();
    assert_eq!(tids.len(), 2, "{info}");
    for t in tids {
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{}/comm", v.vm.pid(), t["tid"]))
            .unwrap();
        assert_eq!(comm.trim(), format!("vcpu{}", t["index"]));
    }
    let ver = get(&v.sock, "/v1/version");
    assert_eq!(ver["api"], 1);
    assert_eq!(ver["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    let v = start_counting(1, json!({}));
    let running = wait_counter_above(&v.vm, 0);
    assert_eq!(action(&v.sock, "pause", None, 200)["state"], "paused");
    let (c1, e1) = (counter(&v.vm), io_out_exits(&v.sock));
    assert!(c1 >= running);
    // Stillness can only be shown over time: any vCPU still running would move the
    // counter by thousands within this window.
    std::thread::sleep(Duration::from_millis(300));
    let (c2, e2) = (counter(&v.vm), io_out_exits(&v.sock));
    assert_eq!(c1, c2, "the guest ran while paused");
    assert_eq!(e1, e2, "vCPU exits while paused");
    assert_eq!(state(&v.sock), "paused");
    assert_eq!(action(&v.sock, "resume", None, 200)["state"], "running");
    wait_counter_above(&v.vm, c2);
    assert!(io_out_exits(&v.sock) > e2);
}

#[test]
fn actions_invalid_in_the_current_state_get_409_and_change_nothing() {
    let v = start_counting(1, json!({}));
    let msg = |b: &Value| b["message"].as_str().unwrap().to_string();
    let r = action(&v.sock, "resume", None, 409);
    assert!(msg(&r).contains("running"), "{r}");
    assert_eq!(r["status"], 409);
    action(&v.sock, "boot", None, 409);
    let (st, r) = call(&v.sock, "PUT", "/v1/vm", Some("{}"));
    assert!(st == 409 || st == 400, "{st} {r}");
    action(&v.sock, "pause", None, 200);
    let r = action(&v.sock, "pause", None, 409);
    assert!(msg(&r).contains("paused"), "{r}");
    let r = action(&v.sock, "shutdown", None, 409);
    assert!(msg(&r).contains("resume"), "{r}");
    action(&v.sock, "reboot", None, 409);
    assert_eq!(state(&v.sock), "paused");
    action(&v.sock, "resume", None, 200);
    let info = get(&v.sock, "/v1/vm");
    assert_eq!(info["state"], "running");
    assert_eq!(info["boots"], 1);
    assert!(info["last_error"].is_null(), "{info}");
}

#[test]
fn bad_requests_get_400_404_405_and_change_nothing() {
    let v = start_counting(1, json!({}));
    let before = counter(&v.vm);
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "POST",
            "/v1/vm/actions/shutdown",
            Some("{not json"),
            400,
            "",
        ),
        (
            "POST",
            "/v1/vm/actions/shutdown",
            Some(r#"{"timeout": 3}"#),
            400,
            "timeout",
        ),
        (
            "POST",
            "/v1/vm/actions/shutdown",
            Some(r#"{"timeout_s": "soon"}"#),
            400,
            "",
        ),
        ("POST", "/v1/vm/actions/pause", Some(r#"{"x": 1}"#), 400, ""),
        ("POST", "/v1/vm/actions/explode", None, 404, "explode"),
        ("GET", "/v1/nothing", None, 404, "/v1/nothing"),
        ("DELETE", "/v1/vm", None, 405, ""),
        ("GET", "/v1/vm/actions/pause", None, 405, ""),
    ];
    for (method, path, body, want, names) in cases {
        let (st, r) = call(&v.sock, method, path, body);
        assert_eq!(st, want, "{method} {path} {body:?}: {r}");
        assert_eq!(r["status"], want, "error body: {r}");
        let m = r["message"].as_str().unwrap_or_default();
        assert!(!m.is_empty() && m.contains(names), "{method} {path}: {m}");
    }
    // Not HTTP at all.
    let (st, _) = raw(&v.sock, b"HELLO\r\n\r\n");
    assert!((400..500).contains(&st), "{st}");
    let info = get(&v.sock, "/v1/vm");
    assert_eq!(info["state"], "running");
    assert_eq!(info["boots"], 1);
    wait_counter_above(&v.vm, before);
}

#[test]
fn twenty_concurrent_info_requests_all_succeed() {
    let v = start_counting(1, json!({}));
    let sock = v.sock.clone();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || call(&sock, "GET", "/v1/vm", None))
        })
        .collect();
    for t in threads {
        let (st, info) = t.join().unwrap();
        assert_eq!(st, 200, "{info}");
        assert_eq!(info["state"], "running");
    }
}

#[test]
fn shutdown_without_force_times_out_and_keeps_the_vm_then_force_destroys_it() {
    let mut v = start_counting(1, json!({}));
    // The small guest has no ACPI driver: the button press goes unanswered.
    let r = action(
        &v.sock,
        "shutdown",
        Some(r#"{"timeout_s": 1, "force": false}"#),
        202,
    );
    assert_eq!(r["state"], "shutting-down");
    action(&v.sock, "pause", None, 409);
    let info = wait_state(&v.sock, T, |i| i["state"] == "running");
    let err = info["last_error"].as_str().unwrap();
    assert!(err.contains("timed out after 1 s"), "{err}");
    let before = counter(&v.vm);
    wait_counter_above(&v.vm, before);

    action(
        &v.sock,
        "shutdown",
        Some(r#"{"timeout_s": 1, "force": true}"#),
        202,
    );
    let st = v.vm.wait(T);
    assert_eq!(st.code(), Some(0), "{}", v.vm.stderr.text());
    assert!(!v.sock.exists(), "the socket outlived the VM");
}

#[test]
fn destroy_ends_the_process_and_removes_the_socket() {
    let mut v = start_counting(2, json!({}));
    assert_eq!(action(&v.sock, "destroy", None, 200)["state"], "stopped");
    let st = v.vm.wait(T);
    assert_eq!(st.code(), Some(0), "{}", v.vm.stderr.text());
    assert!(!v.sock.exists());
    assert!(!v
        ._s
        .path()
        .join("run")
        .join(format!("{}.sock", v.vm.pid()))
        .exists());
}

#[test]
fn reset_rebuilds_the_machine_in_place() {
    // With a virtio device: the old machine, guest RAM included, must be freed (a
    // reference cycle through the PCI root once kept it alive).
    let v = start_counting(1, json!({ "disks": [{ "id": "d0", "path": "d0.raw" }] }));
    wait_counter_above(&v.vm, 0);
    assert_eq!(action(&v.sock, "reset", None, 200)["state"], "running");
    v.vm.expect_stdout(T, |o| o.matches("up\n").count() == 2, "second boot");
    let info = get(&v.sock, "/v1/vm");
    assert_eq!(info["boots"], 2);
    assert_eq!(info["pid"], v.vm.pid());
    // The new machine's RAM starts from zero and counts again; the old RAM is gone
    // (`counter` finds exactly one guest RAM mapping).
    wait_counter_above(&v.vm, 0);
    // Counters are cumulative across boots.
    assert!(io_out_exits(&v.sock) > 0);
}

#[test]
fn serve_waits_for_a_deployed_vm() {
    let s = Scratch::new();
    let file = raw_vm(&s, &counting_guest(), 1, json!({ "name": "served" }));
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    cfg["boot"]["raw"]["path"] = json!(s.path().join("code.bin"));
    let sock = s.path().join("serve.sock");
    let mut vm = RunningVm::start_with(&mut api_command(&s, &["serve"], &sock));
    wait_ready(&sock, T);
    let info = get(&sock, "/v1/vm");
    assert_eq!(info["state"], "empty");
    assert!(info["name"].is_null());
    action(&sock, "pause", None, 409);

    // A bad config names the field and leaves the process empty.
    let mut bad = cfg.clone();
    bad["vcpus"] = json!(0);
    let (st, r) = call(&sock, "PUT", "/v1/vm", Some(&bad.to_string()));
    assert_eq!(st, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("vcpus"), "{r}");
    let mut missing = cfg.clone();
    missing["boot"]["raw"]["path"] = json!("/nonexistent/code.bin");
    let (st, r) = call(&sock, "PUT", "/v1/vm", Some(&missing.to_string()));
    assert_eq!(st, 400, "{r}");
    assert_eq!(state(&sock), "empty");

    let (st, r) = call(&sock, "PUT", "/v1/vm", Some(&cfg.to_string()));
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["state"], "created");
    assert_eq!(get(&sock, "/v1/vm")["name"], "served");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", vm.pid())).unwrap();
    assert_eq!(comm.trim(), "served");
    assert!(vm.stdout.text().is_empty(), "the guest ran before boot");
    assert_eq!(action(&sock, "boot", None, 200)["state"], "running");
    vm.expect_stdout(T, |o| o.contains("up\n"), "guest start after boot");
    action(&sock, "destroy", None, 200);
    assert_eq!(vm.wait(T).code(), Some(0));
}

#[test]
fn sighup_stops_at_once_while_sigterm_waits_for_the_shutdown_timeout() {
    let mut v = start_counting(1, json!({ "shutdown": { "timeout_s": 2 } }));
    v.vm.signal(libc::SIGTERM);
    let info = wait_state(&v.sock, T, |i| i["state"] == "shutting-down");
    assert_eq!(info["boots"], 1);
    // A second signal does not wait for the timeout.
    v.vm.signal(libc::SIGHUP);
    let st = v.vm.wait(T);
    assert_eq!(
        st.code(),
        Some(128 + libc::SIGHUP),
        "{}",
        v.vm.stderr.text()
    );
}
