//! OS (what to boot), FEATURES and RAW.

use serde_json::{json, Value as Json};

use super::ast::Template;
use super::map::Out;
use super::values::Members;
use super::{TemplateError, Warning};

/// OS → the VM file's `boot` object. Only direct kernel boot exists, so KERNEL is
/// required.
pub(super) fn boot(t: &Template, out: &mut Out) -> Result<Json, TemplateError> {
    let Some(attr) = t.all("OS").next() else {
        return Err(TemplateError::missing(
            "OS/KERNEL",
            "oxvm boots a Linux kernel directly: give \
             OS = [ KERNEL = \"vmlinux\", KERNEL_CMD = \"console=ttyS0\" ]",
        ));
    };
    let mut os = Members::new(attr, "OS".into())?;
    if let Some(arch) = os.get("ARCH") {
        if !arch.text().eq_ignore_ascii_case("x86_64") {
            return Err(arch.error(format!(
                "{:?} is not supported: oxvm runs x86_64 guests only",
                arch.value.text
            )));
        }
    }
    let boot_order = os.get("BOOT");
    let Some(kernel) = os.get("KERNEL") else {
        let mut msg =
            String::from("missing: oxvm boots a Linux kernel directly (give its path as KERNEL)");
        if let Some(b) = &boot_order {
            msg += &format!(
                "; BOOT = {:?} (booting from a disk through firmware) is not supported yet",
                b.text()
            );
        }
        if os.has("KERNEL_DS") {
            msg += "; KERNEL_DS names a Files-datastore image, which only OpenNebula can look up";
        }
        return Err(TemplateError::invalid(attr.pos, "OS/KERNEL", msg));
    };
    out.source("boot.kernel", kernel.pos(), &kernel.attribute);
    if let Some(b) = boot_order {
        out.warnings.push(
            b.warning("ignored: the VM boots OS/KERNEL directly, there is no firmware boot order"),
        );
    }
    let initrd = os.get("INITRD").map(|f| f.text().to_string());
    let mut cmdline = String::new();
    if let Some(c) = os.get("KERNEL_CMD") {
        out.source("boot.cmdline", c.pos(), &c.attribute);
        cmdline = c.text().to_string();
    }
    if let Some(root) = os.get("ROOT") {
        if cmdline.split_whitespace().any(|w| w.starts_with("root=")) {
            out.warnings
                .push(root.warning("ignored: KERNEL_CMD already has a root= parameter"));
        } else {
            let dev = root.text();
            let dev = if dev.starts_with('/') {
                dev.to_string()
            } else {
                format!("/dev/{dev}")
            };
            // Put first, as OpenNebula's KVM driver does: words after ` -- ` on a kernel
            // command line go to init, so appending could hide root= from the kernel.
            cmdline = if cmdline.is_empty() {
                format!("root={dev}")
            } else {
                format!("root={dev} {cmdline}")
            };
        }
    }
    os.warn_unused(&mut out.warnings);
    Ok(json!({ "kernel": kernel.text(), "initrd": initrd, "cmdline": cmdline }))
}

/// FEATURES: ACPI, PAE and APIC are always on in oxvm; asking for them off is the one
/// thing worth a warning. Everything else in FEATURES is listed as unsupported.
pub(super) fn features(t: &Template, out: &mut Out) -> Result<(), TemplateError> {
    let Some(attr) = t.all("FEATURES").next() else {
        return Ok(());
    };
    let mut f = Members::new(attr, "FEATURES".into())?;
    for (name, why) in [
        (
            "ACPI",
            "the VM always has ACPI tables (power-off and reset use them)",
        ),
        ("PAE", "x86-64 guests always use PAE paging"),
        ("APIC", "the VM always has local APICs and an IOAPIC"),
    ] {
        if let Some(v) = f.get(name) {
            if !v.yes_no()? {
                out.warnings
                    .push(v.warning(format!("NO cannot be honoured: {why}")));
            }
        }
    }
    f.warn_unused(&mut out.warnings);
    Ok(())
}

/// RAW = [ TYPE = "oxvm", DATA = "<JSON object>" ]: OpenNebula's way to pass
/// hypervisor-specific settings (for KVM, DATA is libvirt XML). For oxvm DATA is merged
/// into the VM file: objects merge key by key, anything else (arrays included) is
/// replaced. This reaches settings OpenNebula has no attribute for, such as
/// `on_reboot` or `serial`. RAW vectors of other TYPEs are ignored with a warning.
pub(super) fn apply_raw(t: &Template, doc: &mut Json, out: &mut Out) -> Result<(), TemplateError> {
    for (i, attr) in t.all("RAW").enumerate() {
        let mut raw = Members::new(attr, format!("RAW[{i}]"))?;
        let ty = raw.get("TYPE");
        if !ty
            .as_ref()
            .is_some_and(|t| t.text().eq_ignore_ascii_case("oxvm"))
        {
            let ty = ty.map(|t| t.text().to_string()).unwrap_or_default();
            out.warnings.push(Warning::new(
                attr.pos,
                &raw.label,
                format!(
                    "TYPE = {ty:?} is for another hypervisor (oxvm reads TYPE = \"oxvm\"); ignored"
                ),
            ));
            continue;
        }
        let Some(data) = raw.get("DATA") else {
            return Err(TemplateError::invalid(
                attr.pos,
                format!("{}/DATA", raw.label),
                "missing: a JSON object merged into the VM file",
            ));
        };
        let value: Json = serde_json::from_str(data.text())
            .map_err(|e| data.error(format!("not valid JSON: {e}")))?;
        let Json::Object(fields) = &value else {
            return Err(data.error("must be a JSON object: { \"on_reboot\": \"exit\", ... }"));
        };
        for key in fields.keys() {
            out.source(key.clone(), data.pos(), &data.attribute);
        }
        out.set_raw(data.pos(), &data.attribute);
        merge(doc, value);
        raw.warn_unused(&mut out.warnings);
    }
    Ok(())
}

fn merge(into: &mut Json, from: Json) {
    match (into, from) {
        (Json::Object(a), Json::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Json::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}
