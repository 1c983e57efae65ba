//! Resource control on the real binary: VMs land in their cgroups `oxvm/<name>` with
//! the configured CPU weight and memory limit, the groups are gone when the VMs end, and
//! what the host cannot do is refused before anything starts.
//!
//! The checks follow whichever hierarchy carries the controller (v1 `cpu.shares` /
//! `memory.limit_in_bytes`, v2 `cpu.weight` / `memory.max`); the development hosts have
//! cgroup v1 only, so only the v1 files are exercised here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::asm::Asm;
use common::vm::{raw_vm, RunningVm, Scratch};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Where a controller lives on this host, for checking what oxvm did.
struct Hierarchy {
    mount: PathBuf,
    v2: bool,
}

impl Hierarchy {
    /// The hierarchy carrying `controller` (v2 if its root offers it, else the v1 mount
    /// whose options name it).
    fn of(controller: &str) -> Hierarchy {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut v1 = None;
        for line in mountinfo.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let Some(sep) = f.iter().position(|x| *x == "-") else {
                continue;
            };
            let mount = PathBuf::from(f[4]);
            match f[sep + 1] {
                "cgroup2" => {
                    let offered =
                        std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
                    if offered.split_whitespace().any(|c| c == controller) {
                        return Hierarchy { mount, v2: true };
                    }
                }
                "cgroup" if f[sep + 3].split(',').any(|o| o == controller) => {
                    v1.get_or_insert(Hierarchy { mount, v2: false });
                }
                _ => {}
            }
        }
        v1.unwrap_or_else(|| panic!("this host has no {controller} cgroup controller"))
    }

    /// The VM's group directory (default parent `oxvm`).
    fn group(&self, name: &str) -> PathBuf {
        self.mount.join("oxvm").join(name)
    }

    fn read(&self, name: &str, file: &str) -> String {
        let p = self.group(name).join(file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// The cgroup path of `pid` (or `pid/task/tid`) in this hierarchy.
    fn cgroup_of(&self, proc_dir: &str, controller: &str) -> String {
        let text = std::fs::read_to_string(format!("/proc/{proc_dir}/cgroup")).unwrap();
        text.lines()
            .find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (id, ctl, path) = (it.next()?, it.next()?, it.next()?);
                let hit = if self.v2 {
                    id == "0"
                } else {
                    ctl.split(',').any(|c| c == controller)
                };
                hit.then(|| path.to_string())
            })
            .unwrap_or_else(|| panic!("no {controller} line in {text}"))
    }
}

fn spinning_code() -> Vec<u8> {
    Asm::new()
        .puts("up\n")
        .label("spin")
        .pause()
        .jmp("spin")
        .finish()
}

fn vm_file(s: &Scratch, name: &str, vcpus: u32, resources: Value) -> PathBuf {
    raw_vm(
        s,
        &spinning_code(),
        vcpus,
        json!({ "name": name, "resources": resources }),
    )
}

fn start(file: &Path) -> RunningVm {
    let vm = RunningVm::start(file);
    vm.expect_stdout(T, |o| o.contains("up\n"), "guest start");
    vm
}

fn stop(mut vm: RunningVm) {
    vm.signal(libc::SIGTERM);
    let st = vm.wait(T);
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{}", vm.stderr.text());
    let err = vm.stderr.text();
    assert!(
        !err.contains("cannot remove cgroup") && !err.contains("cannot move the VM process"),
        "cleanup warnings: {err}"
    );
}

/// Every thread of the VM (main, vCPUs, workers) is in the VM's group.
fn assert_all_threads_in(vm: &RunningVm, h: &Hierarchy, controller: &str, name: &str) {
    let want = format!("/oxvm/{name}");
    assert_eq!(h.cgroup_of(&vm.pid().to_string(), controller), want);
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{}/task", vm.pid()))
        .unwrap()
        .flatten()
    {
        let tid = t.file_name().to_string_lossy().into_owned();
        let task = format!("{}/task/{tid}", vm.pid());
        assert_eq!(h.cgroup_of(&task, controller), want, "thread {tid}");
        threads += 1;
    }
    assert!(threads >= 2, "main thread and vcpu0 at least");
}

fn refused(vm_file: &Path) -> String {
    common::vm::run_refused(vm_file)
}

