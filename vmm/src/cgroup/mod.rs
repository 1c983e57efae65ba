//! Host resource control for the VM process (`resources` in the VM file).
//!
//! CPU weight and memory limit: the whole process is moved into a cgroup
//! `<cgroup_parent>/<name>` on whichever hierarchy carries the controller — cgroup v2
//! (one directory, controllers enabled through the ancestors' `cgroup.subtree_control`)
//! or cgroup v1 (one directory per controller mount, found in /proc/self/mountinfo).
//! The move happens before the machine is built, so guest RAM is charged to the group.
//! [`CgroupGuard`] moves the process back and removes the directories when the VM ends.
//!
//! vCPU pinning: [`pin_current_thread`] sets the calling thread's CPU affinity; the
//! configured CPUs are checked against what this process may use when the VM starts.

mod error;
mod group;
mod layout;
mod pin;
mod values;

pub use error::CgroupError;
pub(crate) use group::CgroupGuard;
pub(crate) use pin::pin_current_thread;

use oxvm_api::VmConfig;

/// Apply `cfg.resources` to this process: check the vCPU pinning against the host,
/// create and enter the VM's cgroup. Call on the main thread before the machine is built.
/// Nothing is left behind on error; the returned guard undoes the cgroup when dropped.
pub(crate) fn apply(cfg: &VmConfig) -> Result<CgroupGuard, CgroupError> {
    let Some(res) = &cfg.resources else {
        return Ok(CgroupGuard::none());
    };
    if let Some(p) = &res.vcpu_pinning {
        pin::check_pinning(p)?;
    }
    if !res.needs_cgroup() {
        return Ok(CgroupGuard::none());
    }
    let layout = layout::Layout::read_host()?;
    let plan = layout.plan(res, &cfg.name)?;
    group::enter(plan, &cfg.name)
}
