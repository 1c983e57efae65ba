//! Bad input: each case gets a clear message naming the problem, a non-zero exit, and
//! nothing is started (no guest output).

mod common;

use std::path::Path;

use common::elf::elf_with_segment;
use common::vm::Scratch;
use serde_json::{json, Value};

fn refused(vm_file: &Path) -> String {
    common::vm::run_refused(vm_file)
}

fn vm_json(kernel: &str, patch: Value) -> Value {
    let mut v = json!({
        "name": "bad", "vcpus": 1, "memory_mib": 64,
        "boot": { "kernel": kernel, "cmdline": "console=ttyS0" },
        "serial": { "mode": "stdout" }
    });
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn refused_json(s: &Scratch, v: &Value) -> String {
    refused(&s.write_json("vm.json", v))
}

#[test]
fn missing_vm_file() {
    let e = refused(Path::new("/nonexistent/vm.json"));
    assert!(
        e.contains("cannot read VM file /nonexistent/vm.json"),
        "{e}"
    );
}

#[test]
fn missing_kernel_file() {
    let s = Scratch::new();
    let e = refused_json(&s, &vm_json("no-such-vmlinux", json!({})));
    assert!(e.contains("cannot open kernel"), "{e}");
    assert!(e.contains("no-such-vmlinux"), "{e}");
}

#[test]
fn unreadable_kernel_file() {
    // Root can read files whatever their mode, so use something that is never
    // readable as a kernel: a directory.
    let s = Scratch::new();
    std::fs::create_dir(s.path().join("kdir")).unwrap();
    let e = refused_json(&s, &vm_json("kdir", json!({})));
    assert!(e.contains("cannot open kernel"), "{e}");
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn not_a_kernel() {
    let s = Scratch::new();
    s.write("junk", &vec![0x5a; 8192]);
    let e = refused_json(&s, &vm_json("junk", json!({})));
    assert!(e.contains("is not a kernel"), "{e}");
}

#[test]
fn json_syntax_error() {
    let s = Scratch::new();
    let e = refused(&s.write("vm.json", b"{ \"name\": \"x\", \"vcpus\": 1,, }"));
    assert!(e.contains("line 1 column"), "{e}");
}

#[test]
fn unknown_field_is_named() {
    let s = Scratch::new();
    let e = refused_json(&s, &vm_json("k", json!({ "vcpu_count": 2 })));
    assert!(e.contains("unknown field `vcpu_count`"), "{e}");
}

#[test]
fn zero_vcpus() {
    let s = Scratch::new();
    let e = refused_json(&s, &vm_json("k", json!({ "vcpus": 0 })));
    assert!(e.contains("field `vcpus`: must be at least 1"), "{e}");
}

#[test]
fn vcpus_above_the_limit() {
    let s = Scratch::new();
    let e = refused_json(&s, &vm_json("k", json!({ "vcpus": 5000 })));
    assert!(e.contains("field `vcpus`"), "{e}");
    assert!(e.contains("above"), "{e}");
}

#[test]
fn zero_memory() {
    let s = Scratch::new();
    let e = refused_json(&s, &vm_json("k", json!({ "memory_mib": 0 })));
    assert!(e.contains("field `memory_mib`: must be at least 1"), "{e}");
}

#[test]
fn kernel_larger_than_memory() {
    // A valid ELF whose 8 MiB segment loads at 16 MiB, in a 16 MiB guest.
    let s = Scratch::new();
    s.write("big.elf", &elf_with_segment(16 << 20, 8 << 20));
    let e = refused_json(&s, &vm_json("big.elf", json!({ "memory_mib": 16 })));
    assert!(e.contains("does not fit in the guest's 16 MiB"), "{e}");
}

#[test]
fn pvh_requested_without_note() {
    let s = Scratch::new();
    s.write("k.elf", &elf_with_segment(16 << 20, 4096));
    let mut v = vm_json("k.elf", json!({}));
    v["boot"]["entry"] = json!("pvh");
    let e = refused_json(&s, &v);
    assert!(e.contains("has no PVH ELF note"), "{e}");
}

#[test]
fn command_line_too_long() {
    let s = Scratch::new();
    s.write("k.elf", &elf_with_segment(16 << 20, 4096));
    let mut v = vm_json("k.elf", json!({}));
    v["boot"]["cmdline"] = json!("x".repeat(3000));
    let e = refused_json(&s, &v);
    assert!(e.contains("boot.cmdline is 3000 bytes"), "{e}");
}
