//! Mapping of NAME, MEMORY, VCPU, CPU, OS, FEATURES, RAW and unsupported attributes.

use std::path::{Path, PathBuf};

use crate::template::{convert_template, parse_template, Converted, TemplateError, Warning};
use crate::{OnReboot, SerialMode};

pub(super) const BASE: &str = "NAME = t\nMEMORY = 64\nOS = [ KERNEL = k ]\n";

/// Convert BASE followed by `extra` (so `extra` starts on line 4).
pub(super) fn conv(extra: &str) -> Converted {
    let text = format!("{BASE}{extra}");
    convert_template(&text, Path::new("/vms")).unwrap_or_else(|e| panic!("{text}\n=> {e}"))
}

pub(super) fn fails(text: &str) -> TemplateError {
    match convert_template(text, Path::new("/vms")) {
        Ok(c) => panic!("{text}\n=> converted: {c:?}"),
        Err(e) => e,
    }
}

/// (line, attribute, message) of an `Invalid` error.
pub(super) fn invalid(text: &str) -> (usize, String, String) {
    match fails(text) {
        TemplateError::Invalid {
            pos,
            attribute,
            message,
        } => (pos.line, attribute, message),
        other => panic!("{text}\n=> expected Invalid, got {other:?}"),
    }
}

/// The warning about `attribute`; fails unless there is exactly one.
pub(super) fn warning<'a>(c: &'a Converted, attribute: &str) -> &'a Warning {
    let w: Vec<&Warning> = c
        .warnings
        .iter()
        .filter(|w| w.attribute == attribute)
        .collect();
    assert_eq!(w.len(), 1, "warnings about {attribute}: {:?}", c.warnings);
    w[0]
}

fn os(members: &str) -> String {
    format!("NAME = t\nMEMORY = 64\nOS = [ {members} ]\n")
}

#[test]
fn minimal_template_maps_with_defaults_and_no_warnings() {
    let (cfg, warnings) = parse_template(BASE, Path::new("/vms")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.name, "t");
    assert_eq!(cfg.memory_mib, 64);
    assert_eq!(cfg.vcpus, 1);
    assert_eq!(cfg.boot.kernel, Some(PathBuf::from("/vms/k")));
    assert_eq!(cfg.boot.initrd, None);
    assert_eq!(cfg.boot.cmdline, "");
    assert_eq!(cfg.on_reboot, OnReboot::Restart);
    assert_eq!(cfg.serial.mode, SerialMode::Stdout);
    assert!(cfg.disks.is_empty() && cfg.nics.is_empty());
}

#[test]
fn paths_resolve_like_json_or_stay_as_written() {
    let t = os("KERNEL = \"k\", INITRD = \"/abs/initrd\"");
    let (cfg, _) = parse_template(&t, Path::new("/vms")).unwrap();
    assert_eq!(cfg.boot.kernel, Some(PathBuf::from("/vms/k")));
    assert_eq!(cfg.boot.initrd, Some(PathBuf::from("/abs/initrd")));
    let (cfg, _) = parse_template(&t, Path::new("")).unwrap();
    assert_eq!(cfg.boot.kernel, Some(PathBuf::from("k")));
}

#[test]
fn name_is_made_valid_with_a_warning() {
    let c = convert_template(
        "NAME = \"  web server (test) #1 \"\nMEMORY = 64\nOS = [ KERNEL = k ]",
        Path::new(""),
    )
    .unwrap();
    assert_eq!(c.config.name, "web-server-test-1");
    let w = warning(&c, "NAME");
    assert_eq!(w.pos.line, 1);
    assert!(w.message.contains("\"web-server-test-1\""), "{w}");

    let long = "x".repeat(100);
    let c = convert_template(
        &format!("NAME = {long}\nMEMORY = 64\nOS = [ KERNEL = k ]"),
        Path::new(""),
    )
    .unwrap();
    assert_eq!(c.config.name.len(), crate::template::map::NAME_MAX);
    warning(&c, "NAME");
    // NAME_MAX is validate()'s limit: one more is refused.
    let mut cfg = c.config.clone();
    cfg.name.push('x');
    assert!(cfg.validate().is_err());

    let c = convert_template(
        "NAME = \"vm-1_a.b\"\nMEMORY = 64\nOS = [ KERNEL = k ]",
        Path::new(""),
    )
    .unwrap();
    assert_eq!(c.config.name, "vm-1_a.b");
    assert!(c.warnings.is_empty());
}

