use std::path::PathBuf;

/// Why a VM could not be built or stopped running. Build errors happen before any vCPU
/// thread starts, so a refused VM leaves nothing behind.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot open /dev/kvm: {0} (is the kvm module loaded and are you allowed to use it?)")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("KVM {op} failed: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("invalid VM config: field `vcpus`: {vcpus} is above this host's KVM limit of {max}")]
    TooManyVcpus { vcpus: u32, max: usize },
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Memory { mib: u64, reason: String },
    #[error(transparent)]
    Arch(#[from] oxvm_arch::ArchError),
    #[error("building ACPI tables: {0}")]
    Acpi(#[from] oxvm_arch::acpi::AcpiError),
    #[error("cannot open serial output {path}: {source}")]
    SerialFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device setup: {0}")]
    Device(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("vCPU {index} stopped on an error: {reason}")]
    VcpuFailed { index: u32, reason: String },
    #[error("cannot start vCPU thread {index}: {source}")]
    VcpuThread { index: u32, source: std::io::Error },
    /// A state or memory file was refused, or could not be written.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// `resources` (cgroup, vCPU pinning) could not be applied on this host.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

pub(crate) fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { op, source }
}
