//! Model-specific registers every vCPU starts with.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::ArchError;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back: without it Linux maps all RAM
/// uncached when it honours MTRRs.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// Set the boot MSRs that this host's KVM supports (`supported` is
/// KVM_GET_MSR_INDEX_LIST), so the same code works on every host.
pub fn setup_msrs(vcpu: &VcpuFd, supported: &[u32]) -> Result<(), ArchError> {
    let wanted = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ];
    let entries: Vec<kvm_msr_entry> = wanted
        .iter()
        .filter(|(index, _)| supported.contains(index))
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| ArchError::Msrs(entries.len(), 0))?;
    let set = vcpu.set_msrs(&msrs).map_err(ArchError::Kvm)?;
    if set != entries.len() {
        return Err(ArchError::Msrs(entries.len(), set));
    }
    Ok(())
}

/// The host's MSR list, fetched once per VM build.
pub fn supported_msrs(kvm: &Kvm) -> Result<Vec<u32>, ArchError> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(ArchError::Kvm)?
        .as_slice()
        .to_vec())
}
