//! Linux guests: the test kernel built by resources/guest/build.sh and its selftest.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::vm::Scratch;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/guest/<name>`; a missing kernel is a test failure, never a skip.
pub fn guest_file(name: &str) -> PathBuf {
    let p = repo().join("target/guest").join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the test kernel with `bash resources/guest/build.sh` \
         (the README's test command does)",
        p.display()
    );
    p
}

/// The example VM file the README points users at, which the tests reuse so it stays
/// correct.
pub fn example() -> Value {
    let p = repo().join("resources/examples/linux-selftest.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The PVM-safe command line of the example, with `oxvm.selftest=` replaced.
pub fn cmdline(checks: &str) -> String {
    let base = example()["boot"]["cmdline"].as_str().unwrap().to_string();
    let kept: Vec<&str> = base
        .split_whitespace()
        .filter(|w| !w.starts_with("oxvm.selftest="))
        .collect();
    format!("{} oxvm.selftest={checks}", kept.join(" "))
}

/// A VM file booting `kernel` (a file name under target/guest) with the selftest.
pub fn linux_vm(s: &Scratch, name: &str, kernel: &str, checks: &str, extra: Value) -> PathBuf {
    let mut v = json!({
        "name": name,
        "vcpus": 2,
        "memory_mib": 256,
        "boot": { "kernel": guest_file(kernel), "cmdline": cmdline(checks) },
        "serial": { "mode": "stdout" },
        "on_reboot": "exit"
    });
    for (k, val) in extra.as_object().unwrap() {
        if k == "boot" {
            for (bk, bv) in val.as_object().unwrap() {
                v["boot"][bk] = bv.clone();
            }
        } else {
            v[k] = val.clone();
        }
    }
    s.write_json("vm.json", &v)
}

/// The selftest result line for `check`: `Some((ok, details))`.
pub fn selftest_result(console: &str, check: &str) -> Option<(bool, String)> {
    let prefix = format!("OXVM-SELFTEST {check} ");
    console.lines().find_map(|l| {
        let rest = &l[l.find(&prefix)? + prefix.len()..];
        let (status, details) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((status == "ok", details.trim().to_string()))
    })
}

/// `key=value` from a selftest details string.
pub fn detail(details: &str, key: &str) -> Option<u64> {
    details
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}
