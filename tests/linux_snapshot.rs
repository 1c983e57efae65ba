//! A Linux guest saved in the middle of its disk writes and restored in a new process,
//! and one live-migrated in the middle of its disk writes: the selftest's `blkbench`
//! job (write a pattern, flush, read back, verify) finishes `ok` on the restored or
//! migrated side, the NIC still carries the `net` check's UDP echo, and the host finds
//! the complete pattern in the image. And a named snapshot taken in the middle of the
//! writes: after the guest finished, a revert brings its disk back to the snapshot's
//! content and the guest back to mid-write, and it finishes a second time.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::http::{call, wait_ready};
use common::linux::{cmdline, guest_file, selftest_result};
use common::netns::NetNs;
use common::qemu_img::{create_qcow2, guest_view};
use common::vm::{RunningVm, Scratch};
use serde_json::json;

const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);
const DISK_BYTES: u64 = 8 << 20;
const SEED: u64 = 5;
/// The revert test runs blkbench twice: a smaller region keeps it short (each 4 KiB
/// request costs the emulated guest ~45 ms here; docs/PERFORMANCE.md).
const REVERT_BYTES: u64 = 2 << 20;

/// The blkbench pattern (resources/guest/oxvm_selftest_bench.c): the word at disk
/// offset `o` is `o ^ K` at sector starts, `(o % 512) ^ K` elsewhere. The offset of
/// the first word that differs, if any.
fn pattern_mismatch(data: &[u8], bytes: u64, seed: u64) -> Option<u64> {
    let k = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(seed + 1);
    (0..bytes).step_by(8).find(|&o| {
        let want = if o % 512 == 0 { o ^ k } else { (o % 512) ^ k };
        let got = u64::from_le_bytes(data[o as usize..o as usize + 8].try_into().unwrap());
        got != want
    })
}

fn check_pattern(image: &Path, bytes: u64, seed: u64) {
    let data = std::fs::read(image).unwrap();
    if let Some(o) = pattern_mismatch(&data, bytes, seed) {
        panic!(
            "{}: word at offset {o:#x} is not the pattern",
            image.display()
        );
    }
}

/// A guest with a disk and a NIC (tap `tap` in `ns`, host side `<net>.1`) that runs
/// blkbench then net, started with `oxvm run --api-socket`; returns once its disk
/// writes have begun.
fn start_writing_guest(
    s: &Scratch,
    ns: &NetNs,
    tap: &str,
    net: &str,
    disk: &Path,
) -> (RunningVm, PathBuf) {
    std::fs::File::create(disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let cl = format!(
        "{} ip={net}.2::{net}.1:255.255.255.0::eth0:off oxvm.net={net}.1:7777 \
         oxvm.blkbench=vda,4k,{DISK_BYTES},rw,seed={SEED}",
        cmdline("boot,blkbench,net,idle")
    );
    let vm = json!({
        "name": "snapguest",
        "vcpus": 1,
        "memory_mib": 256,
        "boot": { "kernel": guest_file("vmlinux"), "cmdline": cl },
        "serial": { "mode": "stdout" },
        "disks": [ { "id": "d0", "path": disk, "cache": "none" } ],
        "nics": [ { "id": "eth0", "tap": tap, "mac": "52:54:00:00:00:31" } ]
    });
    let file = s.write_json("vm.json", &vm);
    let sock = s.path().join("a.sock");
    let mut cmd = ns.command(common::vm::oxvm_bin());
    cmd.arg("run").arg("--api-socket").arg(&sock).arg(&file);
    let a = RunningVm::start_with(&mut cmd);
    wait_ready(&sock, Duration::from_secs(30));
    a.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains("OXVM-MARK blkbench start"),
        "the disk writes to begin",
    );
    (a, sock)
}

