//! NIC vectors → `nics`.

use serde_json::json;

use super::ast::{Pos, Template};
use super::map::Out;
use super::values::{Field, Members};
use super::TemplateError;
use crate::{parse_mac, NicConfig, NicModel};

/// Linux interface names hold 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// `VmConfig::validate`'s queue-pair limit; VIRTIO_QUEUES = auto is clamped to it.
const MAX_QUEUES: u64 = 16;

pub(super) fn nics(
    t: &Template,
    vm_name: &str,
    vcpus: u32,
    out: &mut Out,
) -> Result<Vec<NicConfig>, TemplateError> {
    let mut nics: Vec<NicConfig> = Vec::new();
    let mut seen: Vec<Pos> = Vec::new();
    for (i, attr) in t.all("NIC").enumerate() {
        let mut m = Members::new(attr, format!("NIC[{i}]"))?;
        let label = m.label.clone();
        let id = match m.get("NIC_ID") {
            Some(f) => f.u64()?.to_string(),
            None => i.to_string(),
        };
        out.source(format!("nics[{i}].id"), attr.pos, &label);
        let tap = match m.get("TARGET") {
            Some(f) => {
                out.source(format!("nics[{i}].tap"), f.pos(), &f.attribute);
                ifname(&f)?.to_string()
            }
            None => default_tap(vm_name, &id),
        };
        for (j, o) in nics.iter().enumerate() {
            let what = if o.id == id {
                format!("NIC id {id}")
            } else if o.tap == tap {
                format!("tap {tap}")
            } else {
                continue;
            };
            return Err(TemplateError::invalid(
                attr.pos,
                &label,
                format!("{what} is already used by the NIC at line {}", seen[j].line),
            ));
        }
        let mut n: NicConfig = serde_json::from_value(json!({ "id": id, "tap": tap }))
            .map_err(|e| TemplateError::invalid(attr.pos, &label, e.to_string()))?;
        if let Some(f) = m.get("BRIDGE") {
            n.bridge = Some(ifname(&f)?.to_string());
        }
        if let Some(f) = m.get("MAC") {
            match parse_mac(f.text()) {
                Some(mac) if mac[0] & 1 == 0 => n.mac = Some(f.text().to_string()),
                Some(_) => return Err(f.error("is a multicast address")),
                None => {
                    return Err(f.error(format!(
                        "{:?} is not of the form xx:xx:xx:xx:xx:xx",
                        f.value.text
                    )))
                }
            }
        }
        if let Some(f) = m.get("MODEL") {
            n.model = f.choice(&[("virtio", NicModel::Virtio)])?;
        }
        if let Some(f) = m.get("VIRTIO_QUEUES") {
            n.queues = queues(&f, vcpus)?;
        }
        m.warn_unused(&mut out.warnings);
        seen.push(attr.pos);
        nics.push(n);
    }
    Ok(nics)
}

/// A host interface name as Linux accepts it (`dev_valid_name`).
fn ifname<'a>(f: &Field<'a>) -> Result<&'a str, TemplateError> {
    let s = f.text();
    if s.len() > IFNAME_MAX
        || s == "."
        || s == ".."
        || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(f.error(format!(
            "{s:?} is not a Linux interface name (1-{IFNAME_MAX} bytes, no '/', ':' or blanks)"
        )));
    }
    Ok(s)
}

/// The tap name when TARGET is absent: `<vm name>-<nic id>`, the name shortened so the
/// id survives (two NICs of one VM must not collapse onto one tap). OpenNebula itself
/// always sets TARGET (`one-<vmid>-<nicid>`), so this is for hand-written templates.
fn default_tap(vm_name: &str, id: &str) -> String {
    let suffix = format!("-{id}");
    let keep = IFNAME_MAX.saturating_sub(suffix.len());
    let name: String = vm_name.chars().take(keep).collect();
    let mut tap = name.trim_end_matches('-').to_string();
    tap.push_str(&suffix);
    // Only a NIC id longer than 14 digits could still overflow; cut it then.
    tap.chars().take(IFNAME_MAX).collect()
}

/// VIRTIO_QUEUES: a count, or `auto` = one pair per vCPU (as OpenNebula's KVM driver).
fn queues(f: &Field, vcpus: u32) -> Result<u16, TemplateError> {
    let n = if f.text().eq_ignore_ascii_case("auto") {
        u64::from(vcpus).clamp(1, MAX_QUEUES)
    } else {
        f.u64()?
    };
    if !(1..=MAX_QUEUES).contains(&n) {
        return Err(f.error(format!("must be 1 to {MAX_QUEUES} (or auto)")));
    }
    // In range, so the conversion cannot fail.
    Ok(u16::try_from(n).unwrap_or(1))
}
