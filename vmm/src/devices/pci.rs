//! PCI bus 0 of the VM: config access on ports 0xCF8 and ECAM, BARs allocated from the
//! 32-bit window, and virtio devices attached as virtio-pci functions.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use oxvm_arch::layout::{
    pci_intx_gsi, PCI_CONFIG_PORT, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_END, PCI_MMIO32_START,
};
use oxvm_devices::pci::{PciConfigIo, PciConfigMmio, PciRoot};
use oxvm_devices::virtio::pci::{layout::BAR_SIZE, VirtioPciDevice, VirtioPciResources};
use oxvm_devices::virtio::{GuestMemoryMmap, VirtioDevice};
use oxvm_devices::Bus;
use vm_allocator::{AddressAllocator, AllocPolicy};

use crate::error::VmmError;
use crate::interrupts::{InterruptManager, IoEvents};

mod state;
#[cfg(test)]
mod tests;

/// A virtio-pci function on the bus.
struct PciSlot {
    slot: u8,
    name: String,
    dev: Arc<Mutex<VirtioPciDevice>>,
}

impl PciSlot {
    /// A poisoned lock means a vCPU panicked inside the device; its state is still
    /// the best there is.
    fn lock(&self) -> std::sync::MutexGuard<'_, VirtioPciDevice> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct PciBus {
    root: Arc<Mutex<PciRoot>>,
    mmio: Bus,
    interrupts: Arc<InterruptManager>,
    ioevents: Arc<IoEvents>,
    bars: AddressAllocator,
    mem: GuestMemoryMmap,
    devices: Vec<PciSlot>,
}

fn dev_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Device(e.to_string())
}

impl PciBus {
    pub fn new(
        vm: Arc<VmFd>,
        interrupts: Arc<InterruptManager>,
        pio: &Bus,
        mmio: &Bus,
        mem: GuestMemoryMmap,
    ) -> Result<Self, VmmError> {
        let root = Arc::new(Mutex::new(PciRoot::new(mmio)));
        pio.insert(
            Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
            u64::from(PCI_CONFIG_PORT),
            PciConfigIo::LEN,
        )
        .map_err(dev_err)?;
        mmio.insert(
            Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
            PCI_ECAM_START,
            PCI_ECAM_SIZE.min(PciConfigMmio::SIZE),
        )
        .map_err(dev_err)?;
        Ok(PciBus {
            root,
            mmio: mmio.clone(),
            interrupts,
            ioevents: Arc::new(IoEvents(vm)),
            bars: AddressAllocator::new(PCI_MMIO32_START, PCI_MMIO32_END - PCI_MMIO32_START)
                .map_err(dev_err)?,
            mem,
            devices: Vec::new(),
        })
    }

    /// Attach `device` as a virtio-pci function in the next free slot; returns the slot.
    pub fn add_virtio(
        &mut self,
        name: &str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<usize, VmmError> {
        let lock = |r: &Mutex<PciRoot>| -> Result<usize, VmmError> {
            r.lock()
                .unwrap_or_else(|e| e.into_inner())
                .free_slot()
                .map_err(dev_err)
        };
        let slot = lock(&self.root)?;
        let bar = self
            .bars
            .allocate(BAR_SIZE, BAR_SIZE, AllocPolicy::FirstMatch)
            .map_err(|e| VmmError::Device(format!("{name}: no room for its BAR: {e}")))?;
        let vectors = self
            .interrupts
            .allocate_msix(device.queue_max_sizes().len() + 1)?;
        let intx_gsi = pci_intx_gsi(slot as u32, 0);
        let intx_im = self.interrupts.clone();
        let res = VirtioPciResources {
            bar_addr: bar.start(),
            msix_vectors: vectors,
            msi_router: self.interrupts.clone(),
            ioevents: self.ioevents.clone(),
            intx: Box::new(move |high: bool| intx_im.set_irq_line(intx_gsi, high)),
            intx_gsi: intx_gsi as u8,
            mem: self.mem.clone(),
        };
        let dev = VirtioPciDevice::new(name.to_string(), device, res)
            .map_err(|e| VmmError::Device(format!("{name}: {e}")))?;
        let dev = Arc::new(Mutex::new(dev));
        self.mmio
            .insert(dev.clone(), bar.start(), BAR_SIZE)
            .map_err(dev_err)?;
        self.root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attach(slot, dev.clone())
            .map_err(dev_err)?;
        tracing::info!(
            "{name}: PCI 00:{slot:02x}.0, BAR0 {:#x}, INTx GSI {intx_gsi}",
            bar.start()
        );
        self.devices.push(PciSlot {
            // Slots are below NUM_SLOTS (32).
            slot: slot as u8,
            name: name.to_string(),
            dev,
        });
        Ok(slot)
    }

    /// Stop every device's workers (before the VM goes away).
    pub fn shutdown(&self) {
        for d in &self.devices {
            d.lock().shutdown();
        }
    }
}
