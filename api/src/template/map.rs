//! Template → `VmConfig`: the top-level attributes (NAME, MEMORY, VCPU, CPU, unknown
//! attributes) and the assembly of the final config. OS/FEATURES/RAW, DISK and NIC
//! have their own files.

use serde_json::json;

use super::ast::{Pos, Template};
use super::values::Field;
use super::{map_disk, map_nic, map_os, Converted, TemplateError, TemplateExtras, Warning};
use crate::{ConfigError, VmConfig};

/// `VmConfig::validate`'s name limit (kept in sync by the tests: a name this long
/// converts, and passes validation).
pub(super) const NAME_MAX: usize = 64;

/// Attributes that may appear once, and the repeatable ones this mapping reads.
const ONCE: &[&str] = &["NAME", "MEMORY", "VCPU", "CPU", "OS", "FEATURES"];
const MANY: &[&str] = &["DISK", "NIC", "RAW"];

/// State shared by the mapping steps.
#[derive(Default)]
pub(super) struct Out {
    pub warnings: Vec<Warning>,
    pub extras: TemplateExtras,
    /// Which attribute produced which VM-file field, so a failed `validate()` can still
    /// be reported with a line and an attribute name.
    provenance: Vec<(String, Pos, String)>,
    /// The last RAW DATA merged: the only source of fields serde can refuse.
    raw: Option<(Pos, String)>,
}

impl Out {
    pub fn source(&mut self, field: impl Into<String>, pos: Pos, attribute: impl Into<String>) {
        self.provenance.push((field.into(), pos, attribute.into()));
    }

    pub fn set_raw(&mut self, pos: Pos, attribute: &str) {
        self.raw = Some((pos, attribute.to_string()));
    }

