//! KVM's interrupt routing for the VM: the PC's default irqchip routes plus one MSI
//! route per MSI-X vector, irqfds, ioeventfds and INTx lines.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so the table is kept here and
//! rewritten on every change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use oxvm_arch::layout::MSI_GSI_START;
use oxvm_devices::pci::{MsiMessage, MsiRouter, MsixVector};
use oxvm_devices::virtio::pci::IoEventRegistrar;
use vmm_sys_util::eventfd::EventFd;

use crate::error::{kvm_err, VmmError};

const IOAPIC_PINS: u32 = 24;

fn irqchip_route(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
        },
        ..Default::default()
    }
}

/// The routes KVM installs by default with an in-kernel irqchip: GSIs 0-15 to the PICs
/// and the IOAPIC, 16-23 to the IOAPIC.
fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut r = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 8 {
            r.push(irqchip_route(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            r.push(irqchip_route(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        r.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    r
}

struct Routes {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// Owner of the VM's GSI space and routing table.
pub struct InterruptManager {
    vm: Arc<VmFd>,
    routes: Mutex<Routes>,
}

impl InterruptManager {
    pub fn new(vm: Arc<VmFd>) -> Self {
        InterruptManager {
            vm,
            routes: Mutex::new(Routes {
                msi: BTreeMap::new(),
                next_gsi: MSI_GSI_START,
            }),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `count` MSI vectors, each a fresh GSI with an irqfd registered on it.
    pub fn allocate_msix(&self, count: usize) -> Result<Vec<MsixVector>, VmmError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let gsi = {
                let mut r = self.routes();
                let g = r.next_gsi;
                r.next_gsi += 1;
                g
            };
            let irqfd = EventFd::new(libc::EFD_NONBLOCK)?;
            self.vm
                .register_irqfd(&irqfd, gsi)
                .map_err(kvm_err("KVM_IRQFD"))?;
            out.push(MsixVector { gsi, irqfd });
        }
        Ok(out)
    }

    fn commit(&self, routes: &Routes) -> Result<(), kvm_ioctls::Error> {
        let mut entries = default_routes();
        for (gsi, m) in &routes.msi {
            entries.push(kvm_irq_routing_entry {
                gsi: *gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                u: kvm_irq_routing_entry__bindgen_ty_1 {
                    msi: kvm_irq_routing_msi {
                        address_lo: m.addr as u32,
                        address_hi: (m.addr >> 32) as u32,
                        data: m.data,
                        ..Default::default()
                    },
                },
                ..Default::default()
            });
        }
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
        self.vm.set_gsi_routing(&table)
    }

    /// Drive a legacy interrupt line (INTx, SCI) to a level.
    pub fn set_irq_line(&self, gsi: u32, high: bool) {
        if let Err(e) = self.vm.set_irq_line(gsi, high) {
            tracing::warn!("KVM_IRQ_LINE {gsi}: {e}");
        }
    }
}

impl MsiRouter for InterruptManager {
    fn update_route(&self, gsi: u32, msg: Option<MsiMessage>) {
        let mut r = self.routes();
        let changed = match msg {
            Some(m) => r.msi.insert(gsi, m) != Some(m),
            None => r.msi.remove(&gsi).is_some(),
        };
        if changed {
            if let Err(e) = self.commit(&r) {
                tracing::error!("KVM_SET_GSI_ROUTING: {e}");
            }
        }
    }
}

/// Queue-notify addresses as KVM ioeventfds.
pub struct IoEvents(pub Arc<VmFd>);

impl IoEventRegistrar for IoEvents {
    fn register(&self, evt: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, evt: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0
            .unregister_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_cover_pic_and_ioapic() {
        let r = default_routes();
        assert_eq!(r.len(), 16 + 24);
        assert!(r
            .iter()
            .any(|e| e.gsi == 9 && e.type_ == KVM_IRQ_ROUTING_IRQCHIP));
    }
}