#[test]
fn name_errors() {
    let e = fails("MEMORY = 64\nOS = [ KERNEL = k ]");
    assert!(matches!(&e, TemplateError::Missing { attribute, .. } if attribute == "NAME"));
    assert_eq!(e.to_string(), "NAME is missing: the VM's name");
    let (l, a, m) = invalid("MEMORY = 64\nNAME = \"\"\nOS = [ KERNEL = k ]");
    assert_eq!((l, a.as_str()), (2, "NAME"));
    assert!(m.contains("must not be empty"));
    let (l, a, m) = invalid("MEMORY = 64\nNAME = [ X = 1 ]\nOS = [ KERNEL = k ]");
    assert_eq!((l, a.as_str()), (2, "NAME"));
    assert!(m.contains("single value"));
    let (l, a, m) = invalid(&format!("{BASE}NAME = u"));
    assert_eq!((l, a.as_str()), (4, "NAME"));
    assert!(m.contains("given twice (first at line 1)"), "{m}");
}

#[test]
fn memory_and_vcpu() {
    let c = conv("VCPU = 4");
    assert_eq!((c.config.vcpus, c.config.memory_mib), (4, 64));
    let e = fails("NAME = t\nOS = [ KERNEL = k ]");
    assert!(matches!(e, TemplateError::Missing { attribute, .. } if attribute == "MEMORY"));
    let (l, a, m) = invalid("NAME = t\nMEMORY = 1.5G\nOS = [ KERNEL = k ]");
    assert_eq!((l, a.as_str()), (2, "MEMORY"));
    assert!(m.contains("not a whole number"), "{m}");
    // Refused by VmConfig::validate, still reported at the attribute's line.
    let (l, a, m) = invalid("NAME = t\nMEMORY = 0\nOS = [ KERNEL = k ]");
    assert_eq!(
        (l, a.as_str(), m.as_str()),
        (2, "MEMORY", "must be at least 1")
    );
    let (l, a, m) = invalid(&format!("{BASE}VCPU = 999"));
    assert_eq!((l, a.as_str()), (4, "VCPU"));
    assert!(m.contains("above the limit"), "{m}");
    let (l, a, _) = invalid(&format!("{BASE}VCPU = -1"));
    assert_eq!((l, a.as_str()), (4, "VCPU"));
    let (_, a, m) = invalid(&format!("{BASE}VCPU = 99999999999"));
    assert_eq!((a.as_str(), m.as_str()), ("VCPU", "too large"));
}

#[test]
fn cpu_goes_to_the_extras() {
    let c = conv("CPU = 0.5");
    assert_eq!(c.extras.cpu, Some(0.5));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(conv("CPU = \"2\"").extras.cpu, Some(2.0));
    for bad in ["abc", "0", "-1", "inf", "NaN"] {
        let c = conv(&format!("CPU = {bad}"));
        assert_eq!(c.extras.cpu, None, "{bad}");
        let w = warning(&c, "CPU");
        assert_eq!(w.pos.line, 4);
        assert!(w.message.contains("not a positive number"), "{w}");
    }
}

