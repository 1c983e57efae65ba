//! `oxvm ctl` and `oxvm list` against real VM processes: output, `--json`, and the exit
//! codes scripts rely on (0 done, 1 unreachable, 3 refused, 4 timeout).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::asm::Asm;
use common::vm::{oxvm_bin, raw_vm, RunningVm, Scratch};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn spin_guest() -> Vec<u8> {
    Asm::new()
        .puts("up\n")
        .label("spin")
        .pause()
        .jmp("spin")
        .finish()
}

fn ctl(runtime: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(oxvm_bin())
        .arg("ctl")
        .arg("--api-socket")
        .arg(sock)
        .args(args)
        .env("OXVM_RUNTIME_DIR", runtime)
        .output()
        .expect("run oxvm ctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn start(s: &Scratch, name: &str) -> (RunningVm, std::path::PathBuf) {
    let file = raw_vm(s, &spin_guest(), 1, json!({ "name": name }));
    let sock = s.path().join(format!("{name}.sock"));
    let mut cmd = Command::new(oxvm_bin());
    cmd.arg("run")
        .arg("--api-socket")
        .arg(&sock)
        .arg(&file)
        .env("OXVM_RUNTIME_DIR", s.path().join("run"));
    let vm = RunningVm::start_with(&mut cmd);
    vm.expect_stdout(T, |o| o.contains("up\n"), "guest start");
    common::http::wait_ready(&sock, T);
    (vm, sock)
}

#[test]
fn ctl_drives_the_vm_with_reliable_exit_codes() {
    let s = Scratch::new();
    let run = s.path().join("run");
    let (mut vm, sock) = start(&s, "ctlvm");

    let o = ctl(&run, &sock, &["info"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("ctlvm") && t.contains("running"), "{t}");
    assert!(t.contains(&vm.pid().to_string()), "{t}");

    let o = ctl(&run, &sock, &["--json", "info"]);
    let info: Value = serde_json::from_slice(&o.stdout).expect("info --json is JSON");
    assert_eq!(info["state"], "running");

    assert_eq!(ctl(&run, &sock, &["pause"]).status.code(), Some(0));
    let o = ctl(&run, &sock, &["pause"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("paused"), "{}", text(&o));
    let o = ctl(&run, &sock, &["wait-state", "running", "--timeout", "1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(ctl(&run, &sock, &["resume"]).status.code(), Some(0));
    let o = ctl(&run, &sock, &["wait-state", "running", "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = ctl(&run, &sock, &["--json", "counters"]);
    let c: Value = serde_json::from_slice(&o.stdout).expect("counters --json");
    assert!(
        c["vcpus"][0]["exits"]["io_out"].as_u64().unwrap() >= 3,
        "{c}"
    );
    assert_eq!(c["memory"]["guest_bytes"], 32u64 << 20);

    // `oxvm list` finds it through the runtime directory.
    let o = Command::new(oxvm_bin())
        .args(["list"])
        .env("OXVM_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let row = t
        .lines()
        .find(|l| l.contains("ctlvm"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        row.contains(&vm.pid().to_string()) && row.contains("running"),
        "{row}"
    );

    // The small guest ignores the power button: --force destroys it after 1 s.
    let o = ctl(&run, &sock, &["shutdown", "--timeout", "1", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(vm.wait(T).code(), Some(0));
    let o = ctl(&run, &sock, &["info"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = Command::new(oxvm_bin())
        .args(["list", "--json"])
        .env("OXVM_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&o.stdout).expect("list --json");
    assert_eq!(listed, json!([]), "a stopped VM is still listed");
}

#[test]
fn ctl_deploys_a_vm_file_into_a_serve_process() {
    let s = Scratch::new();
    let run = s.path().join("run");
    // A relative raw path: ctl resolves it against the VM file's folder.
    let file = raw_vm(&s, &spin_guest(), 1, json!({ "name": "deployed" }));
    let sock = s.path().join("serve.sock");
    let mut cmd = Command::new(oxvm_bin());
    cmd.args(["serve", "--api-socket"])
        .arg(&sock)
        .current_dir("/")
        .env("OXVM_RUNTIME_DIR", &run);
    let mut vm = RunningVm::start_with(&mut cmd);
    common::http::wait_ready(&sock, T);
    let o = ctl(&run, &sock, &["boot"]);
    assert_eq!(o.status.code(), Some(3), "boot with no VM: {}", text(&o));
    let o = ctl(&run, &sock, &["deploy", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    vm.expect_stdout(T, |o| o.contains("up\n"), "deployed guest");
    assert_eq!(ctl(&run, &sock, &["destroy"]).status.code(), Some(0));
    assert_eq!(vm.wait(T).code(), Some(0));
}

#[test]
fn ctl_without_a_vm_exits_1() {
    let s = Scratch::new();
    let o = ctl(
        &s.path().join("run"),
        &s.path().join("nothing.sock"),
        &["info"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing.sock"), "{}", text(&o));
}

#[test]
fn ctl_takes_lists_reverts_and_deletes_snapshots() {
    let s = Scratch::new();
    common::qemu_img::create_qcow2(&s.path().join("d0.qcow2"), "4M");
    let file = raw_vm(
        &s,
        &spin_guest(),
        1,
        json!({
            "name": "snapctl",
            "disks": [ { "id": "d0", "path": "d0.qcow2" } ],
            "snapshots_dir": "snaps"
        }),
    );
    let sock = s.path().join("snapctl.sock");
    let run = s.path().join("run");
    let mut cmd = Command::new(oxvm_bin());
    cmd.arg("run")
        .arg("--api-socket")
        .arg(&sock)
        .arg(&file)
        .env("OXVM_RUNTIME_DIR", &run);
    let _vm = RunningVm::start_with(&mut cmd);
    common::http::wait_ready(&sock, T);

    let o = ctl(
        &run,
        &sock,
        &["snapshot-create", "s1", "--description", "first"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.starts_with("NAME"), "{t}");
    assert!(
        t.contains("s1") && t.contains("d0.qcow2.s1") && t.contains("first"),
        "{t}"
    );
    let o = ctl(&run, &sock, &["snapshot-list", "--json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["snapshots"][0]["name"], "s1");
    assert_eq!(list["snapshots"][0]["vm_state"], "running");
    let o = ctl(&run, &sock, &["snapshot-revert", "s1", "--paused"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o), "paused\n");
    // Refusals exit 3 with the VM's message.
    let o = ctl(&run, &sock, &["snapshot-create", "s1"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("exists already"), "{}", text(&o));
    let o = ctl(&run, &sock, &["snapshot-revert", "nope"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = ctl(&run, &sock, &["snapshot-delete", "s1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o), "no snapshots\n");
}
