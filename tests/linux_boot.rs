//! Boot the test Linux kernel (ELF with PVH and 64-bit entries, and the LZ4 bzImage)
//! with 2 vCPUs and 256 MiB; the guest's selftest reports what it saw.
//!
//! The guest kernel runs in KVM's instruction emulator on the PVM machines this
//! project is developed on: a boot takes tens of seconds, hence the long deadlines.

mod common;

use std::time::Duration;

use common::linux::{detail, linux_vm, selftest_result};
use common::vm::{RunningVm, Scratch};
use serde_json::json;

// Generous: a 2-vCPU guest on an overcommitted 2-core PVM host crawls (lock-holder
// preemption without PV spinlocks); alone it boots in 1-3 minutes.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);

fn boot_and_check(kernel: &str, entry: &str) {
    let s = Scratch::new();
    let name = format!("linux-{entry}");
    let file = linux_vm(
        &s,
        &name,
        kernel,
        "boot",
        json!({ "boot": { "entry": entry } }),
    );
    let mut vm = RunningVm::start(&file);

    // While the guest boots, the host sees one thread per vCPU and the VM's name. The
    // kernel's first console line means vcpu0 runs, and oxvm starts running vCPUs only
    // once every vCPU thread exists.
    vm.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains("Linux version"),
        "the first console line",
    );
    let names = vm.thread_names();
    for want in [name.as_str(), "vcpu0", "vcpu1"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }

    let st = vm.wait(BOOT_TIMEOUT);
    let console = vm.stdout.text();
    let err = vm.stderr.text();
    let (ok, details) = selftest_result(&console, "boot")
        .unwrap_or_else(|| panic!("no boot result\n{console}\n{err}"));
    assert!(ok, "boot check failed: {details}");
    assert_eq!(detail(&details, "cpus"), Some(2), "{details}");
    // The guest sees nearly all of its 256 MiB as RAM in the e820 map (minus the
    // reserved EBDA/BIOS area below 1 MiB).
    let ram_kib = detail(&details, "ram_kib").expect("ram_kib");
    assert!(
        (255 * 1024..=256 * 1024).contains(&ram_kib),
        "e820 RAM {ram_kib} KiB: {details}"
    );
    let mem_kib = detail(&details, "mem_kib").expect("mem_kib");
    assert!(mem_kib > 200 * 1024 && mem_kib <= ram_kib, "{details}");
    assert!(console.contains("OXVM-SELFTEST done"), "{console}");
    assert!(
        console.contains("smp: Brought up 1 node, 2 CPUs"),
        "{console}"
    );
    assert_eq!(st.code(), Some(0), "{console}\n{err}");
}

#[test]
fn elf_vmlinux_pvh_entry() {
    boot_and_check("vmlinux", "pvh");
}

#[test]
fn elf_vmlinux_64bit_entry() {
    boot_and_check("vmlinux", "linux64");
}

#[test]
fn bzimage_64bit_entry() {
    boot_and_check("bzImage", "auto");
}
