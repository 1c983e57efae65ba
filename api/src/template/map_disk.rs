//! DISK vectors → `disks`.
//!
//! Attribute names and values are those of OpenNebula's KVM driver (which passes them
//! to libvirt's `<driver>`, `<target>` and `<iotune>`), so a disk keeps its meaning.

use serde_json::json;

use super::ast::{Attribute, Pos, Template};
use super::map::Out;
use super::values::Members;
use super::TemplateError;
use crate::{CacheMode, DiscardMode, DiskBus, DiskConfig, DiskFormat, IoMode, IoTune};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Block,
    Cdrom,
}

pub(super) fn disks(t: &Template, out: &mut Out) -> Result<Vec<DiskConfig>, TemplateError> {
    let mut disks: Vec<DiskConfig> = Vec::new();
    let mut seen: Vec<Pos> = Vec::new();
    for (i, attr) in t.all("DISK").enumerate() {
        let mut m = Members::new(attr, format!("DISK[{i}]"))?;
        let d = disk(i, attr, &mut m, out)?;
        if let Some(j) = disks.iter().position(|o| o.id == d.id) {
            return Err(TemplateError::invalid(
                attr.pos,
                &m.label,
                format!(
                    "disk id {} is already used by the DISK at line {} (set DISK_ID)",
                    d.id, seen[j].line
                ),
            ));
        }
        m.warn_unused(&mut out.warnings);
        seen.push(attr.pos);
        disks.push(d);
    }
    Ok(disks)
}

fn disk(
    i: usize,
    attr: &Attribute,
    m: &mut Members,
    out: &mut Out,
) -> Result<DiskConfig, TemplateError> {
    let label = m.label.clone();
    let id = match m.get("DISK_ID") {
        Some(f) => f.u64()?.to_string(),
        None => i.to_string(),
    };
    out.source(format!("disks[{i}].id"), attr.pos, &label);
    let Some(source) = m.get("SOURCE") else {
        return Err(TemplateError::invalid(
            attr.pos,
            format!("{label}/SOURCE"),
            "missing: the path of the image file or block device (IMAGE and IMAGE_ID \
             name OpenNebula datastore images, which only OpenNebula can look up)",
        ));
    };
    out.source(format!("disks[{i}].path"), source.pos(), &source.attribute);
    let mut d: DiskConfig = serde_json::from_value(json!({ "id": id, "path": source.text() }))
        .map_err(|e| source.error(e.to_string()))?;

    let kind = match m.get("TYPE") {
        Some(f) => f.choice(&[
            ("file", Kind::File),
            ("block", Kind::Block),
            ("cdrom", Kind::Cdrom),
        ])?,
        None => Kind::File,
    };
    if let Some(f) = m.get("DRIVER") {
        d.format = Some(f.choice(&[("raw", DiskFormat::Raw), ("qcow2", DiskFormat::Qcow2)])?);
    }
    let readonly = m.get("READONLY");
    if let Some(f) = &readonly {
        d.readonly = f.yes_no()?;
    }
    if kind == Kind::Cdrom {
        // OpenNebula attaches a CDROM read-only with a raw driver whatever the other
        // attributes say; the guest sees a read-only disk (no CD-ROM device exists).
        if let Some(f) = readonly.filter(|_| !d.readonly) {
            out.warnings
                .push(f.warning("ignored: a CDROM disk is always read-only"));
        }
        if d.format == Some(DiskFormat::Qcow2) {
            if let Some(f) = m.get("DRIVER") {
                out.warnings
                    .push(f.warning("ignored: a CDROM image is always read as raw"));
            }
        }
        d.readonly = true;
        d.format = Some(DiskFormat::Raw);
    }
    host_side(&mut d, m, out)?;
    d.bus = bus(&id, m, out)?;
    if let Some(f) = m.get("SERIAL") {
        out.source(format!("disks[{i}].serial"), f.pos(), &f.attribute);
        d.serial = Some(f.text().to_string());
    }
    d.iotune = iotune(m)?;
    Ok(d)
}

/// CACHE, IO and DISCARD.
fn host_side(d: &mut DiskConfig, m: &mut Members, out: &mut Out) -> Result<(), TemplateError> {
    if let Some(f) = m.get("CACHE") {
        // `default` is libvirt's "hypervisor default", which for QEMU is writeback.
        // directsync (O_DIRECT + O_DSYNC) becomes writethrough: it keeps what the guest
        // relies on (every write is durable when it completes, no volatile cache is
        // announced) and gives up only the page-cache bypass. unsafe (flushes ignored)
        // becomes writeback: oxvm always honours flushes, which is only safer.
        let (mode, note) = f.choice(&[
            ("default", (CacheMode::Writeback, None)),
            ("none", (CacheMode::None, None)),
            ("writeback", (CacheMode::Writeback, None)),
            ("writethrough", (CacheMode::Writethrough, None)),
            (
                "directsync",
                (
                    CacheMode::Writethrough,
                    Some("mapped to writethrough: writes are synced, but through the host page cache"),
                ),
            ),
            (
                "unsafe",
                (
                    CacheMode::Writeback,
                    Some("mapped to writeback: guest flushes are still honoured"),
                ),
            ),
        ])?;
        d.cache = mode;
        if let Some(note) = note {
            out.warnings.push(f.warning(note));
        }
    }
    if let Some(f) = m.get("IO") {
        d.io = f.choice(&[
            ("threads", IoMode::Threads),
            ("native", IoMode::Native),
            ("io_uring", IoMode::Native),
        ])?;
        if f.text().eq_ignore_ascii_case("io_uring") {
            out.warnings.push(f.warning("mapped to native"));
        }
    }
    if let Some(f) = m.get("DISCARD") {
        d.discard = f.choice(&[
            ("ignore", DiscardMode::Ignore),
            ("unmap", DiscardMode::Unmap),
        ])?;
    }
    Ok(())
}

