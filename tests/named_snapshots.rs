//! Named snapshots with small guests: taking one freezes each qcow2 disk under a new
//! overlay and keeps the VM state and memory; reverting brings the guest's counter
//! back to where it was and lays a fresh overlay on the layer; deleting removes what
//! nothing is built on; snapshots outlive the process; bad requests change nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::counting::*;
use common::http::{action, call, get, wait_ready};
use common::qemu_img::{backing_file, create_qcow2};
use common::vm::{raw_vm, RunningVm, Scratch};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn qcow2(s: &Scratch, name: &str) -> PathBuf {
    let path = s.path().join(name);
    create_qcow2(&path, "8M");
    path
}

/// `oxvm <args> TARGET --api-socket S.sock`, once its API answers.
fn start(s: &Scratch, args: &[&str], target: &Path, sock_name: &str) -> ApiProc {
    let sock = s.path().join(sock_name);
    let mut cmd = api_command(s, args, &sock);
    cmd.arg(target);
    let run = RunningVm::start_with(&mut cmd);
    wait_ready(&sock, T);
    ApiProc { run, sock }
}

/// The counting guest with a qcow2 disk `d0`, a read-only raw disk `ro` and a
/// snapshots directory, started with an API socket.
fn boot(s: &Scratch, sock_name: &str) -> (ApiProc, PathBuf) {
    let disk = s.path().join("d0.qcow2");
    if !disk.exists() {
        qcow2(s, "d0.qcow2");
        qcow2(s, "s0.qcow2");
        std::fs::write(s.path().join("ro.raw"), vec![0u8; 1 << 20]).unwrap();
    }
    let file = raw_vm(
        s,
        &counting_guest(),
        1,
        json!({
            "name": "snapper",
            "disks": [
                { "id": "d0", "path": "d0.qcow2", "format": "qcow2" },
                { "id": "ro", "path": "ro.raw", "readonly": true },
                { "id": "s0", "path": "s0.qcow2", "format": "qcow2", "bus": "scsi" }
            ],
            "snapshots_dir": "snaps"
        }),
    );
    (start(s, &["run"], &file, sock_name), disk)
}

fn create(vm: &ApiProc, body: Value) -> (u16, Value) {
    call(
        &vm.sock,
        "POST",
        "/v1/vm/snapshots",
        Some(&body.to_string()),
    )
}

fn revert(vm: &ApiProc, name: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/vm/snapshots/{name}/revert");
    call(&vm.sock, "POST", &path, Some(&body.to_string()))
}