#[test]
fn os_kernel_initrd_cmdline_root() {
    let (cfg, w) = parse_template(
        &os("KERNEL = vmlinux, INITRD = initrd.img, KERNEL_CMD = \"console=ttyS0 ro\", ROOT = vda1, ARCH = x86_64"),
        Path::new("/vms"),
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(cfg.boot.kernel, Some(PathBuf::from("/vms/vmlinux")));
    assert_eq!(cfg.boot.initrd, Some(PathBuf::from("/vms/initrd.img")));
    // root= first, as OpenNebula's KVM driver writes it.
    assert_eq!(cfg.boot.cmdline, "root=/dev/vda1 console=ttyS0 ro");

    let c = convert_template(&os("KERNEL = k, ROOT = sda"), Path::new("")).unwrap();
    assert_eq!(c.config.boot.cmdline, "root=/dev/sda");
    let c = convert_template(&os("KERNEL = k, ROOT = /dev/sdb2"), Path::new("")).unwrap();
    assert_eq!(c.config.boot.cmdline, "root=/dev/sdb2");
    let c = convert_template(
        &os("KERNEL = k, KERNEL_CMD = \"root=/dev/vdb quiet\", ROOT = vda"),
        Path::new(""),
    )
    .unwrap();
    assert_eq!(c.config.boot.cmdline, "root=/dev/vdb quiet");
    assert!(warning(&c, "OS/ROOT")
        .message
        .contains("already has a root="));
    // An empty INITRD is no initrd (OpenNebula writes empty attributes).
    let c = convert_template(&os("KERNEL = k, INITRD = \"\""), Path::new("")).unwrap();
    assert_eq!(c.config.boot.initrd, None);
    assert!(c.warnings.is_empty());
    let c = convert_template(&os("KERNEL = k, ARCH = X86_64"), Path::new("")).unwrap();
    assert!(c.warnings.is_empty());
}

#[test]
fn os_errors_and_warnings() {
    let (l, a, m) = invalid(&os("KERNEL = k,\n ARCH = aarch64"));
    assert_eq!((l, a.as_str()), (4, "OS/ARCH"));
    assert!(m.contains("x86_64 guests only"), "{m}");

    let e = fails("NAME = t\nMEMORY = 64");
    assert!(matches!(&e, TemplateError::Missing { attribute, .. } if attribute == "OS/KERNEL"));

    let (l, a, m) = invalid(&os("BOOT = disk0"));
    assert_eq!((l, a.as_str()), (3, "OS/KERNEL"));
    assert!(m.contains("BOOT = \"disk0\""), "{m}");
    assert!(m.contains("not supported yet"), "{m}");
    let (_, _, m) = invalid(&os("KERNEL_DS = \"$FILE[IMAGE_ID=3]\""));
    assert!(m.contains("KERNEL_DS"), "{m}");

    let c = convert_template(&os("KERNEL = k, BOOT = \"disk0,nic0\""), Path::new("")).unwrap();
    assert!(warning(&c, "OS/BOOT")
        .message
        .contains("boots OS/KERNEL directly"));

    let c = convert_template(
        &os("KERNEL = k, MACHINE = q35, FIRMWARE = UEFI"),
        Path::new(""),
    )
    .unwrap();
    let w = warning(&c, "OS");
    assert!(w.message.ends_with("MACHINE, FIRMWARE"), "{w}");

    let (l, a, m) = invalid("NAME = t\nMEMORY = 64\nOS = \"k\"");
    assert_eq!((l, a.as_str()), (3, "OS"));
    assert!(m.contains("must be a vector"), "{m}");
    let (l, a, m) = invalid(&os("KERNEL = k, KERNEL = j"));
    assert_eq!((l, a.as_str()), (3, "OS/KERNEL"));
    assert!(m.contains("given twice"), "{m}");
    let (l, a, _) = invalid(&format!("{BASE}OS = [ KERNEL = j ]"));
    assert_eq!((l, a.as_str()), (4, "OS"));
}

#[test]
fn features() {
    let c = conv("FEATURES = [ ACPI = yes, PAE = YES, APIC = Yes ]");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = conv("FEATURES = [ ACPI = no,\n PAE = no,\n APIC = NO, LOCALTIME = yes ]");
    for (attr, line) in [
        ("FEATURES/ACPI", 4),
        ("FEATURES/PAE", 5),
        ("FEATURES/APIC", 6),
    ] {
        let w = warning(&c, attr);
        assert_eq!(w.pos.line, line);
        assert!(w.message.contains("cannot be honoured"), "{w}");
    }
    assert!(warning(&c, "FEATURES").message.contains("LOCALTIME"));
    let (l, a, m) = invalid(&format!("{BASE}FEATURES = [ ACPI = maybe ]"));
    assert_eq!((l, a.as_str()), (4, "FEATURES/ACPI"));
    assert!(m.contains("not YES or NO"), "{m}");
}

#[test]
fn unsupported_attributes_are_each_a_warning() {
    let c = conv(
        "CONTEXT = [ NETWORK = YES ]\nGRAPHICS = [ TYPE = VNC ]\nINPUT = [ TYPE = tablet ]\n\
         SCHED_REQUIREMENTS = \"ID > 1\"\nUSER_INPUTS = [ X = \"M|text|x\" ]\nFOO = bar\n\
         RAW = [ TYPE = kvm, DATA = \"<devices/>\" ]\nFOO = baz",
    );
    let got: Vec<(usize, &str)> = c
        .warnings
        .iter()
        .map(|w| (w.pos.line, w.attribute.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (4, "CONTEXT"),
            (5, "GRAPHICS"),
            (6, "INPUT"),
            (7, "SCHED_REQUIREMENTS"),
            (8, "USER_INPUTS"),
            (9, "FOO"),
            (10, "RAW[0]"),
            (11, "FOO"),
        ]
    );
    assert_eq!(
        c.warnings[0].to_string(),
        "line 4: CONTEXT: contextualization is not supported yet (no context CD-ROM is built); ignored"
    );
    assert!(c.warnings[6].message.contains("TYPE = \"kvm\""));
}

#[test]
fn raw_oxvm_data_is_merged_into_the_vm_file() {
    let c = conv(
        r#"RAW = [ TYPE = "OXVM", DATA = "{ \"on_reboot\": \"exit\", \"serial\": { \"mode\": \"off\" } }" ]"#,
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.config.on_reboot, OnReboot::Exit);
    assert_eq!(c.config.serial.mode, SerialMode::Off);
    // Objects merge key by key: the kernel from OS stays.
    let c = conv(r#"RAW = [ TYPE = oxvm, DATA = "{\"boot\": {\"entry\": \"pvh\"}}" ]"#);
    assert_eq!(c.config.boot.entry, crate::BootEntry::Pvh);
    assert_eq!(c.config.boot.kernel, Some(PathBuf::from("/vms/k")));
}

#[test]
fn raw_errors() {
    let (l, a, m) = invalid(&format!("{BASE}RAW = [ TYPE = oxvm, DATA = \"{{ nope\" ]"));
    assert_eq!((l, a.as_str()), (4, "RAW[0]/DATA"));
    assert!(m.contains("not valid JSON"), "{m}");
    let (_, a, m) = invalid(&format!("{BASE}RAW = [ TYPE = oxvm, DATA = \"[1]\" ]"));
    assert_eq!(a, "RAW[0]/DATA");
    assert!(m.contains("JSON object"), "{m}");
    let (l, a, m) = invalid(&format!(
        "{BASE}RAW = [ TYPE = kvm ]\nRAW = [ TYPE = oxvm,\n DATA = {} ]",
        r#""{\"on_rebot\": 1}""#
    ));
    assert_eq!((l, a.as_str()), (6, "RAW[1]/DATA"));
    assert!(m.contains("on_rebot"), "{m}");
    let (l, a, _) = invalid(&format!("{BASE}\nRAW = [ TYPE = oxvm ]"));
    assert_eq!((l, a.as_str()), (5, "RAW[0]/DATA"));
    // A value RAW sets that validate() refuses is blamed on RAW.
    let (l, a, m) = invalid(&format!(
        "{BASE}RAW = [ TYPE = oxvm, DATA = {} ]",
        r#""{\"serial\": {\"mode\": \"file\"}}""#
    ));
    assert_eq!((l, a.as_str()), (4, "RAW[0]/DATA"));
    assert!(m.contains("required when serial.mode"), "{m}");
    let (l, a, m) = invalid(&format!(
        "{BASE}\nRAW = [ TYPE = oxvm, DATA = {} ]",
        r#""{\"name\": \"a b\"}""#
    ));
    assert_eq!((l, a.as_str()), (5, "RAW[0]/DATA"));
    assert!(m.contains("not allowed"), "{m}");
}

#[test]
fn warnings_come_in_file_order() {
    let c = conv("GRAPHICS = [ TYPE = VNC ]\nFEATURES = [ ACPI = no ]\nCONTEXT = [ A = 1 ]");
    let lines: Vec<usize> = c.warnings.iter().map(|w| w.pos.line).collect();
    assert_eq!(lines, [4, 5, 6]);
}
