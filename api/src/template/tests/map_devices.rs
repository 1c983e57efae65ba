//! Mapping of DISK and NIC vectors.

use std::path::PathBuf;

use super::map_top::{conv, invalid, warning, BASE};
use crate::template::map_disk::iotune_names;
use crate::{CacheMode, DiscardMode, DiskBus, DiskConfig, DiskFormat, IoMode, NicConfig};

fn disk(members: &str) -> DiskConfig {
    let c = conv(&format!("DISK = [ SOURCE = d.img, {members} ]"));
    c.config.disks[0].clone()
}

fn nic(members: &str) -> NicConfig {
    conv(&format!("NIC = [ {members} ]")).config.nics[0].clone()
}

#[test]
fn disk_defaults_ids_and_relative_source() {
    let c = conv("DISK = [ SOURCE = a.img ]\nDISK = [ SOURCE = /dev/vg/b ]");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let d = &c.config.disks;
    assert_eq!((d[0].id.as_str(), d[1].id.as_str()), ("0", "1"));
    assert_eq!(d[0].path, PathBuf::from("/vms/a.img"));
    assert_eq!(d[1].path, PathBuf::from("/dev/vg/b"));
    assert_eq!(d[0].format, None);
    assert_eq!(d[0].bus, DiskBus::Virtio);
    assert!(!d[0].readonly);
    assert_eq!(d[0].cache, CacheMode::Writeback);
    assert_eq!(d[0].io, IoMode::Threads);
    assert_eq!(d[0].discard, DiscardMode::Ignore);
    assert_eq!((&d[0].serial, &d[0].iotune), (&None, &None));
    let c = conv("DISK = [ SOURCE = a, DISK_ID = 3 ]\nDISK = [ SOURCE = b ]");
    assert_eq!(c.config.disks[0].id, "3");
    assert_eq!(c.config.disks[1].id, "1");
}

#[test]
fn disk_every_mapped_attribute() {
    let d = disk(
        "TYPE = BLOCK, DRIVER = QCOW2, CACHE = none, IO = native, DISCARD = unmap, \
         DEV_PREFIX = sd, TARGET = sdb, READONLY = yes, SERIAL = \"ROOT0\"",
    );
    assert_eq!(d.format, Some(DiskFormat::Qcow2));
    assert_eq!(d.cache, CacheMode::None);
    assert_eq!(d.io, IoMode::Native);
    assert_eq!(d.discard, DiscardMode::Unmap);
    assert_eq!(d.bus, DiskBus::Scsi);
    assert!(d.readonly);
    assert_eq!(d.serial.as_deref(), Some("ROOT0"));
    assert_eq!(disk("DRIVER = raw").format, Some(DiskFormat::Raw));
    assert_eq!(disk("TYPE = file").format, None);
    assert!(!disk("READONLY = NO").readonly);
    assert_eq!(disk("IO = threads").io, IoMode::Threads);
    assert_eq!(disk("DISCARD = ignore").discard, DiscardMode::Ignore);
    assert_eq!(disk("DEV_PREFIX = vd").bus, DiskBus::Virtio);
}

#[test]
fn cache_modes() {
    for (v, mode, warns) in [
        ("default", CacheMode::Writeback, false),
        ("none", CacheMode::None, false),
        ("writeback", CacheMode::Writeback, false),
        ("WRITETHROUGH", CacheMode::Writethrough, false),
        ("directsync", CacheMode::Writethrough, true),
        ("unsafe", CacheMode::Writeback, true),
    ] {
        let c = conv(&format!("DISK = [ SOURCE = d, CACHE = {v} ]"));
        assert_eq!(c.config.disks[0].cache, mode, "{v}");
        assert_eq!(
            c.warnings.len(),
            usize::from(warns),
            "{v}: {:?}",
            c.warnings
        );
        if warns {
            assert_eq!(c.warnings[0].attribute, "DISK[0]/CACHE");
        }
    }
    let c = conv("DISK = [ SOURCE = d, IO = io_uring ]");
    assert_eq!(c.config.disks[0].io, IoMode::Native);
    warning(&c, "DISK[0]/IO");
}

#[test]
fn cdrom_is_read_only_raw() {
    let c = conv("DISK = [ SOURCE = ctx.iso, TYPE = CDROM ]");
    let d = &c.config.disks[0];
    assert!(d.readonly);
    assert_eq!(d.format, Some(DiskFormat::Raw));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = conv("DISK = [ SOURCE = ctx.iso, TYPE = cdrom, READONLY = no, DRIVER = qcow2 ]");
    assert!(c.config.disks[0].readonly);
    assert_eq!(c.config.disks[0].format, Some(DiskFormat::Raw));
    warning(&c, "DISK[0]/READONLY");
    warning(&c, "DISK[0]/DRIVER");
}