fn names(list: &Value) -> Vec<String> {
    list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// The counter as the snapshot's memory file holds it.
fn snapshot_counter(dir: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dir.join("memory.raw")).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, u64::from(COUNTER_GPA)).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn create_revert_and_delete_snapshots_of_a_running_vm() {
    let s = Scratch::new();
    let (vm, disk) = boot(&s, "a.sock");
    let snaps = s.path().join("snaps");
    wait_counter_above(&vm.run, 1000);

    // s1 of the running VM: the disk is frozen into d0.qcow2.s1 under a new overlay.
    let (st, r) = create(&vm, json!({ "name": "s1", "description": "first" }));
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["name"], "s1");
    assert_eq!(r["vm_state"], "running");
    assert_eq!(r["description"], "first");
    let layer1 = s.path().join("d0.qcow2.s1");
    let scsi = s.path().join("s0.qcow2");
    assert_eq!(
        r["disks"],
        json!([
            { "id": "d0", "layer": layer1 },
            { "id": "ro", "layer": null },
            { "id": "s0", "layer": s.path().join("s0.qcow2.s1") }
        ])
    );
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.s1"));
    // The virtio-scsi disk is frozen the same way.
    assert_eq!(backing_file(&scsi).as_deref(), Some("s0.qcow2.s1"));
    assert_eq!(backing_file(&layer1), None);
    for f in ["state.oxvm", "memory.raw", "snapshot.json"] {
        assert!(snaps.join("s1").join(f).exists(), "{f}");
    }
    let at_s1 = snapshot_counter(&snaps.join("s1"));
    assert!(at_s1 > 1000);
    // The VM went on running.
    assert_eq!(get(&vm.sock, "/v1/vm")["state"], "running");
    let later = wait_counter_above(&vm.run, at_s1 + 100_000);

    // s2 of the paused VM: it stays paused; the chain grows by one layer.
    action(&vm.sock, "pause", None, 200);
    let (st, r) = create(&vm, json!({ "name": "s2" }));
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["vm_state"], "paused");
    assert_eq!(get(&vm.sock, "/v1/vm")["state"], "paused");
    let layer2 = s.path().join("d0.qcow2.s2");
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.s2"));
    assert_eq!(backing_file(&layer2).as_deref(), Some("d0.qcow2.s1"));
    action(&vm.sock, "resume", None, 200);

    // Taken names and unknown snapshots.
    let (st, r) = create(&vm, json!({ "name": "s1" }));
    assert_eq!(st, 409, "{r}");
    assert!(r["message"].as_str().unwrap().contains("s1"), "{r}");
    let (st, r) = revert(&vm, "nope", json!({}));
    assert_eq!(st, 404, "{r}");
    assert_eq!(
        names(&get(&vm.sock, "/v1/vm/snapshots")),
        vec!["s1".to_string(), "s2".to_string()]
    );
    assert_eq!(get(&vm.sock, "/v1/vm/snapshots/s2")["vm_state"], "paused");

    // Revert to s1, paused: memory is exactly the snapshot's, the live disk is a
    // fresh overlay on s1's layer, s2's layer stays for s2.
    let (st, r) = revert(&vm, "s1", json!({ "paused": true }));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["state"], "paused");
    assert_eq!(counter(&vm.run), at_s1);
    assert!(at_s1 < later);
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.s1"));
    assert_eq!(backing_file(&scsi).as_deref(), Some("s0.qcow2.s1"));
    assert!(layer2.exists());
    // Resumed, the guest counts on from the snapshot's value.
    action(&vm.sock, "resume", None, 200);
    wait_counter_above(&vm.run, at_s1);
    // Without `paused` a revert returns to the snapshot's state: s2 was paused.
    let (st, r) = revert(&vm, "s2", json!({}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["state"], "paused");
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.s2"));
    let (st, r) = revert(&vm, "s1", json!({}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["state"], "running");

    // Deleting s2: nothing is built on its layer any more (the live disk is on s1).
    let (st, r) = call(&vm.sock, "DELETE", "/v1/vm/snapshots/s2", None);
    assert_eq!(st, 200, "{r}");
    assert_eq!(names(&r), vec!["s1".to_string()]);
    assert!(!snaps.join("s2").exists());
    assert!(
        !layer2.exists(),
        "s2's layer is used by nothing and must go"
    );
    // Deleting s1: its state goes, its layer stays under the live disk.
    let (st, r) = call(&vm.sock, "DELETE", "/v1/vm/snapshots/s1", None);
    assert_eq!(st, 200, "{r}");
    assert!(names(&r).is_empty());
    assert!(!snaps.join("s1").exists());
    assert!(layer1.exists(), "the live disk is built on s1's layer");
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.s1"));
    // The name is free again; its layer gets the next free file name.
    let (st, r) = create(&vm, json!({ "name": "s1" }));
    assert_eq!(st, 201, "{r}");
    assert_eq!(
        r["disks"][0]["layer"],
        json!(s.path().join("d0.qcow2.s1.1"))
    );
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.s1.1"));
    assert_eq!(get(&vm.sock, "/v1/vm")["state"], "running");
    action(&vm.sock, "destroy", None, 200);
}

#[test]
fn snapshots_outlive_the_process_and_a_save_restore() {
    let s = Scratch::new();
    let (mut a, disk) = boot(&s, "a.sock");
    wait_counter_above(&a.run, 1000);
    let (st, r) = create(&a, json!({ "name": "keep" }));
    assert_eq!(st, 201, "{r}");
    let at_keep = snapshot_counter(&s.path().join("snaps/keep"));
    let saved = s.path().join("saved");
    let body = json!({ "dir": saved, "stop": true }).to_string();
    let (st, r) = call(&a.sock, "POST", "/v1/vm/save", Some(&body));
    assert_eq!(st, 200, "{r}");
    assert_eq!(a.run.wait(T).code(), Some(0));

    // A named snapshot is not a saved VM: restoring it would pair its memory with
    // today's disks. Refused, nothing starts.
    let out = api_command(&s, &["restore"], &s.path().join("x.sock"))
        .arg(s.path().join("snaps/keep"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("named snapshot") && err.contains("snapshot-revert"),
        "{err}"
    );
    assert!(!s.path().join("x.sock").exists());

    // A restored process knows the snapshot (it lives in snapshots_dir) and reverts.
    let b = start(&s, &["restore"], &saved, "b.sock");
    assert_eq!(
        names(&get(&b.sock, "/v1/vm/snapshots")),
        vec!["keep".to_string()]
    );
    let (st, r) = revert(&b, "keep", json!({ "paused": true }));
    assert_eq!(st, 200, "{r}");
    assert_eq!(counter(&b.run), at_keep);
    assert_eq!(backing_file(&disk).as_deref(), Some("d0.qcow2.keep"));
    action(&b.sock, "destroy", None, 200);
}

#[test]
fn refused_snapshots_change_nothing() {
    let s = Scratch::new();
    std::fs::write(s.path().join("d0.raw"), vec![0u8; 1 << 20]).unwrap();
    let file = raw_vm(
        &s,
        &counting_guest(),
        1,
        json!({
            "name": "rawvm",
            "disks": [ { "id": "d0", "path": "d0.raw", "format": "raw" } ],
            "snapshots_dir": "snaps"
        }),
    );
    let vm = start(&s, &["run"], &file, "a.sock");
    let before = wait_counter_above(&vm.run, 1000);

    // A raw disk: refused, naming the disk; no file appears.
    let (st, r) = create(&vm, json!({ "name": "s1" }));
    assert_eq!(st, 400, "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("disks[0]") && msg.contains("raw"), "{msg}");
    assert!(!s.path().join("snaps").exists());
    assert!(!s.path().join("d0.raw.s1").exists());
    // Names that could reach outside the directory, and unknown fields.
    for body in [
        json!({ "name": "../x" }),
        json!({ "name": "" }),
        json!({ "nam": "x" }),
    ] {
        let (st, r) = create(&vm, body);
        assert_eq!(st, 400, "{r}");
    }
    let (st, _) = call(&vm.sock, "DELETE", "/v1/vm/snapshots/.retired", None);
    assert_eq!(st, 400);
    // Nothing to list yet, nothing to delete.
    assert!(names(&get(&vm.sock, "/v1/vm/snapshots")).is_empty());
    let (st, r) = call(&vm.sock, "DELETE", "/v1/vm/snapshots/s1", None);
    assert_eq!(st, 404, "{r}");
    // The VM never stopped counting.
    assert_eq!(get(&vm.sock, "/v1/vm")["state"], "running");
    wait_counter_above(&vm.run, before);
    action(&vm.sock, "destroy", None, 200);

    // Without snapshots_dir: refused, naming the field.
    let s = Scratch::new();
    let file = raw_vm(&s, &counting_guest(), 1, json!({ "name": "nodir" }));
    let vm = start(&s, &["run"], &file, "a.sock");
    let (st, r) = create(&vm, json!({ "name": "s1" }));
    assert_eq!(st, 400, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("snapshots_dir"),
        "{r}"
    );
    let (st, r) = call(&vm.sock, "GET", "/v1/vm/snapshots", None);
    assert_eq!(st, 400, "{r}");
    action(&vm.sock, "destroy", None, 200);
}
