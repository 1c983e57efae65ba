use std::path::Path;

use super::*;

const GOOD: &str = r#"{ "name": "demo", "vcpus": 2, "memory_mib": 256,
  "boot": { "kernel": "vmlinux", "initrd": null, "cmdline": "console=ttyS0" },
  "serial": { "mode": "stdout" }, "on_reboot": "restart" }"#;

fn err_of(json: &str) -> String {
    VmConfig::from_json(json, Path::new("/vms"))
        .unwrap_err()
        .to_string()
}

#[test]
fn parses_the_documented_example_and_resolves_paths() {
    let cfg = VmConfig::from_json(GOOD, Path::new("/vms")).unwrap();
    assert_eq!(cfg.name, "demo");
    assert_eq!(cfg.vcpus, 2);
    assert_eq!(cfg.memory_mib, 256);
    assert_eq!(cfg.boot.kernel.as_deref(), Some(Path::new("/vms/vmlinux")));
    assert_eq!(cfg.on_reboot, OnReboot::Restart);
    assert_eq!(cfg.serial.mode, SerialMode::Stdout);
    assert_eq!(cfg.boot.entry, BootEntry::Auto);
    assert_eq!(cfg.cpu.kvm_pv_features, KvmPvFeatures::default());
}

#[test]
fn absolute_paths_stay() {
    let json = GOOD.replace("\"vmlinux\"", "\"/boot/vmlinux\"");
    let cfg = VmConfig::from_json(&json, Path::new("/vms")).unwrap();
    assert_eq!(cfg.boot.kernel.as_deref(), Some(Path::new("/boot/vmlinux")));
}

#[test]
fn unknown_fields_are_named() {
    let e = err_of(&GOOD.replace("\"vcpus\"", "\"vcpu_count\""));
    assert!(e.contains("vcpu_count"), "{e}");
    let e = err_of(&GOOD.replace("\"cmdline\"", "\"comdline\""));
    assert!(e.contains("comdline"), "{e}");
}

#[test]
fn syntax_errors_give_a_position() {
    let e = err_of("{ \"name\": \"x\",, }");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn bad_values_name_the_field() {
    for (json, field) in [
        (GOOD.replace("\"vcpus\": 2", "\"vcpus\": 0"), "vcpus"),
        (GOOD.replace("\"vcpus\": 2", "\"vcpus\": 999"), "vcpus"),
        (GOOD.replace("256", "0"), "memory_mib"),
        (GOOD.replace("\"demo\"", "\"a b\""), "name"),
        (GOOD.replace("\"demo\"", "\"\""), "name"),
        (GOOD.replace("\"kernel\": \"vmlinux\",", ""), "boot.kernel"),
        (
            GOOD.replace("{ \"mode\": \"stdout\" }", "{ \"mode\": \"file\" }"),
            "serial.path",
        ),
    ] {
        let e = err_of(&json);
        assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
    }
    let e = err_of(&GOOD.replace("\"restart\"", "\"reboot\""));
    assert!(e.contains("reboot"), "{e}");
}

#[test]
fn kvm_pv_features_presets_and_lists() {
    let host = (1 << 3) | (1 << 7) | (1 << 11) | (1 << 13) | (1 << 24);
    let safe = KvmPvFeatures::default().resolve(host).unwrap();
    assert_eq!(safe, (1 << 3) | (1 << 24));
    assert_eq!(KvmPvFeatures::Preset("host".into()).resolve(host), Ok(host));
    assert_eq!(KvmPvFeatures::Preset("none".into()).resolve(host), Ok(0));
    assert_eq!(
        KvmPvFeatures::List(vec!["clocksource2".into(), "pv_send_ipi".into()]).resolve(host),
        Ok((1 << 3) | (1 << 11))
    );
    let e = KvmPvFeatures::List(vec!["steal_time".into()])
        .resolve(host)
        .unwrap_err();
    assert!(e.contains("steal_time"), "{e}");
    let e = KvmPvFeatures::List(vec!["warp_drive".into()])
        .resolve(host)
        .unwrap_err();
    assert!(e.contains("warp_drive"), "{e}");
    let json = GOOD.replace(
        "\"on_reboot\"",
        "\"cpu\": {\"kvm_pv_features\": \"bogus\"}, \"on_reboot\"",
    );
    assert!(err_of(&json).contains("`cpu.kvm_pv_features`"));
}

#[test]
fn round_trips_through_json() {
    let cfg = VmConfig::from_json(GOOD, Path::new("/vms")).unwrap();
    let text = serde_json::to_string(&cfg).unwrap();
    let again = VmConfig::from_json(&text, Path::new("/elsewhere")).unwrap();
    assert_eq!(cfg, again);
}