/// The bus, from DEV_PREFIX, else from TARGET's prefix, else virtio. TARGET itself is
/// only recorded: the guest names its disks (in PCI order), not the host.
fn bus(id: &str, m: &mut Members, out: &mut Out) -> Result<DiskBus, TemplateError> {
    let prefix = m.get("DEV_PREFIX");
    let target = m.get("TARGET");
    if let Some(t) = &target {
        out.extras
            .disk_targets
            .push((id.to_string(), t.text().to_string()));
    }
    let Some(from) = prefix.as_ref().or(target.as_ref()) else {
        return Ok(DiskBus::Virtio);
    };
    let lower = from.text().to_ascii_lowercase();
    let bus = if lower.starts_with("vd") {
        DiskBus::Virtio
    } else if lower.starts_with("sd") {
        DiskBus::Scsi
    } else if lower.starts_with("hd") {
        // IDE does not exist here; virtio keeps the disk usable by any Linux guest.
        out.warnings.push(from.warning(
            "IDE is not supported: the disk is attached as virtio-blk (/dev/vdX in the guest)",
        ));
        DiskBus::Virtio
    } else if prefix.is_some() {
        return Err(from.error(format!(
            "{:?} is not supported (expected vd, sd or hd)",
            from.value.text
        )));
    } else {
        out.warnings.push(from.warning(
            "unknown device prefix: the disk is attached as virtio-blk (/dev/vdX in the guest)",
        ));
        DiskBus::Virtio
    };
    if let (Some(p), Some(t)) = (&prefix, &target) {
        if !t.text().to_ascii_lowercase().starts_with(&lower) {
            out.warnings.push(t.warning(format!(
                "does not match DEV_PREFIX {:?}; the disk is on {}, and the guest names it",
                p.text(),
                match bus {
                    DiskBus::Virtio => "virtio-blk (/dev/vdX)",
                    DiskBus::Scsi => "virtio-scsi (/dev/sdX)",
                }
            )));
        }
    }
    Ok(bus)
}

/// The throttling members, named as in OpenNebula and libvirt's `<iotune>`.
fn iotune_fields(t: &mut IoTune) -> [(&'static str, &mut u64); 19] {
    [
        ("TOTAL_BYTES_SEC", &mut t.total_bytes_sec),
        ("READ_BYTES_SEC", &mut t.read_bytes_sec),
        ("WRITE_BYTES_SEC", &mut t.write_bytes_sec),
        ("TOTAL_IOPS_SEC", &mut t.total_iops_sec),
        ("READ_IOPS_SEC", &mut t.read_iops_sec),
        ("WRITE_IOPS_SEC", &mut t.write_iops_sec),
        ("TOTAL_BYTES_SEC_MAX", &mut t.total_bytes_sec_max),
        ("READ_BYTES_SEC_MAX", &mut t.read_bytes_sec_max),
        ("WRITE_BYTES_SEC_MAX", &mut t.write_bytes_sec_max),
        ("TOTAL_IOPS_SEC_MAX", &mut t.total_iops_sec_max),
        ("READ_IOPS_SEC_MAX", &mut t.read_iops_sec_max),
        ("WRITE_IOPS_SEC_MAX", &mut t.write_iops_sec_max),
        (
            "TOTAL_BYTES_SEC_MAX_LENGTH",
            &mut t.total_bytes_sec_max_length,
        ),
        (
            "READ_BYTES_SEC_MAX_LENGTH",
            &mut t.read_bytes_sec_max_length,
        ),
        (
            "WRITE_BYTES_SEC_MAX_LENGTH",
            &mut t.write_bytes_sec_max_length,
        ),
        (
            "TOTAL_IOPS_SEC_MAX_LENGTH",
            &mut t.total_iops_sec_max_length,
        ),
        ("READ_IOPS_SEC_MAX_LENGTH", &mut t.read_iops_sec_max_length),
        (
            "WRITE_IOPS_SEC_MAX_LENGTH",
            &mut t.write_iops_sec_max_length,
        ),
        ("SIZE_IOPS_SEC", &mut t.size_iops_sec),
    ]
}

fn iotune(m: &mut Members) -> Result<Option<IoTune>, TemplateError> {
    let mut tune = IoTune::default();
    let mut any = false;
    for (name, slot) in iotune_fields(&mut tune) {
        if let Some(f) = m.get(name) {
            *slot = f.u64()?;
            any = true;
        }
    }
    Ok(any.then_some(tune))
}

#[cfg(test)]
pub(super) fn iotune_names() -> Vec<&'static str> {
    iotune_fields(&mut IoTune::default())
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}