/// The first process ended after handing the guest over, before blkbench finished.
fn assert_handed_over_mid_write(a: &mut RunningVm) {
    assert_eq!(a.wait(Duration::from_secs(60)).code(), Some(0));
    assert!(
        selftest_result(&a.stdout.text(), "blkbench").is_none(),
        "blkbench finished before the hand-over; the test proves nothing:\n{}",
        a.stdout.text()
    );
}

/// The continued guest finished its checks (blkbench verified, the NIC echoed), then
/// shuts down gracefully; the image holds the whole pattern.
fn assert_finished(mut b: RunningVm, echoes: &Receiver<String>, disk: &Path) {
    b.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains("OXVM-SELFTEST idle ok"),
        "the continued guest to finish its checks",
    );
    let after = b.stdout.text();
    assert!(!after.contains("Linux version"), "the guest booted again");
    let (ok, details) = selftest_result(&after, "blkbench").expect("blkbench result");
    assert!(ok, "blkbench: {details}");
    let (ok, details) = selftest_result(&after, "net").expect("net result");
    assert!(ok, "net: {details}");
    assert!(
        echoes.try_iter().count() >= 1,
        "no UDP echo reached the host"
    );
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait(Duration::from_secs(300)).code(), Some(0));
    check_pattern(disk, DISK_BYTES, SEED);
}

#[test]
fn linux_guest_saved_mid_write_finishes_after_restore() {
    let s = Scratch::new();
    let disk = s.path().join("d0.raw");
    let mut ns = NetNs::with_tap(
        &format!("oxvms{}", std::process::id()),
        "oxtap1",
        "10.0.3.1",
    );
    let echoes = ns.start_echo("10.0.3.1", 7777);
    let (mut a, sock_a) = start_writing_guest(&s, &ns, "oxtap1", "10.0.3", &disk);
    // Save as soon as the writes run: requests are in flight and get drained.
    let dir = s.path().join("saved");
    let body = json!({ "dir": dir, "stop": true }).to_string();
    let (st, r) = call(&sock_a, "POST", "/v1/vm/save", Some(&body));
    assert_eq!(st, 200, "{r}");
    assert_handed_over_mid_write(&mut a);

    let sock_b = s.path().join("b.sock");
    let mut cmd = ns.command(common::vm::oxvm_bin());
    cmd.arg("restore")
        .arg("--api-socket")
        .arg(&sock_b)
        .arg(&dir);
    assert_finished(RunningVm::start_with(&mut cmd), &echoes, &disk);
}

#[test]
fn linux_guest_migrated_mid_write_finishes_on_the_destination() {
    let s = Scratch::new();
    let disk = s.path().join("d0.raw");
    // Two taps on one bridge: source and destination run on this one host, and a tap
    // serves one process at a time.
    let ns_name = format!("oxvmm{}", std::process::id());
    let mut ns = NetNs::with_bridge(&ns_name, &["oxtap2", "oxtap3"], "10.0.4.1");
    let echoes = ns.start_echo("10.0.4.1", 7777);
    let (mut a, sock_a) = start_writing_guest(&s, &ns, "oxtap2", "10.0.4", &disk);

    // The destination: an empty serve process (same disk file: the shared-storage
    // case; its own tap), told to receive on a Unix socket.
    let sock_b = s.path().join("b.sock");
    let mut cmd = ns.command(common::vm::oxvm_bin());
    cmd.arg("serve").arg("--api-socket").arg(&sock_b);
    let b = RunningVm::start_with(&mut cmd);
    wait_ready(&sock_b, Duration::from_secs(30));
    let listen = format!("unix:{}", s.path().join("mig.sock").display());
    let body = json!({ "listen": listen, "taps": { "eth0": "oxtap3" } }).to_string();
    let (st, r) = call(&sock_b, "POST", "/v1/vm/migration/incoming", Some(&body));
    assert_eq!(st, 202, "{r}");

    // While the guest writes its disk (device threads write guest memory: those pages
    // must travel too), migrate and wait for the end.
    let body = json!({ "to": listen, "downtime_ms": 100, "wait": true }).to_string();
    let (st, r) = call(&sock_a, "POST", "/v1/vm/migration", Some(&body));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["phase"], "completed", "{r}");
    assert!(r["downtime_ms"].as_u64().is_some(), "{r}");
    assert_handed_over_mid_write(&mut a);
    assert_finished(b, &echoes, &disk);
}

