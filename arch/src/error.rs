use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a kernel: neither an ELF vmlinux nor a bzImage")]
    NotAKernel(PathBuf),
    #[error("cannot load kernel {path}: {reason}")]
    KernelLoad { path: PathBuf, reason: String },
    #[error("{what} {path} ({size} bytes) does not fit in the guest's {ram_mib} MiB of memory: raise memory_mib")]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        size: u64,
        ram_mib: u64,
    },
    #[error("boot.entry is \"pvh\" but {0} has no PVH ELF note")]
    NoPvhNote(PathBuf),
    #[error("boot.cmdline is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("boot.cmdline: {0}")]
    InvalidCmdline(String),
    #[error("cannot write the {0} into guest memory (memory_mib too small?)")]
    BootTables(&'static str),
    #[error("KVM refused MSRs: set {1} of {0}")]
    Msrs(usize, usize),
    #[error("KVM: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
}
