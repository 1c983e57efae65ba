//! Building a machine from a VM config: KVM VM, memory, platform devices, tables, the
//! boot payload and the vCPUs. Everything that can fail on bad input fails here, before
//! any vCPU thread starts.

use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use oxvm_api::{BootEntry, VmConfig};
use oxvm_arch::acpi::{setup_acpi_tables, AcpiConfig};
use oxvm_arch::boot::{load_payload, EntryPreference, Payload};
use oxvm_arch::layout;
use oxvm_arch::memory::RamLayout;
use oxvm_devices::Bus;

use crate::devices::{attach_virtio_devices, DeviceMetrics, PciBus};
use crate::error::{kvm_err, VmmError};
use crate::events::VmEvents;
use crate::interrupts::InterruptManager;
use crate::machine_state::RestoreSource;
use crate::memory::create_guest_memory;
use crate::platform::{attach_platform, Platform};
use crate::vcpu::pause::PauseControl;
use crate::vcpu::{create_vcpu, spawn_vcpu, StartGate, VcpuGroup, VcpuSetup, VcpuShared};
use crate::GuestMemoryMmap;

/// A built, not yet running machine.
pub struct Machine {
    // Field order is drop order: vCPUs and devices before the VM, the VM before memory.
    pub(crate) vcpus: Vec<VcpuFd>,
    /// Host CPUs each vCPU thread is pinned to (`resources.vcpu_pinning`).
    pinning: Vec<Option<Vec<usize>>>,
    pub(crate) pci: PciBus,
    metrics: DeviceMetrics,
    /// The host's MSR list: what a saved vCPU state includes.
    msr_list: Arc<Vec<u32>>,
    /// vCPU 0's CPUID as the guest sees it.
    pub(crate) guest_cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    pub(crate) platform: Platform,
    mmio: Bus,
    /// Held so the VM (and its irqfds and slots) lives as long as the machine.
    pub(crate) vm: Arc<VmFd>,
    /// Held so the guest RAM mapping outlives every vCPU that runs on it.
    pub(crate) mem: GuestMemoryMmap,
}

fn payload(cfg: &VmConfig) -> Payload {
    match (&cfg.boot.kernel, &cfg.boot.raw) {
        (_, Some(raw)) => Payload::Raw {
            path: raw.path.clone(),
            load_address: raw.load_address,
            entry: raw.entry.unwrap_or(raw.load_address),
        },
        (kernel, None) => Payload::Kernel {
            kernel: kernel.clone().unwrap_or_default(),
            initrd: cfg.boot.initrd.clone(),
            cmdline: cfg.boot.cmdline.clone(),
            entry: match cfg.boot.entry {
                BootEntry::Auto => EntryPreference::Auto,
                BootEntry::Linux64 => EntryPreference::Linux64,
                BootEntry::Pvh => EntryPreference::Pvh,
            },
        },
    }
}

/// How a built machine begins: from its boot payload, or from a saved state.
pub enum Start<'a> {
    Boot,
    Restore(&'a RestoreSource<'a>),
}

impl Machine {
    pub fn build(kvm: &Kvm, cfg: &VmConfig, events: &VmEvents) -> Result<Machine, VmmError> {
        Self::build_from(kvm, cfg, events, Start::Boot)
    }

