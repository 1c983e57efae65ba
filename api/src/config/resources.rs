//! Host resource control for the VM process (`resources`): CPU weight and memory limit
//! through a cgroup `<cgroup_parent>/<name>`, and vCPU thread pinning.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Optional resource control. Without it (or with all fields unset) oxvm touches no
/// cgroup and pins nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU weight with OpenNebula's `CPU` meaning: 1.0 is one full share (cgroup v1
    /// `cpu.shares` 1024, v2 `cpu.weight` 100), 0.5 half of that. Must be > 0.
    #[serde(default)]
    pub cpu_weight: Option<f64>,
    /// Memory limit for the whole VM process (guest RAM and the VMM's own memory), in
    /// MiB: cgroup v1 `memory.limit_in_bytes`, v2 `memory.max`. At least `memory_mib`.
    #[serde(default)]
    pub memory_max_mib: Option<u64>,
    /// Host CPUs each vCPU thread may run on, one list per vCPU (index = vCPU index).
    #[serde(default)]
    pub vcpu_pinning: Option<Vec<Vec<usize>>>,
    /// Parent of the VM's cgroup, as a path from the root of the cgroup hierarchy
    /// (a leading `/` is optional): the VM's group is `<cgroup_parent>/<name>`.
    #[serde(default = "default_cgroup_parent")]
    pub cgroup_parent: String,
}

pub const DEFAULT_CGROUP_PARENT: &str = "oxvm";

fn default_cgroup_parent() -> String {
    DEFAULT_CGROUP_PARENT.to_string()
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_weight: None,
            memory_max_mib: None,
            vcpu_pinning: None,
            cgroup_parent: default_cgroup_parent(),
        }
    }
}

impl Resources {
    /// Whether the VM process needs a cgroup (pinning alone does not).
    pub fn needs_cgroup(&self) -> bool {
        self.cpu_weight.is_some() || self.memory_max_mib.is_some()
    }

    /// The VM's cgroup as an absolute path from the hierarchy root: `/<parent>/<name>`.
    pub fn cgroup_path(&self, vm_name: &str) -> String {
        let parent = self.cgroup_parent.trim_matches('/');
        if parent.is_empty() {
            format!("/{vm_name}")
        } else {
            format!("/{parent}/{vm_name}")
        }
    }

    /// The host CPUs vCPU `index` is pinned to, if pinning is configured.
    pub fn vcpu_cpus(&self, index: usize) -> Option<&[usize]> {
        self.vcpu_pinning
            .as_ref()
            .and_then(|p| p.get(index))
            .map(Vec::as_slice)
    }

    /// Checks that need no host access (whether the CPUs exist and the controllers are
    /// mounted is checked when the VM starts).
    pub(super) fn validate(&self, vcpus: u32, memory_mib: u64) -> Result<(), ConfigError> {
        if let Some(w) = self.cpu_weight {
            if !(w.is_finite() && w > 0.0) {
                return Err(ConfigError::invalid(
                    "resources.cpu_weight",
                    "must be > 0 (1.0 is one full CPU share, as OpenNebula's CPU)",
                ));
            }
        }
        if let Some(m) = self.memory_max_mib {
            if m < memory_mib {
                return Err(ConfigError::invalid(
                    "resources.memory_max_mib",
                    format!(
                        "{m} MiB is below memory_mib ({memory_mib} MiB): the limit covers guest \
                         RAM plus the VMM's own memory"
                    ),
                ));
            }
            if m.checked_mul(1 << 20).is_none() {
                return Err(ConfigError::invalid(
                    "resources.memory_max_mib",
                    format!("{m} MiB is too large"),
                ));
            }
        }
        if let Some(p) = &self.vcpu_pinning {
            if p.len() != vcpus as usize {
                return Err(ConfigError::invalid(
                    "resources.vcpu_pinning",
                    format!(
                        "has {} entries, needs one host CPU list per vCPU ({vcpus})",
                        p.len()
                    ),
                ));
            }
            for (i, cpus) in p.iter().enumerate() {
                let field = format!("resources.vcpu_pinning[{i}]");
                if cpus.is_empty() {
                    return Err(ConfigError::invalid(field, "empty host CPU list"));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(c) = cpus.iter().find(|c| !seen.insert(**c)) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("host CPU {c} listed twice"),
                    ));
                }
            }
        }
        validate_cgroup_parent(&self.cgroup_parent)
    }
}