#[test]
fn cpu_half_and_full_land_in_their_groups_with_512_and_1024_shares() {
    let pid = std::process::id();
    let (half, full) = (format!("cgtest-half-{pid}"), format!("cgtest-full-{pid}"));
    let (s1, s2) = (Scratch::new(), Scratch::new());
    let cpu = Hierarchy::of("cpu");
    let mem = Hierarchy::of("memory");
    let vm_half = start(&vm_file(&s1, &half, 1, json!({ "cpu_weight": 0.5 })));
    let vm_full = start(&vm_file(
        &s2,
        &full,
        2,
        json!({ "cpu_weight": 1.0, "memory_max_mib": 64 }),
    ));

    let (shares, half_v, full_v) = if cpu.v2 {
        ("cpu.weight", "50", "100")
    } else {
        ("cpu.shares", "512", "1024")
    };
    assert_eq!(cpu.read(&half, shares), half_v);
    assert_eq!(cpu.read(&full, shares), full_v);
    assert_all_threads_in(&vm_half, &cpu, "cpu", &half);
    assert_all_threads_in(&vm_full, &cpu, "cpu", &full);

    // The memory limit covers the whole process; guest RAM is charged to the group.
    let (limit, usage) = if mem.v2 {
        ("memory.max", "memory.current")
    } else {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    };
    assert_eq!(mem.read(&full, limit), (64u64 << 20).to_string());
    assert!(mem.read(&full, usage).parse::<u64>().unwrap() > 0);
    assert_all_threads_in(&vm_full, &mem, "memory", &full);
    // Without memory_max_mib there is no memory group.
    if !mem.v2 {
        assert!(!mem.group(&half).exists());
    }

    stop(vm_half);
    stop(vm_full);
    for dir in [cpu.group(&half), cpu.group(&full), mem.group(&full)] {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn values_the_host_cannot_honour_are_refused_before_anything_starts() {
    let name = format!("cgtest-bad-{}", std::process::id());
    let s = Scratch::new();
    let cpu = Hierarchy::of("cpu");

    let e = refused(&vm_file(&s, &name, 1, json!({ "cpu_weight": 0 })));
    assert!(
        e.contains("`resources.cpu_weight`") && e.contains("must be > 0"),
        "{e}"
    );

    let e = refused(&vm_file(&s, &name, 1, json!({ "memory_max_mib": 16 })));
    assert!(e.contains("`resources.memory_max_mib`"), "{e}");

    let e = refused(&vm_file(
        &s,
        &name,
        2,
        json!({ "cpu_weight": 1.0, "vcpu_pinning": [[0], [999]] }),
    ));
    assert!(
        e.contains("`resources.vcpu_pinning[1]`") && e.contains("host CPU 999"),
        "{e}"
    );
    assert!(!cpu.group(&name).exists(), "a refused VM made its group");
}

/// A group of the VM's name that still holds a process (a VM of that name running) is
/// refused naming it; an empty leftover (a VM killed with SIGKILL) is reused.
#[test]
fn a_busy_group_is_refused_and_an_empty_leftover_reused() {
    let name = format!("cgtest-busy-{}", std::process::id());
    let cpu = Hierarchy::of("cpu");
    let dir = cpu.group(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let sleeper = Sleeper(
        Command::new("sleep").arg("60").spawn().unwrap(),
        dir.clone(),
    );
    std::fs::write(dir.join("cgroup.procs"), sleeper.0.id().to_string()).unwrap();

    let s = Scratch::new();
    let file = vm_file(&s, &name, 1, json!({ "cpu_weight": 2.0 }));
    let e = refused(&file);
    assert!(
        e.contains(&dir.display().to_string())
            && e.contains(&format!("holds process(es) {}", sleeper.0.id())),
        "{e}"
    );
    drop(sleeper); // the group is now empty, as after a VM killed by SIGKILL
    assert!(dir.exists());

    let vm = start(&file);
    let want = if cpu.v2 { "200" } else { "2048" };
    assert_eq!(
        cpu.read(&name, if cpu.v2 { "cpu.weight" } else { "cpu.shares" }),
        want
    );
    assert_all_threads_in(&vm, &cpu, "cpu", &name);
    stop(vm);
    assert!(!dir.exists());
}

/// A `sleep` in a test group: killed and reaped when dropped (also on a failed assert,
/// when its group is removed too).
struct Sleeper(std::process::Child, PathBuf);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let _ = std::fs::remove_dir(&self.1);
        }
    }
}

#[test]
fn vcpu_threads_are_pinned() {
    let name = format!("cgtest-pin-{}", std::process::id());
    let s = Scratch::new();
    let vm = start(&vm_file(
        &s,
        &name,
        2,
        json!({ "vcpu_pinning": [[1], [0]] }),
    ));
    let mut seen = 0;
    for t in std::fs::read_dir(format!("/proc/{}/task", vm.pid()))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap();
        let want = match comm.trim() {
            "vcpu0" => "1",
            "vcpu1" => "0",
            _ => continue,
        };
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(allowed, want, "{}", comm.trim());
        seen += 1;
    }
    assert_eq!(seen, 2);
    stop(vm);
}