    /// Translate a validation error on `field` (`disks[0].serial`) into the template
    /// attribute it came from; the longest recorded prefix wins, and among equals the
    /// last recorded (RAW DATA, merged last, overrides what it replaced).
    fn locate(&self, e: ConfigError) -> TemplateError {
        let ConfigError::Invalid { field, reason } = &e else {
            return TemplateError::Config(e);
        };
        let hit = self
            .provenance
            .iter()
            .filter(|(f, _, _)| {
                field == f
                    || field
                        .strip_prefix(f.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|(f, _, _)| f.len());
        match hit {
            Some((_, pos, attribute)) => TemplateError::invalid(*pos, attribute, reason.clone()),
            None => TemplateError::Config(e),
        }
    }
}

/// Map a parsed template. Paths are left as written (the caller resolves them).
pub(super) fn map(t: &Template) -> Result<Converted, TemplateError> {
    let mut out = Out::default();
    check_top_level(t, &mut out)?;

    let name = name(t, &mut out)?;
    let memory = match t.all("MEMORY").next() {
        Some(a) => {
            let f = Field::single(a)?;
            out.source("memory_mib", f.pos(), "MEMORY");
            f.u64()?
        }
        None => return Err(TemplateError::missing("MEMORY", "the guest RAM in MiB")),
    };
    let vcpus = match t.all("VCPU").next() {
        Some(a) => {
            let f = Field::single(a)?;
            out.source("vcpus", f.pos(), "VCPU");
            u32::try_from(f.u64()?).map_err(|_| f.error("too large"))?
        }
        None => 1,
    };
    if let Some(a) = t.all("CPU").next() {
        cpu(&Field::single(a)?, &mut out);
    }
    let boot = map_os::boot(t, &mut out)?;
    map_os::features(t, &mut out)?;
    let disks = map_disk::disks(t, &mut out)?;
    let nics = map_nic::nics(t, &name, vcpus, &mut out)?;

    // Built through serde so every VM-file field this mapping does not set gets the
    // same default as in a JSON file, including fields added later. (`json!` cannot
    // fail here: serializing only fails for non-UTF-8 paths, and these came from text.)
    let mut doc = json!({
        "name": name,
        "vcpus": vcpus,
        "memory_mib": memory,
        "boot": boot,
        "disks": disks,
        "nics": nics,
    });
    // CPU is OpenNebula's CPU share (1.0 = one full share): the cgroup CPU weight, as
    // its KVM driver writes cpu.shares = CPU x 1024.
    if let Some(cpu) = out.extras.cpu {
        doc["resources"] = json!({ "cpu_weight": cpu });
    }
    map_os::apply_raw(t, &mut doc, &mut out)?;
    let config: VmConfig = serde_json::from_value(doc).map_err(|e| {
        let (pos, attribute) = out.raw.clone().unwrap_or_default();
        TemplateError::invalid(pos, attribute, e.to_string())
    })?;
    config.validate().map_err(|e| out.locate(e))?;
    // Reported in file order, whichever step found them.
    out.warnings.sort_by_key(|w| w.pos);
    Ok(Converted {
        config,
        extras: out.extras,
        warnings: out.warnings,
    })
}

/// Refuse repeated once-only attributes; warn about every attribute not mapped.
fn check_top_level(t: &Template, out: &mut Out) -> Result<(), TemplateError> {
    for (i, a) in t.attributes.iter().enumerate() {
        if ONCE.contains(&a.name.as_str()) {
            if let Some(first) = t.attributes[..i].iter().find(|f| f.name == a.name) {
                return Err(TemplateError::invalid(
                    a.pos,
                    &a.name,
                    format!("given twice (first at line {})", first.pos.line),
                ));
            }
        } else if !MANY.contains(&a.name.as_str()) {
            out.warnings
                .push(Warning::new(a.pos, &a.name, unsupported_reason(&a.name)));
        }
    }
    Ok(())
}

/// Why an attribute is ignored: a specific reason where one helps the reader.
fn unsupported_reason(name: &str) -> &'static str {
    match name {
        "CONTEXT" => "contextualization is not supported yet (no context CD-ROM is built); ignored",
        "GRAPHICS" | "VIDEO" => "no display device: the console is the serial port COM1; ignored",
        "INPUT" => "no USB or pointer devices; ignored",
        "NIC_ALIAS" | "PCI" => "not supported yet; ignored",
        n if n.starts_with("SCHED_") => {
            "scheduler attribute, meaningless to the hypervisor; ignored"
        }
        "DESCRIPTION" | "LOGO" | "LABELS" | "USER_INPUTS" | "INPUTS_ORDER" | "HYPERVISOR"
        | "MEMORY_COST" | "CPU_COST" | "DISK_COST" => "OpenNebula front-end metadata; ignored",
        _ => "not supported yet; ignored",
    }
}

/// NAME, made acceptable as a VM name: OpenNebula allows spaces and any Unicode, oxvm
/// names become thread and file names, so each run of other characters becomes `-`.
fn name(t: &Template, out: &mut Out) -> Result<String, TemplateError> {
    let Some(a) = t.all("NAME").next() else {
        return Err(TemplateError::missing("NAME", "the VM's name"));
    };
    let f = Field::single(a)?;
    out.source("name", f.pos(), "NAME");
    let raw = f.non_empty()?;
    let mut name = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    // ASCII only from here, so byte truncation cannot split a character.
    name.truncate(NAME_MAX);
    if name != raw {
        out.warnings.push(f.warning(format!(
            "{raw:?} is not a valid oxvm name (1-{NAME_MAX} of A-Z a-z 0-9 - _ .); using {name:?}"
        )));
    }
    Ok(name)
}

/// CPU: OpenNebula's share of a physical CPU (0.5 = half a core's weight). oxvm has no
/// weight setting in `VmConfig` yet, so the value is handed back in the extras.
fn cpu(f: &Field, out: &mut Out) {
    match f.text().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => out.extras.cpu = Some(v),
        _ => out.warnings.push(f.warning(format!(
            "{:?} is not a positive number; ignored",
            f.value.text
        ))),
    }
}