#[test]
fn bus_from_dev_prefix_or_target() {
    let c = conv("DISK = [ SOURCE = d, TARGET = sdc ]");
    assert_eq!(c.config.disks[0].bus, DiskBus::Scsi);
    assert_eq!(
        c.extras.disk_targets,
        [("0".to_string(), "sdc".to_string())]
    );
    assert!(c.warnings.is_empty());
    assert_eq!(disk("TARGET = vdb").bus, DiskBus::Virtio);

    // IDE does not exist: virtio, with a warning on whichever attribute said hd.
    let c = conv("DISK = [ SOURCE = d, DEV_PREFIX = hd ]");
    assert_eq!(c.config.disks[0].bus, DiskBus::Virtio);
    assert!(warning(&c, "DISK[0]/DEV_PREFIX").message.contains("IDE"));
    let c = conv("DISK = [ SOURCE = d, TARGET = hda ]");
    assert!(warning(&c, "DISK[0]/TARGET").message.contains("IDE"));
    let c = conv("DISK = [ SOURCE = d, TARGET = xvda ]");
    assert_eq!(c.config.disks[0].bus, DiskBus::Virtio);
    warning(&c, "DISK[0]/TARGET");

    // TARGET disagreeing with DEV_PREFIX: DEV_PREFIX wins, TARGET is flagged.
    let c = conv("DISK = [ SOURCE = d, DEV_PREFIX = vd, TARGET = sdb ]");
    assert_eq!(c.config.disks[0].bus, DiskBus::Virtio);
    let w = warning(&c, "DISK[0]/TARGET");
    assert!(w.message.contains("does not match DEV_PREFIX"), "{w}");
    let c = conv("DISK = [ SOURCE = d, DEV_PREFIX = hd, TARGET = hdc ]");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);

    let (l, a, m) = invalid(&format!("{BASE}DISK = [ SOURCE = d, DEV_PREFIX = xvd ]"));
    assert_eq!((l, a.as_str()), (4, "DISK[0]/DEV_PREFIX"));
    assert!(m.contains("expected vd, sd or hd"), "{m}");
}

#[test]
fn every_iotune_attribute() {
    let names = iotune_names();
    assert_eq!(names.len(), 19);
    let members: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n} = {}", 1000 + i))
        .collect();
    let d = disk(&members.join(",\n"));
    let json = serde_json::to_value(d.iotune.expect("iotune")).unwrap();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(json[n.to_ascii_lowercase()], 1000 + i, "{n}");
    }
    let d = disk("READ_IOPS_SEC_MAX_LENGTH = 5");
    assert_eq!(d.iotune.unwrap().read_iops_sec_max_length, 5);
    let (l, a, m) = invalid(&format!(
        "{BASE}DISK = [ SOURCE = d,\n TOTAL_BYTES_SEC = 10M ]"
    ));
    assert_eq!((l, a.as_str()), (5, "DISK[0]/TOTAL_BYTES_SEC"));
    assert!(m.contains("not a whole number"), "{m}");
}

#[test]
fn disk_errors_name_the_disk_and_line() {
    let (l, a, m) = invalid(&format!(
        "{BASE}DISK = [ SOURCE = a ]\nDISK = [ IMAGE = \"debian\" ]"
    ));
    assert_eq!((l, a.as_str()), (5, "DISK[1]/SOURCE"));
    assert!(m.contains("missing") && m.contains("IMAGE"), "{m}");
    for (member, attr, text) in [
        (
            "DRIVER = vmdk",
            "DISK[0]/DRIVER",
            "expected one of: raw, qcow2",
        ),
        ("CACHE = sometimes", "DISK[0]/CACHE", "directsync"),
        (
            "TYPE = RBD",
            "DISK[0]/TYPE",
            "expected one of: file, block, cdrom",
        ),
        ("IO = magic", "DISK[0]/IO", "threads"),
        ("DISCARD = on", "DISK[0]/DISCARD", "ignore, unmap"),
        ("READONLY = true", "DISK[0]/READONLY", "not YES or NO"),
        ("DISK_ID = x", "DISK[0]/DISK_ID", "whole number"),
        (
            "SERIAL = \"0123456789abcdefghijK\"",
            "DISK[0]/SERIAL",
            "20 ASCII",
        ),
        ("CACHE = none, CACHE = none", "DISK[0]/CACHE", "given twice"),
    ] {
        let (l, a, m) = invalid(&format!("{BASE}DISK = [ SOURCE = d, {member} ]"));
        assert_eq!((l, a.as_str()), (4, attr), "{member}");
        assert!(m.contains(text), "{member}: {m}");
    }
    let (l, a, m) = invalid(&format!(
        "{BASE}DISK = [ SOURCE = a, DISK_ID = 1 ]\nDISK = [ SOURCE = b ]"
    ));
    assert_eq!((l, a.as_str()), (5, "DISK[1]"));
    assert!(m.contains("already used by the DISK at line 4"), "{m}");
    let (l, a, m) = invalid(&format!("{BASE}DISK = \"a.img\""));
    assert_eq!((l, a.as_str()), (4, "DISK[0]"));
    assert!(m.contains("vector"), "{m}");
}