#[test]
fn linux_guest_reverted_to_a_mid_write_snapshot_writes_again() {
    let s = Scratch::new();
    let disk = s.path().join("d0.qcow2");
    create_qcow2(&disk, "64M");
    let cl = format!(
        "{} oxvm.blkbench=vda,4k,{REVERT_BYTES},rw,seed={SEED}",
        cmdline("boot,blkbench,idle")
    );
    let vm = json!({
        "name": "snaprevert",
        "vcpus": 1,
        "memory_mib": 256,
        "boot": { "kernel": guest_file("vmlinux"), "cmdline": cl },
        "serial": { "mode": "stdout" },
        "disks": [ { "id": "d0", "path": disk, "format": "qcow2" } ],
        "snapshots_dir": s.path().join("snaps")
    });
    let file = s.write_json("vm.json", &vm);
    let sock = s.path().join("a.sock");
    let mut cmd = std::process::Command::new(common::vm::oxvm_bin());
    cmd.arg("run").arg("--api-socket").arg(&sock).arg(&file);
    let mut a = RunningVm::start_with(&mut cmd);
    wait_ready(&sock, Duration::from_secs(30));
    a.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains("OXVM-MARK blkbench start"),
        "the disk writes to begin",
    );
    let body = json!({ "name": "mid-write" }).to_string();
    let (st, r) = call(&sock, "POST", "/v1/vm/snapshots", Some(&body));
    assert_eq!(st, 201, "{r}");
    let layer = PathBuf::from(r["disks"][0]["layer"].as_str().unwrap());
    assert!(
        selftest_result(&a.stdout.text(), "blkbench").is_none(),
        "blkbench finished before the snapshot; the test proves nothing"
    );

    // The guest finishes; the live disk holds the whole pattern, the layer (the disk
    // at the snapshot) only part of it.
    a.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains("OXVM-SELFTEST idle ok"),
        "the guest to finish its checks",
    );
    let (ok, details) = selftest_result(&a.stdout.text(), "blkbench").expect("blkbench");
    assert!(ok, "blkbench: {details}");
    assert_eq!(
        pattern_mismatch(&guest_view(&disk), REVERT_BYTES, SEED),
        None
    );
    let at_snapshot = guest_view(&layer);
    assert!(
        pattern_mismatch(&at_snapshot, REVERT_BYTES, SEED).is_some(),
        "the layer already holds every write: the snapshot was not taken mid-write"
    );

    // Revert, paused: the disk is what it was at the snapshot.
    let body = json!({ "paused": true }).to_string();
    let (st, r) = call(
        &sock,
        "POST",
        "/v1/vm/snapshots/mid-write/revert",
        Some(&body),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["state"], "paused");
    assert!(
        guest_view(&disk) == at_snapshot,
        "after the revert the disk is not the snapshot's"
    );
    // Resumed, the guest is back in the middle of blkbench: it writes and verifies
    // again and finishes a second time, without booting again.
    let (st, r) = call(&sock, "POST", "/v1/vm/actions/resume", None);
    assert_eq!(st, 200, "{r}");
    a.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.matches("OXVM-SELFTEST idle ok").count() == 2,
        "the reverted guest to finish its checks again",
    );
    let out = a.stdout.text();
    assert_eq!(
        out.matches("Linux version").count(),
        1,
        "the guest booted again"
    );
    assert_eq!(out.matches("OXVM-SELFTEST blkbench ok").count(), 2, "{out}");
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(Duration::from_secs(300)).code(), Some(0));
    assert_eq!(
        pattern_mismatch(&guest_view(&disk), REVERT_BYTES, SEED),
        None
    );
}
