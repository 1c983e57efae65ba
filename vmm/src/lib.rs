//! oxvm VMM core: builds a VM from its config and runs it, one thread per vCPU.

mod cgroup;
pub mod control;
mod devices;
mod error;
mod events;
mod interrupts;
pub mod kvm_state;
mod machine;
mod machine_state;
mod memory;
mod migration;
mod named_snapshots;
mod platform;
pub mod signals;
pub mod snapshot;
pub mod thread_name;
mod vcpu;

pub use control::{run, run_vm, RunOptions, VmExit};
pub use error::VmmError;
/// Guest memory (with its dirty bitmap), as every crate of oxvm names it.
pub use oxvm_arch::memory::GuestMemoryMmap;
