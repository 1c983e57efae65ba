//! Save and restore with small guests: the guest's counter continues in a new process
//! from where it stopped, its memory is intact, the AP that never started stays
//! waiting, and bad state files are refused before anything starts.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::counting::*;
use common::http::{action, call, get, wait_ready};
use common::vm::{oxvm_bin, raw_vm, RunningVm, Scratch};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn boot(s: &Scratch, vcpus: u32) -> ApiProc {
    let file = raw_vm(s, &counting_guest(), vcpus, json!({ "name": "saver" }));
    let sock = s.path().join("a.sock");
    let mut cmd = api_command(s, &["run"], &sock);
    cmd.arg(&file);
    let run = RunningVm::start_with(&mut cmd);
    run.expect_stdout(T, |o| o.contains("up\n"), "guest start");
    wait_ready(&sock, T);
    ApiProc { run, sock }
}

fn restore(s: &Scratch, dir: &Path, extra: &[&str]) -> ApiProc {
    let sock = s.path().join("b.sock");
    let mut cmd = api_command(s, &["restore"], &sock);
    cmd.args(extra).arg(dir);
    let run = RunningVm::start_with(&mut cmd);
    wait_ready(&sock, T);
    ApiProc { run, sock }
}

fn saved_counter(dir: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dir.join("memory.raw")).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, u64::from(COUNTER_GPA)).unwrap();
    u64::from_le_bytes(b)
}

fn save(vm: &ApiProc, dir: &Path, stop: bool) -> Value {
    let body = json!({ "dir": dir, "stop": stop }).to_string();
    let (st, r) = call(&vm.sock, "POST", "/v1/vm/save", Some(&body));
    assert_eq!(st, 200, "{r}");
    r
}

#[test]
fn save_stop_then_restore_continues_the_counter_in_a_new_process() {
    let s = Scratch::new();
    let mut a = boot(&s, 2);
    wait_counter_above(&a.run, 1000);
    let dir = s.path().join("saved");
    assert_eq!(save(&a, &dir, true)["state"], "stopped");
    assert_eq!(a.run.wait(T).code(), Some(0), "{}", a.run.stderr.text());
    let at_save = saved_counter(&dir);
    assert!(at_save > 1000);
    // Memory is a sparse file: 32 MiB of guest RAM, a few pages of data.
    let meta = std::fs::metadata(dir.join("memory.raw")).unwrap();
    assert_eq!(meta.len(), GUEST_RAM);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 4 << 20,
        "memory.raw is not sparse"
    );

    let b = restore(&s, &dir, &[]);
    let info = get(&b.sock, "/v1/vm");
    assert_eq!(info["state"], "running");
    assert_eq!(info["name"], "saver");
    assert_eq!(info["vcpu_threads"].as_array().unwrap().len(), 2);
    // It continues: no second "up", and the counter goes on from the saved value.
    let now = wait_counter_above(&b.run, at_save);
    assert!(now > at_save);
    assert!(
        !b.run.stdout.text().contains("up"),
        "the restored guest rebooted"
    );
    // The code the guest runs is intact in the restored RAM (ram_base found it there).
    action(&b.sock, "destroy", None, 200);
}