    pub fn build_from(
        kvm: &Kvm,
        cfg: &VmConfig,
        events: &VmEvents,
        start: Start,
    ) -> Result<Machine, VmmError> {
        let max = kvm.get_max_vcpus();
        if cfg.vcpus as usize > max {
            return Err(VmmError::TooManyVcpus {
                vcpus: cfg.vcpus,
                max,
            });
        }
        let host_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let kvm_pv_features = cfg
            .cpu
            .kvm_pv_features
            .resolve(oxvm_arch::cpuid::host_kvm_pv_features(&host_cpuid))
            .map_err(|reason| VmmError::Device(format!("cpu.kvm_pv_features: {reason}")))?;
        let msrs = oxvm_arch::msr::supported_msrs(kvm)?;

        let vm = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
        vm.set_tss_address(layout::KVM_TSS_START as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_START)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let ram = RamLayout::new(cfg.memory_mib << 20);
        let (mem, entry) = match &start {
            Start::Boot => {
                let mem = create_guest_memory(&vm, &ram, cfg.memory_shared)?;
                let rsdp = setup_acpi_tables(
                    &mem,
                    &AcpiConfig {
                        num_vcpus: cfg.vcpus as u8,
                    },
                )?;
                let entry = load_payload(&mem, &ram, &payload(cfg), rsdp.0)?;
                (mem, Some(entry))
            }
            // Tables and kernel are in the saved memory already.
            Start::Restore(src) => (src.map_memory(&vm, &ram)?, None),
        };
        let platform = attach_platform(&vm, &ram, &cfg.serial, events)?;
        let mmio = Bus::new();
        let interrupts = Arc::new(InterruptManager::new(vm.clone()));
        let mut pci = PciBus::new(vm.clone(), interrupts, &platform.pio, &mmio, mem.clone())?;
        let metrics = attach_virtio_devices(&mut pci, cfg)?;

        let setup = VcpuSetup {
            vm: &vm,
            mem: &mem,
            supported_cpuid: &host_cpuid,
            supported_msrs: &msrs,
            count: cfg.vcpus,
            kvm_pv_features,
        };
        let vcpus = (0..cfg.vcpus)
            .map(|i| create_vcpu(&setup, i, entry.filter(|_| i == 0)))
            .collect::<Result<Vec<VcpuFd>, _>>()?;
        // What the guest sees (KVM may adjust what we set): a migration's destination
        // checks its host against it.
        let guest_cpuid = vcpus[0]
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec();
        tracing::info!(
            "built VM {}: {} vCPUs, {} MiB, entry {:?}, KVM PV features {:?}",
            cfg.name,
            cfg.vcpus,
            cfg.memory_mib,
            entry,
            oxvm_api::config::kvm_pv_feature_names(kvm_pv_features)
        );
        let pinning = (0..cfg.vcpus as usize)
            .map(|i| {
                cfg.resources
                    .as_ref()
                    .and_then(|r| r.vcpu_pinning.as_ref())
                    .and_then(|p| p.get(i).cloned())
            })
            .collect();
        let mut machine = Machine {
            vcpus,
            pinning,
            pci,
            metrics,
            msr_list: Arc::new(msrs),
            guest_cpuid,
            platform,
            mmio,
            vm,
            mem,
        };
        if let Start::Restore(src) = start {
            machine.apply_saved_state(src)?;
        }
        Ok(machine)
    }

    /// Start one thread per vCPU; they begin running the guest together once all exist.
    /// A machine starts once: the vCPU fds move into their threads.
    pub fn start(&mut self, events: &VmEvents, paused: bool) -> Result<VcpuGroup, VmmError> {
        let shared = VcpuShared {
            pio: self.platform.pio.clone(),
            mmio: self.mmio.clone(),
            gate: Arc::new(StartGate::default()),
            pause: Arc::new(PauseControl::default()),
            msr_list: self.msr_list.clone(),
        };
        if paused {
            // Parked before the first KVM_RUN: a restored VM asked to stay paused runs
            // no guest instruction.
            shared.pause.request_pause();
        }
        let mut handles = Vec::new();
        for (i, vcpu) in self.vcpus.drain(..).enumerate() {
            let pin = self.pinning.get(i).cloned().flatten();
            let started = events
                .try_clone()
                .map_err(VmmError::Io)
                .and_then(|ev| spawn_vcpu(i as u32, vcpu, &shared, ev, pin));
            match started {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.gate.cancel();
                    // Dropping the group stops and joins the threads already started.
                    drop(VcpuGroup::new(handles, shared.pause.clone()));
                    return Err(e);
                }
            }
        }
        shared.gate.open_when_arrived(handles.len());
        let group = VcpuGroup::new(handles, shared.pause);
        if paused {
            group.wait_parked();
        }
        Ok(group)
    }

    /// Press the ACPI power button (the guest's ACPI driver decides what to do).
    pub fn press_power_button(&self) {
        self.platform
            .acpi_pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
    }

    /// Handles on the devices' counters.
    pub fn device_metrics(&self) -> &DeviceMetrics {
        &self.metrics
    }
}

/// The CPUID vCPU 0 of `cfg` gets on this host (an incoming migration checks the
/// source's guest against it before any memory is copied).
pub fn probe_guest_cpuid(cfg: &VmConfig) -> Result<Vec<kvm_bindings::kvm_cpuid_entry2>, VmmError> {
    let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;
    let host = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let pv = cfg
        .cpu
        .kvm_pv_features
        .resolve(oxvm_arch::cpuid::host_kvm_pv_features(&host))
        .map_err(|reason| VmmError::Device(format!("cpu.kvm_pv_features: {reason}")))?;
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    vcpu.set_cpuid2(&oxvm_arch::cpuid::vcpu_cpuid(&host, 0, cfg.vcpus, pv))
        .map_err(kvm_err("KVM_SET_CPUID2"))?;
    Ok(vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec())
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Device workers hold guest memory and irqfds: stop them before the VM goes.
        self.pci.shutdown();
    }
}
