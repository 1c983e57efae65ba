//! A Linux guest driven over the control API: counters follow the guest's disk I/O,
//! `reboot` goes through the guest's ACPI power-button handler and boots again,
//! `reset` rebuilds the machine, `shutdown` powers the guest off through its ACPI
//! driver. (SIGTERM's graceful path is proven in linux_devices.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::http::{action, get, wait_ready, wait_state};
use common::linux::{linux_vm, selftest_result};
use common::vm::{oxvm_bin, RunningVm, Scratch};
use serde_json::json;

const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);
const IDLE: &str = "OXVM-SELFTEST idle ok";
const BUTTON: &str = "OXVM-SELFTEST power-button pressed";

#[test]
fn linux_guest_lifecycle_over_the_api() {
    let s = Scratch::new();
    let disk = s.path().join("d0.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // One vCPU: this test boots the guest three times, and a lone vCPU boots fastest
    // on a loaded 2-core host.
    let file = linux_vm(
        &s,
        "apiguest",
        "vmlinux",
        "boot,blk,idle",
        json!({
            "vcpus": 1,
            "on_reboot": "restart",
            "disks": [ { "id": "d0", "path": disk } ],
            "shutdown": { "timeout_s": 600, "force": false }
        }),
    );
    let sock = s.path().join("api.sock");
    let mut cmd = Command::new(oxvm_bin());
    cmd.arg("run")
        .arg("--api-socket")
        .arg(&sock)
        .arg(&file)
        .env("OXVM_RUNTIME_DIR", s.path().join("run"));
    let mut vm = RunningVm::start_with(&mut cmd);
    wait_ready(&sock, Duration::from_secs(30));
    vm.expect_stdout(BOOT_TIMEOUT, |o| o.contains(IDLE), "first boot");
    let (ok, details) = selftest_result(&vm.stdout.text(), "blk").expect("blk result");
    assert!(ok, "blk: {details}");

    // The guest's writes, flushes and reads show in the disk's counters.
    let c = get(&sock, "/v1/vm/counters");
    let d0 = &c["disks"]["d0"];
    assert!(d0["write_ops"].as_u64().unwrap() >= 1, "{c}");
    assert!(d0["write_bytes"].as_u64().unwrap() >= 4096, "{c}");
    assert!(d0["flush_ops"].as_u64().unwrap() >= 1, "{c}");
    assert!(d0["read_ops"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["memory"]["guest_bytes"], 256u64 << 20);
    assert!(
        c["memory"]["host_rss_bytes"].as_u64().unwrap() > 16 << 20,
        "{c}"
    );
    assert!(
        c["vcpus"][0]["exits"]["io_out"].as_u64().unwrap() > 0,
        "{c}"
    );
    let writes_boot1 = d0["write_ops"].as_u64().unwrap();
    let info = get(&sock, "/v1/vm");
    assert_eq!(info["state"], "running");
    assert_eq!(info["boots"], 1);

    // reboot: the power button, the guest powers off, the VM boots again.
    let r = action(&sock, "reboot", None, 202);
    assert_eq!(r["state"], "shutting-down");
    vm.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains(BUTTON),
        "the guest's button handler",
    );
    vm.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.matches(IDLE).count() == 2,
        "second boot",
    );
    let info = wait_state(&sock, Duration::from_secs(30), |i| i["state"] == "running");
    assert_eq!(info["boots"], 2, "{info}");
    assert!(info["last_error"].is_null(), "{info}");

    // reset: hard, in place, same process.
    assert_eq!(action(&sock, "reset", None, 200)["state"], "running");
    vm.expect_stdout(BOOT_TIMEOUT, |o| o.matches(IDLE).count() == 3, "third boot");
    let info = get(&sock, "/v1/vm");
    assert_eq!(info["boots"], 3);
    assert_eq!(info["pid"], vm.pid());
    // Counters add up across boots: three runs of the blk check.
    let c = get(&sock, "/v1/vm/counters");
    assert!(
        c["disks"]["d0"]["write_ops"].as_u64().unwrap() >= 3 * writes_boot1,
        "{c}"
    );

    // shutdown: the guest powers off through its ACPI handling, the process exits 0.
    let r = action(&sock, "shutdown", Some(r#"{"timeout_s": 600}"#), 202);
    assert_eq!(r["state"], "shutting-down");
    let st = vm.wait(BOOT_TIMEOUT);
    let console = vm.stdout.text();
    assert_eq!(st.code(), Some(0), "{console}\n{}", vm.stderr.text());
    assert_eq!(console.matches(BUTTON).count(), 2, "{console}");
    assert!(!sock.exists());
}