/// Each component of the parent path must be a plain directory name (systemd slice names
/// such as `machine.slice` included): no `.`, `..` or empty components.
fn validate_cgroup_parent(parent: &str) -> Result<(), ConfigError> {
    let field = "resources.cgroup_parent";
    let inner = parent.strip_prefix('/').unwrap_or(parent);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(()); // the hierarchy root
    }
    for part in inner.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.len() > 255 {
            return Err(ConfigError::invalid(
                field,
                format!("{parent:?} is not a plain path (empty, `.` or `..` component)"),
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':')))
        {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "character {c:?} not allowed (use letters, digits, '-', '_', '.', '@', ':')"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::VmConfig;
    use super::*;

    fn vm(resources: &str) -> Result<VmConfig, ConfigError> {
        let json = format!(
            r#"{{ "name": "demo", "vcpus": 2, "memory_mib": 256,
                 "boot": {{ "kernel": "vmlinux" }}, "resources": {resources} }}"#
        );
        VmConfig::from_json(&json, Path::new("/vms"))
    }

    fn err(resources: &str) -> String {
        vm(resources).unwrap_err().to_string()
    }

    #[test]
    fn absent_resources_and_defaults() {
        let cfg = VmConfig::from_json(
            r#"{ "name": "demo", "memory_mib": 16, "boot": { "kernel": "k" } }"#,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(cfg.resources, None);
        let r = vm("{}").unwrap().resources.unwrap();
        assert_eq!(r, Resources::default());
        assert!(!r.needs_cgroup());
        assert_eq!(r.cgroup_path("demo"), "/oxvm/demo");
    }

    #[test]
    fn all_fields_parse() {
        let r = vm(r#"{ "cpu_weight": 0.5, "memory_max_mib": 300,
                        "vcpu_pinning": [[0], [1, 2]], "cgroup_parent": "/machine.slice/" }"#)
        .unwrap()
        .resources
        .unwrap();
        assert_eq!(r.cpu_weight, Some(0.5));
        assert_eq!(r.memory_max_mib, Some(300));
        assert!(r.needs_cgroup());
        assert_eq!(r.vcpu_cpus(1), Some(&[1, 2][..]));
        assert_eq!(r.vcpu_cpus(2), None);
        assert_eq!(r.cgroup_path("demo"), "/machine.slice/demo");
        let r = vm(r#"{ "cgroup_parent": "/" }"#)
            .unwrap()
            .resources
            .unwrap();
        assert_eq!(r.cgroup_path("demo"), "/demo");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (res, field) in [
            (r#"{ "cpu_weight": 0 }"#, "`resources.cpu_weight`"),
            (r#"{ "cpu_weight": -1.5 }"#, "`resources.cpu_weight`"),
            (r#"{ "memory_max_mib": 255 }"#, "`resources.memory_max_mib`"),
            (
                r#"{ "memory_max_mib": 18446744073709551615 }"#,
                "`resources.memory_max_mib`",
            ),
            (r#"{ "vcpu_pinning": [[0]] }"#, "`resources.vcpu_pinning`"),
            (
                r#"{ "vcpu_pinning": [[0], []] }"#,
                "`resources.vcpu_pinning[1]`",
            ),
            (
                r#"{ "vcpu_pinning": [[0, 0], [1]] }"#,
                "`resources.vcpu_pinning[0]`",
            ),
            (
                r#"{ "cgroup_parent": "a/../b" }"#,
                "`resources.cgroup_parent`",
            ),
            (
                r#"{ "cgroup_parent": "a//b" }"#,
                "`resources.cgroup_parent`",
            ),
            (r#"{ "cgroup_parent": "a b" }"#, "`resources.cgroup_parent`"),
        ] {
            let e = err(res);
            assert!(e.contains(field), "{res}: {e}");
        }
        assert!(err(r#"{ "cpu_shares": 512 }"#).contains("cpu_shares"));
        assert!(err(r#"{ "vcpu_pinning": [[0]] }"#).contains("has 1 entries"));
    }
}
