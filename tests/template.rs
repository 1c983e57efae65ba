//! OpenNebula templates through the real binary: `oxvm config convert` and `oxvm run`
//! on `.tmpl` files. Nothing here boots Linux.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::vm::{oxvm_bin, Scratch};
use oxvm_api::{load_vm_file, VmConfig};
use serde_json::json;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/examples")
}

fn oxvm(args: &[&str], file: &Path) -> Output {
    let start = Instant::now();
    let out = Command::new(oxvm_bin())
        .args(args)
        .arg(file)
        .output()
        .expect("run oxvm");
    assert!(start.elapsed() < Duration::from_secs(20), "{out:?}");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `oxvm config convert <file>`: asserts success; returns (stdout, stderr).
fn convert(file: &Path) -> (String, String) {
    let out = oxvm(&["config", "convert"], file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    (text(&out.stdout), text(&out.stderr))
}

/// Asserts exit status 1 and no guest output; returns stderr.
fn refused(args: &[&str], file: &Path) -> String {
    let out = oxvm(args, file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    text(&out.stderr)
}

#[test]
fn convert_the_opennebula_example() {
    let (stdout, stderr) = convert(&examples().join("opennebula-vm.tmpl"));
    // Every path in this example is absolute, so the base does not matter.
    let got = VmConfig::from_json(&stdout, Path::new("/elsewhere")).expect("JSON VM file");
    let want: VmConfig = serde_json::from_value(json!({
        "name": "web-server-1",
        "vcpus": 2,
        "memory_mib": 2048,
        "boot": {
            "kernel": "/var/lib/one/datastores/2/vmlinuz-6.1",
            "initrd": "/var/lib/one/datastores/2/initrd-6.1.img",
            "cmdline": "root=/dev/vda1 console=ttyS0 ro quiet"
        },
        "disks": [
            { "id": "0", "path": "/var/lib/one/datastores/0/42/disk.0", "format": "qcow2",
              "cache": "none", "io": "native", "discard": "unmap",
              "iotune": { "total_bytes_sec": 104857600, "total_bytes_sec_max": 209715200,
                          "total_bytes_sec_max_length": 10, "read_iops_sec": 2000,
                          "size_iops_sec": 4096 } },
            { "id": "1", "path": "/var/lib/one/datastores/0/42/disk.1", "format": "raw",
              "readonly": true }
        ],
        "nics": [
            { "id": "0", "tap": "one-42-0", "bridge": "onebr0", "mac": "02:00:0a:00:00:05",
              "model": "virtio", "queues": 2 }
        ],
        "resources": { "cpu_weight": 0.5 }
    }))
    .unwrap();
    assert_eq!(got, want);

    for line in stderr.lines() {
        assert!(line.starts_with("oxvm: warning: "), "{stderr}");
    }
    for attribute in [
        "CONTEXT",
        "GRAPHICS",
        "NAME",
        "DESCRIPTION",
        "SCHED_REQUIREMENTS",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with("oxvm: warning: line ")
                && l.contains(&format!(": {attribute}: "))),
            "{attribute} not in: {stderr}"
        );
    }
    // CPU is mapped (to resources.cpu_weight), so it is not among the warnings.
    assert!(!stderr.contains("CPU"), "{stderr}");
}

#[test]
fn selftest_template_equals_the_json_example() {
    let tmpl = examples().join("linux-selftest.tmpl");
    let (stdout, stderr) = convert(&tmpl);
    assert!(stderr.is_empty(), "{stderr}");
    // `convert` keeps paths as written: they resolve against the examples folder.
    let converted = VmConfig::from_json(&stdout, &examples()).expect("JSON VM file");
    let json = VmConfig::from_file(&examples().join("linux-selftest.json")).unwrap();
    assert_eq!(converted, json);
    // And loading the template directly (what `oxvm run` does) gives the same.
    let (loaded, warnings) = load_vm_file(&tmpl).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(loaded, json);
}

#[test]
fn convert_accepts_json_too() {
    let (stdout, stderr) = convert(&examples().join("linux-selftest.json"));
    assert!(stderr.is_empty(), "{stderr}");
    let converted = VmConfig::from_json(&stdout, &examples()).unwrap();
    let json = VmConfig::from_file(&examples().join("linux-selftest.json")).unwrap();
    assert_eq!(converted, json);
}

#[test]
fn the_help_example_converts() {
    let out = Command::new(oxvm_bin())
        .args(["config", "convert", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    let template: String = help
        .lines()
        .skip_while(|l| !l.starts_with("An OpenNebula template"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    assert!(template.starts_with("NAME"), "{help}");
    let s = Scratch::new();
    let (stdout, stderr) = convert(&s.write("help.tmpl", template.as_bytes()));
    let cfg = VmConfig::from_json(&stdout, s.path()).unwrap();
    assert_eq!(cfg.name, "web-1");
    assert_eq!(cfg.disks.len(), 2);
    assert_eq!(cfg.nics[0].tap, "one-7-0");
    assert_eq!(cfg.on_reboot, oxvm_api::OnReboot::Exit);
    assert!(stderr.contains("line 1: NAME"), "{stderr}");
}

#[test]
fn malformed_templates_are_refused_with_the_line() {
    let s = Scratch::new();
    let bad = s.write(
        "bad.tmpl",
        b"NAME = x\nMEMORY = 64\nDISK = [ SOURCE = \"a\"\n  CACHE = none ]\n",
    );
    for args in [&["config", "convert"][..], &["run"][..]] {
        let e = refused(args, &bad);
        assert!(e.contains("bad.tmpl"), "{e}");
        assert!(e.contains("line 4, column 3: in DISK/SOURCE"), "{e}");
    }
    let bad = s.write(
        "model.tmpl",
        b"NAME = x\nMEMORY = 64\nOS = [ KERNEL = k ]\n\nNIC = [ MODEL = e1000 ]\n",
    );
    let e = refused(&["config", "convert"], &bad);
    assert!(e.contains("line 5, column 17: NIC[0]/MODEL"), "{e}");
    assert!(e.contains("e1000"), "{e}");
    let e = refused(&["config", "convert"], Path::new("/nonexistent/vm.tmpl"));
    assert!(
        e.contains("cannot read VM file /nonexistent/vm.tmpl"),
        "{e}"
    );
}

/// `oxvm run` takes a template end to end: warnings first, then the kernel is loaded
/// (and refused, so no Linux boots).
#[test]
fn run_accepts_a_template() {
    let s = Scratch::new();
    s.write("junk-kernel", &[0x5a; 4096]);
    let vm = s.write(
        "vm.tmpl",
        b"NAME = \"tmpl test\"\nMEMORY = 32\nOS = [ KERNEL = \"junk-kernel\" ]\n\
          GRAPHICS = [ TYPE = VNC ]\n",
    );
    let e = refused(&["run"], &vm);
    let warn_name = e.find("oxvm: warning: line 1: NAME").expect(&e);
    let warn_graphics = e.find("oxvm: warning: line 4: GRAPHICS").expect(&e);
    let error = e.find("is not a kernel").expect(&e);
    assert!(warn_name < error && warn_graphics < error, "{e}");
    assert!(
        e.contains(&s.path().join("junk-kernel").display().to_string()),
        "{e}"
    );
}
