//! The VM-wide state KVM keeps for us: the in-kernel PICs and IOAPIC, the PIT and the
//! kvmclock. Saved with the vCPUs, applied to the new VM before its vCPUs run.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use crate::error::{kvm_err, VmmError};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvmVmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn chip(id: u32) -> kvm_irqchip {
    kvm_irqchip {
        chip_id: id,
        ..Default::default()
    }
}

pub fn save_vm(vm: &VmFd) -> Result<KvmVmState, VmmError> {
    let mut pic_master = chip(KVM_IRQCHIP_PIC_MASTER);
    let mut pic_slave = chip(KVM_IRQCHIP_PIC_SLAVE);
    let mut ioapic = chip(KVM_IRQCHIP_IOAPIC);
    for c in [&mut pic_master, &mut pic_slave, &mut ioapic] {
        vm.get_irqchip(c).map_err(kvm_err("KVM_GET_IRQCHIP"))?;
    }
    Ok(KvmVmState {
        pic_master,
        pic_slave,
        ioapic,
        pit: vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
        clock: vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?,
    })
}

pub fn restore_vm(vm: &VmFd, s: &KvmVmState) -> Result<(), VmmError> {
    let chips = [
        (&s.pic_master, KVM_IRQCHIP_PIC_MASTER, "kvm.pic_master"),
        (&s.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "kvm.pic_slave"),
        (&s.ioapic, KVM_IRQCHIP_IOAPIC, "kvm.ioapic"),
    ];
    for (c, id, field) in chips {
        if c.chip_id != id {
            return Err(VmmError::Device(format!(
                "{field}: chip id {} where {id} was expected",
                c.chip_id
            )));
        }
        vm.set_irqchip(c).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
    }
    vm.set_pit2(&s.pit).map_err(kvm_err("KVM_SET_PIT2"))?;
    // The clock goes on from where the guest saw it. The flags describe the old host
    // ("TSC stable", the realtime pair): none of them applies to this one.
    let mut clock = s.clock;
    clock.flags = 0;
    vm.set_clock(&clock).map_err(kvm_err("KVM_SET_CLOCK"))?;
    Ok(())
}
