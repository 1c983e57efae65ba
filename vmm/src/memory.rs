//! Guest RAM: anonymous mappings registered with KVM as memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use oxvm_arch::memory::RamLayout;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::{kvm_err, VmmError};

pub fn create_guest_memory(vm: &VmFd, ram: &RamLayout) -> Result<GuestMemoryMmap, VmmError> {
    let mib = (ram.low_size + ram.high_size) >> 20;
    let mem = GuestMemoryMmap::from_ranges(&ram.regions()).map_err(|e| VmmError::Memory {
        mib,
        reason: e.to_string(),
    })?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmmError::Memory {
                mib,
                reason: e.to_string(),
            })?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by `mem`,
        // which the VM holds for as long as the VmFd exists.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(mem)
}
