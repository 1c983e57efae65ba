use std::path::PathBuf;

/// Why the host could not do what `resources` asked. Every message names the VM file
/// field and, for host failures, the path that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot apply `resources`: cannot read {path}: {source}")]
    ReadHost {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot apply field `{field}`: this host has no {controller} cgroup controller mounted ({found})")]
    NoController {
        field: &'static str,
        controller: &'static str,
        /// What the host has instead, for the operator.
        found: String,
    },
    #[error("cannot apply field `{field}`: this process's cgroup {cgroup:?} is not visible under {mount}")]
    NotVisible {
        field: &'static str,
        cgroup: String,
        mount: PathBuf,
    },
    #[error("cannot apply field `{field}`: cannot {action} {path}: {source}{}", hint(.source))]
    Host {
        field: &'static str,
        action: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot apply field `{field}`: cannot enable the {controllers} controller(s) in {path}: {source}{}", enable_hint(.source))]
    Enable {
        field: &'static str,
        controllers: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot apply `resources`: cgroup {path} already exists and {holds}: is a VM named {name:?} already running? (stop it, remove the group, or use another name)")]
    InUse {
        path: PathBuf,
        holds: String,
        name: String,
    },
    #[error("invalid VM config: field `resources.vcpu_pinning[{index}]`: {reason}")]
    Pinning { index: usize, reason: String },
    #[error("cannot pin thread to host CPUs {cpus:?}: {source}")]
    Affinity {
        cpus: Vec<usize>,
        source: std::io::Error,
    },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            " (oxvm needs write access to the cgroup tree: run it as root or delegate the parent group to its user)"
        }
        Some(libc::EROFS) => " (the cgroup filesystem is mounted read-only here)",
        _ => "",
    }
}

fn enable_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EBUSY) => {
            " (cgroup v2 does not let a group that holds processes pass controllers to its children: choose another resources.cgroup_parent)"
        }
        _ => hint(e),
    }
}
