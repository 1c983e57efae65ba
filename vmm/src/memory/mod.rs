//! Guest RAM: anonymous mappings, a shared memfd (`shared`), or a saved VM's memory
//! file, registered with KVM as memory slots.

mod shared;

pub use shared::{
    create_shared_memory, is_sealed_memfd, map_file_regions, shared_memory, SharedRegion,
};

use std::path::Path;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use oxvm_arch::memory::RamLayout;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{kvm_err, VmmError};
use crate::snapshot::{copy_memory_file, map_memory_file};
use crate::GuestMemoryMmap;

// arch and devices each name guest memory (devices does not depend on arch); memory
// crosses between them, so they must stay one type (with the same dirty bitmap).
const _: fn(GuestMemoryMmap) -> oxvm_devices::virtio::GuestMemoryMmap = |m| m;

/// Fresh guest memory for `ram`: anonymous, or a shared memfd (`memory_shared`).
pub fn allocate_guest_memory(ram: &RamLayout, shared: bool) -> Result<GuestMemoryMmap, VmmError> {
    let mib = (ram.low_size + ram.high_size) >> 20;
    let mem = if shared {
        create_shared_memory(&ram.regions())
    } else {
        GuestMemoryMmap::from_ranges(&ram.regions()).map_err(|e| e.to_string())
    };
    mem.map_err(|reason| VmmError::Memory { mib, reason })
}

pub fn create_guest_memory(
    vm: &VmFd,
    ram: &RamLayout,
    shared: bool,
) -> Result<GuestMemoryMmap, VmmError> {
    let mib = (ram.low_size + ram.high_size) >> 20;
    let mem = allocate_guest_memory(ram, shared)?;
    register_memory_slots(vm, &mem, mib)?;
    Ok(mem)
}

/// How a saved VM's memory file becomes guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryRestore {
    /// Map the file privately: pages load on first touch, guest writes go to anonymous
    /// copies, the file is never modified (and must not change while the VM runs).
    Lazy,
    /// Anonymous memory, as for a new VM, filled with the file's data extents.
    Copy,
}

/// Guest memory for `ram` from a memory file written by `snapshot::save_memory`, with
/// its regions registered as KVM slots as `create_guest_memory` does. The file must be
/// exactly as long as `ram` needs; otherwise nothing is mapped and the error names the
/// file and both sizes.
pub fn restore_guest_memory(
    vm: &VmFd,
    ram: &RamLayout,
    path: &Path,
    mode: MemoryRestore,
) -> Result<GuestMemoryMmap, VmmError> {
    let mib = (ram.low_size + ram.high_size) >> 20;
    let mem = load_guest_memory(ram, path, mode)?;
    register_memory_slots(vm, &mem, mib)?;
    Ok(mem)
}

/// `restore_guest_memory` for a VM with `memory_shared`: a memfd filled with the file's
/// data (a lazy mapping of the file is private by nature, so it is always a copy).
pub fn restore_shared_guest_memory(
    vm: &VmFd,
    ram: &RamLayout,
    path: &Path,
) -> Result<GuestMemoryMmap, VmmError> {
    let mib = (ram.low_size + ram.high_size) >> 20;
    let mem = allocate_guest_memory(ram, true)?;
    crate::snapshot::fill_from_memory_file(path, &ram.regions(), &mem)?;
    register_memory_slots(vm, &mem, mib)?;
    Ok(mem)
}

/// The KVM-independent half of `restore_guest_memory`.
pub(crate) fn load_guest_memory(
    ram: &RamLayout,
    path: &Path,
    mode: MemoryRestore,
) -> Result<GuestMemoryMmap, VmmError> {
    let regions = ram.regions();
    let mem = match mode {
        MemoryRestore::Lazy => map_memory_file(path, &regions),
        MemoryRestore::Copy => copy_memory_file(path, &regions).map(|(mem, copied)| {
            tracing::debug!(
                "copied {} MiB of data from {}",
                copied >> 20,
                path.display()
            );
            mem
        }),
    };
    mem.map_err(VmmError::Snapshot)
}

/// Registers each region of `mem` as KVM memory slot 0, 1, … in address order.
fn register_memory_slots(vm: &VmFd, mem: &GuestMemoryMmap, mib: u64) -> Result<(), VmmError> {
    set_memory_slots(vm, mem, mib, 0)
}

/// Memory already filled elsewhere (an incoming migration) becomes the VM's RAM.
pub fn register_guest_memory(
    vm: &VmFd,
    ram: &RamLayout,
    mem: &GuestMemoryMmap,
) -> Result<(), VmmError> {
    register_memory_slots(vm, mem, (ram.low_size + ram.high_size) >> 20)
}

/// Turn KVM's dirty-page logging on or off for every slot (live migration).
/// Re-registering a slot with other flags keeps its contents and mapping.
pub fn set_dirty_logging(vm: &VmFd, mem: &GuestMemoryMmap, on: bool) -> Result<(), VmmError> {
    let flags = if on {
        kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
    } else {
        0
    };
    set_memory_slots(vm, mem, 0, flags)
}

fn set_memory_slots(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    mib: u64,
    flags: u32,
) -> Result<(), VmmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmmError::Memory {
                mib,
                reason: e.to_string(),
            })?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by `mem`,
        // which the VM holds for as long as the VmFd exists.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}
