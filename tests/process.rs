//! The process is the VM: signals end it cleanly, `nice` works, no threads or files
//! are left behind.

mod common;

use std::time::Duration;

use common::asm::Asm;
use common::vm::{raw_vm, RunningVm, Scratch};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// Two vCPUs: the BSP prints "up" and spins, the AP is never started (it waits in KVM
/// for INIT/SIPI), so the process has a running and a parked vCPU thread.
fn spinning_vm_file(s: &Scratch) -> std::path::PathBuf {
    let code = Asm::new()
        .puts("up\n")
        .label("spin")
        .pause()
        .jmp("spin")
        .finish();
    raw_vm(s, &code, 2, json!({}))
}

/// Start the VM with the scratch dir as its working and temp directory, so any file
/// oxvm created at run time would show up there.
fn start_in(s: &Scratch, file: &std::path::Path) -> RunningVm {
    let mut cmd = std::process::Command::new(common::vm::oxvm_bin());
    cmd.arg("run")
        .arg(file)
        .current_dir(s.path())
        .env("TMPDIR", s.path());
    let vm = RunningVm::start_with(&mut cmd);
    vm.expect_stdout(T, |o| o.contains("up\n"), "guest start");
    vm
}

fn spinning_vm(s: &Scratch) -> RunningVm {
    let file = spinning_vm_file(s);
    start_in(s, &file)
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn threads_are_named_after_the_vm_and_vcpus() {
    let s = Scratch::new();
    let vm = spinning_vm(&s);
    let names = vm.thread_names();
    assert!(names.contains(&"smallguest".to_string()), "{names:?}");
    assert!(names.contains(&"vcpu0".to_string()), "{names:?}");
    assert!(names.contains(&"vcpu1".to_string()), "{names:?}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", vm.pid())).unwrap();
    assert_eq!(comm.trim(), "smallguest");
}

#[test]
fn sigterm_stops_the_vm_and_leaves_nothing_behind() {
    let s = Scratch::new();
    let file = spinning_vm_file(&s);
    let before = files_in(s.path());
    let mut vm = start_in(&s, &file);
    let pid = vm.pid();
    vm.signal(libc::SIGTERM);
    let st = vm.wait(T);
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{}", vm.stderr.text());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(files_in(s.path()), before);
}

#[test]
fn sigint_stops_the_vm() {
    let s = Scratch::new();
    let mut vm = spinning_vm(&s);
    vm.signal(libc::SIGINT);
    assert_eq!(vm.wait(T).code(), Some(128 + libc::SIGINT));
}

#[test]
fn sigkill_ends_every_thread() {
    use std::os::unix::process::ExitStatusExt;
    let s = Scratch::new();
    let file = spinning_vm_file(&s);
    let before = files_in(s.path());
    let mut vm = start_in(&s, &file);
    let pid = vm.pid();
    assert!(vm.thread_names().len() >= 3);
    vm.signal(libc::SIGKILL);
    let st = vm.wait(T);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    // Reaped: the pid and all of its threads are gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}/task")).exists());
    assert_eq!(files_in(s.path()), before);
}

#[test]
fn runs_under_nice() {
    let s = Scratch::new();
    let file = raw_vm(
        &s,
        &Asm::new()
            .puts("up\n")
            .label("spin")
            .pause()
            .jmp("spin")
            .finish(),
        1,
        json!({}),
    );
    let mut cmd = std::process::Command::new("nice");
    cmd.args(["-n", "10", common::vm::oxvm_bin(), "run"])
        .arg(&file);
    let mut vm = RunningVm::start_with(&mut cmd);
    vm.expect_stdout(T, |o| o.contains("up\n"), "guest start under nice");
    // Field 19 of /proc/<pid>/task/<tid>/stat is the nice value: every thread has it.
    for t in std::fs::read_dir(format!("/proc/{}/task", vm.pid()))
        .unwrap()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after_comm.split(' ').nth(16).unwrap().parse().unwrap();
        assert_eq!(nice, 10, "{stat}");
    }
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.wait(T).code(), Some(128 + libc::SIGTERM));
}

#[test]
fn sigusr1_dumps_every_vcpu_and_the_vm_keeps_running() {
    let s = Scratch::new();
    let mut vm = spinning_vm(&s);
    vm.signal(libc::SIGUSR1);
    assert!(
        vm.stderr.wait_until(T, |e| e.contains("vCPU 0 registers")
            && e.contains("vCPU 1 registers")),
        "{}",
        vm.stderr.text()
    );
    assert!(vm.stderr.text().contains("rip=0x"));
    // Still running: it ends only on the stop signal.
    assert_eq!(vm.child.try_wait().unwrap(), None);
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.wait(T).code(), Some(128 + libc::SIGTERM));
}