#[test]
fn save_without_stop_keeps_the_vm_going_and_a_paused_vm_stays_paused() {
    let s = Scratch::new();
    let a = boot(&s, 1);
    wait_counter_above(&a.run, 100);
    let dir1 = s.path().join("one");
    assert_eq!(save(&a, &dir1, false)["state"], "running");
    let c = saved_counter(&dir1);
    wait_counter_above(&a.run, c + 1000);

    action(&a.sock, "pause", None, 200);
    let dir2 = s.path().join("two");
    assert_eq!(save(&a, &dir2, false)["state"], "paused");
    let paused_at = counter(&a.run);
    assert_eq!(
        saved_counter(&dir2),
        paused_at,
        "a paused guest's save is exact"
    );
    // Saving into a directory that holds a save already is refused.
    let body = json!({ "dir": dir2, "stop": false }).to_string();
    let (st, r) = call(&a.sock, "POST", "/v1/vm/save", Some(&body));
    assert_eq!(st, 409, "{r}");
    let (st, r) = call(
        &a.sock,
        "POST",
        "/v1/vm/save",
        Some(r#"{"dir": "relative"}"#),
    );
    assert_eq!(st, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("absolute"), "{r}");
    assert_eq!(counter(&a.run), paused_at);

    // Restored paused (memory copied): the counter holds until resume.
    let b = restore(&s, &dir2, &["--memory", "copy", "--paused"]);
    assert_eq!(get(&b.sock, "/v1/vm")["state"], "paused");
    assert_eq!(counter(&b.run), paused_at);
    action(&b.sock, "resume", None, 200);
    wait_counter_above(&b.run, paused_at);
    action(&b.sock, "destroy", None, 200);
    action(&a.sock, "destroy", None, 200);
}

#[test]
fn restore_through_the_api_of_a_serve_process() {
    let s = Scratch::new();
    let mut a = boot(&s, 1);
    wait_counter_above(&a.run, 100);
    let dir = s.path().join("saved");
    save(&a, &dir, true);
    a.run.wait(T);
    let at_save = saved_counter(&dir);

    let sock = s.path().join("serve.sock");
    let mut cmd = api_command(&s, &["serve"], &sock);
    let run = RunningVm::start_with(&mut cmd);
    wait_ready(&sock, T);
    let b = ApiProc { run, sock };
    let bad = json!({ "dir": dir, "disks": { "nope": "/x" } }).to_string();
    let (st, r) = call(&b.sock, "POST", "/v1/vm/restore", Some(&bad));
    assert_eq!(st, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("nope"), "{r}");
    assert_eq!(get(&b.sock, "/v1/vm")["state"], "empty");
    let body = json!({ "dir": dir }).to_string();
    let (st, r) = call(&b.sock, "POST", "/v1/vm/restore", Some(&body));
    assert_eq!(st, 201, "{r}");
    wait_counter_above(&b.run, at_save);
    action(&b.sock, "destroy", None, 200);
}

/// CRC-32 (IEEE), as the state container ends with (docs/snapshot-format.md).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `oxvm restore` of a damaged directory: exit 1 with the reason, quickly, no guest.
fn refused(dir: &Path) -> String {
    let started = Instant::now();
    let out = Command::new(oxvm_bin())
        .arg("restore")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn corrupted_truncated_and_future_state_files_are_refused() {
    let s = Scratch::new();
    let mut a = boot(&s, 1);
    let dir = s.path().join("saved");
    save(&a, &dir, true);
    a.run.wait(T);
    let state = std::fs::read(dir.join("state.oxvm")).unwrap();
    let put = |bytes: &[u8]| std::fs::write(dir.join("state.oxvm"), bytes).unwrap();

    let mut flipped = state.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    put(&flipped);
    let e = refused(&dir);
    assert!(e.contains("checksum") && e.contains("state.oxvm"), "{e}");

    put(&state[..state.len() - 100]);
    let e = refused(&dir);
    assert!(e.to_lowercase().contains("truncated"), "{e}");

    // A file from a future oxvm: a valid container (checksum recomputed) with format
    // version 99.
    let mut future = state.clone();
    future[8..12].copy_from_slice(&99u32.to_le_bytes());
    let body = future.len() - 4;
    let crc = crc32(&future[..body]);
    future[body..].copy_from_slice(&crc.to_le_bytes());
    put(&future);
    let e = refused(&dir);
    assert!(e.contains("99"), "{e}");

    put(b"not a state file at all");
    let e = refused(&dir);
    assert!(e.contains("state.oxvm"), "{e}");

    put(&state);
    std::fs::remove_file(dir.join("memory.raw")).unwrap();
    let e = refused(&dir);
    assert!(e.contains("memory.raw"), "{e}");
}

#[test]
fn a_vm_with_shared_memory_is_restored_into_shared_memory() {
    let s = Scratch::new();
    let file = raw_vm(
        &s,
        &counting_guest(),
        1,
        json!({ "name": "shared", "memory_shared": true }),
    );
    let sock = s.path().join("a.sock");
    let mut cmd = api_command(&s, &["run"], &sock);
    cmd.arg(&file);
    let mut a = ApiProc {
        run: RunningVm::start_with(&mut cmd),
        sock,
    };
    wait_ready(&a.sock, T);
    let maps = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps(a.run.pid()).contains("memfd:oxvm-guest-ram"));
    wait_counter_above(&a.run, 1000);
    let dir = s.path().join("saved");
    save(&a, &dir, true);
    assert_eq!(a.run.wait(T).code(), Some(0));
    let at_save = saved_counter(&dir);
    // Even a "lazy" restore copies into a memfd: a private file mapping cannot be
    // handed to another process.
    let b = restore(&s, &dir, &[]);
    assert!(maps(b.run.pid()).contains("memfd:oxvm-guest-ram"));
    assert!(wait_counter_above(&b.run, at_save) > at_save);
    action(&b.sock, "destroy", None, 200);
}