#[test]
fn unsupported_disk_members_are_listed() {
    let c = conv("DISK = [ SOURCE = d, IMAGE_ID = 7, DATASTORE = default, SIZE = 1024 ]");
    let w = warning(&c, "DISK[0]");
    assert_eq!(w.pos.line, 4);
    assert!(w.message.ends_with("IMAGE_ID, DATASTORE, SIZE"), "{w}");
}

#[test]
fn nic_every_mapped_attribute() {
    let c = conv(
        "NIC = [ NIC_ID = 3, TARGET = one-42-3, BRIDGE = onebr0, MAC = \"02:00:0a:00:00:05\", \
         MODEL = VirtIO, VIRTIO_QUEUES = 4 ]",
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let n = &c.config.nics[0];
    assert_eq!(n.id, "3");
    assert_eq!(n.tap, "one-42-3");
    assert_eq!(n.bridge.as_deref(), Some("onebr0"));
    assert_eq!(n.mac.as_deref(), Some("02:00:0a:00:00:05"));
    assert_eq!(n.queues, 4);
}

#[test]
fn nic_defaults_and_tap_names() {
    let c = conv("NIC = [ BRIDGE = br0 ]\nNIC = [ BRIDGE = br1 ]");
    let n = &c.config.nics;
    assert_eq!((n[0].id.as_str(), n[0].tap.as_str()), ("0", "t-0"));
    assert_eq!((n[1].id.as_str(), n[1].tap.as_str()), ("1", "t-1"));
    assert_eq!((n[0].mac.as_ref(), n[0].queues), (None, 1));
    // A long VM name is shortened so the NIC id survives in the 15-byte tap name.
    let text = "NAME = a-very-long-vm-name\nMEMORY = 64\nOS = [ KERNEL = k ]\n\
                NIC = [ NIC_ID = 12 ]\nNIC = [ NIC_ID = 13 ]";
    let (cfg, _) = crate::parse_template(text, std::path::Path::new("")).unwrap();
    assert_eq!(cfg.nics[0].tap, "a-very-long-12");
    assert_eq!(cfg.nics[1].tap, "a-very-long-13");
}

#[test]
fn virtio_queues_auto_follows_vcpus() {
    let c = conv("VCPU = 3\nNIC = [ VIRTIO_QUEUES = auto ]");
    assert_eq!(c.config.nics[0].queues, 3);
    let c = conv("VCPU = 40\nNIC = [ VIRTIO_QUEUES = AUTO ]");
    assert_eq!(c.config.nics[0].queues, 16);
    for bad in ["0", "17", "two"] {
        let (l, a, _) = invalid(&format!("{BASE}NIC = [ VIRTIO_QUEUES = {bad} ]"));
        assert_eq!((l, a.as_str()), (4, "NIC[0]/VIRTIO_QUEUES"), "{bad}");
    }
}

#[test]
fn nic_errors_name_the_nic_and_line() {
    for (member, attr, text) in [
        (
            "MODEL = e1000",
            "NIC[0]/MODEL",
            "\"e1000\" is not supported",
        ),
        (
            "MAC = \"02:00:0a:00:05\"",
            "NIC[0]/MAC",
            "xx:xx:xx:xx:xx:xx",
        ),
        ("MAC = \"03:00:0a:00:00:05\"", "NIC[0]/MAC", "multicast"),
        (
            "TARGET = a-tap-name-too-long",
            "NIC[0]/TARGET",
            "interface name",
        ),
        ("TARGET = \"a/b\"", "NIC[0]/TARGET", "interface name"),
        ("BRIDGE = \"br 0\"", "NIC[0]/BRIDGE", "interface name"),
        ("NIC_ID = -1", "NIC[0]/NIC_ID", "whole number"),
    ] {
        let (l, a, m) = invalid(&format!("{BASE}NIC = [ {member} ]"));
        assert_eq!((l, a.as_str()), (4, attr), "{member}");
        assert!(m.contains(text), "{member}: {m}");
    }
    let (l, a, m) = invalid(&format!("{BASE}NIC = [ TARGET = x ]\nNIC = [ TARGET = x ]"));
    assert_eq!((l, a.as_str()), (5, "NIC[1]"));
    assert!(
        m.contains("tap x is already used by the NIC at line 4"),
        "{m}"
    );
    let (_, _, m) = invalid(&format!("{BASE}NIC = [ NIC_ID = 0 ]\nNIC = [ NIC_ID = 0 ]"));
    assert!(m.contains("NIC id 0"), "{m}");
}

#[test]
fn unsupported_nic_members_are_listed() {
    let c = conv("NIC = [ NETWORK = public, IP = 10.0.0.5, MODEL = virtio ]");
    assert!(warning(&c, "NIC[0]").message.ends_with("NETWORK, IP"));
    assert_eq!(nic("MODEL = virtio").model, crate::NicModel::Virtio);
}
