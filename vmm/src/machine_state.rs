//! A whole machine's saved state — the one model that save/restore, snapshots and
//! live migration share — and the two directions: taking it from a paused machine,
//! applying it to a machine built from the same config.

use std::path::Path;

use kvm_ioctls::VmFd;
use oxvm_api::VmConfig;
use oxvm_arch::memory::RamLayout;
use serde::{Deserialize, Serialize};

use crate::devices::DevicesState;
use crate::error::VmmError;
use crate::kvm_state::{restore_vm, save_vm, KvmVmState};
use crate::machine::Machine;
use crate::memory::{restore_guest_memory, MemoryRestore};
use crate::vcpu::state::{check_cpuid, restore_vcpu, VcpuState};
use crate::vcpu::VcpuGroup;
use crate::GuestMemoryMmap;

/// Everything but guest RAM. Component types refuse unknown fields, so a state an
/// older oxvm cannot represent fully is refused rather than half applied.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSnapshot {
    /// The config the machine was built from (disks and taps by path and name).
    pub config: VmConfig,
    pub kvm: KvmVmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
}

/// What a restore builds from: the saved state and where its memory comes from.
pub struct RestoreSource<'a> {
    pub state: &'a VmSnapshot,
    pub memory: MemorySource<'a>,
}

pub enum MemorySource<'a> {
    /// A saved memory file (`memory.raw`), mapped lazily or copied.
    File(&'a Path, MemoryRestore),
    /// Memory already filled by the caller (an incoming migration), to be registered
    /// with the new VM.
    Filled(GuestMemoryMmap),
}

impl RestoreSource<'_> {
    pub(crate) fn map_memory(
        &self,
        vm: &VmFd,
        ram: &RamLayout,
    ) -> Result<GuestMemoryMmap, VmmError> {
        match &self.memory {
            MemorySource::File(path, _) if self.state.config.memory_shared => {
                crate::memory::restore_shared_guest_memory(vm, ram, path)
            }
            MemorySource::File(path, mode) => restore_guest_memory(vm, ram, path, *mode),
            MemorySource::Filled(mem) => {
                crate::memory::register_guest_memory(vm, ram, mem)?;
                Ok(mem.clone())
            }
        }
    }
}

impl Machine {
    /// Take the state of a machine whose vCPUs are paused and whose devices are
    /// quiesced (no request in flight, no worker touching guest memory). Devices
    /// first: draining them may have raised interrupts that the irqchip and LAPIC
    /// states taken after them must hold.
    pub fn save_state(&self, config: &VmConfig, vcpus: &VcpuGroup) -> Result<VmSnapshot, VmmError> {
        let devices = DevicesState {
            platform: self.platform.save_state(),
            pci: self.pci.save_state()?,
        };
        Ok(VmSnapshot {
            config: config.clone(),
            kvm: save_vm(&self.vm)?,
            vcpus: vcpus.save_states()?,
            devices,
        })
    }

    /// Apply `src` to this freshly built machine (before its vCPU threads start): KVM's
    /// VM and vCPU state first, the devices last, because restoring a device re-drives
    /// its interrupt lines and a later irqchip restore would erase that.
    pub(crate) fn apply_saved_state(&mut self, src: &RestoreSource) -> Result<(), VmmError> {
        let st = src.state;
        if st.vcpus.len() != self.vcpus.len() {
            return Err(VmmError::Device(format!(
                "saved state: vcpus: {} saved, the config has {}",
                st.vcpus.len(),
                self.vcpus.len()
            )));
        }
        // Compare with what this host actually gives a vCPU built from the same
        // config (KVM may adjust what KVM_GET_SUPPORTED_CPUID listed; PVM does).
        for (fd, v) in self.vcpus.iter().zip(&st.vcpus) {
            let here = fd
                .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .map_err(crate::error::kvm_err("KVM_GET_CPUID2"))?;
            check_cpuid(&v.cpuid, here.as_slice())
                .map_err(|e| VmmError::Device(format!("cannot restore here: {e}")))?;
        }
        restore_vm(&self.vm, &st.kvm)?;
        for (fd, v) in self.vcpus.iter().zip(&st.vcpus) {
            restore_vcpu(fd, v)?;
        }
        self.platform.restore_state(&st.devices.platform)?;
        self.pci.restore_state(&st.devices.pci)?;
        Ok(())
    }

    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Finish every device request and stop the workers (guest memory stays still).
    pub fn quiesce_devices(&mut self) -> Result<(), VmmError> {
        self.pci.quiesce_all()
    }

    pub fn resume_devices(&mut self) -> Result<(), VmmError> {
        self.pci.resume_all()
    }

    /// Make every disk's writes durable while the devices are quiesced: before another
    /// process opens the same images (a migration's destination), nothing of ours may
    /// still sit in a cache (imago keeps qcow2 metadata in memory until a flush).
    pub fn flush_disks(&mut self) -> Result<(), VmmError> {
        self.visit_disks(&mut |id, backend| {
            backend
                .flush()
                .map_err(|e| format!("disk {id}: flush: {e}"))
        })
    }

    /// Visit every disk backend while the devices are quiesced (or before the guest
    /// activated them): a named snapshot swaps in new overlays this way.
    pub fn visit_disks(
        &mut self,
        visit: &mut oxvm_devices::virtio::DiskVisitor<'_>,
    ) -> Result<(), VmmError> {
        self.pci.visit_disks(visit).map_err(VmmError::Device)
    }
}
