//! The bus on a real KVM VM: a saved bus restores into a bus built the same way, BARs
//! the guest moved (even swapped) follow, and states for other slots or devices are
//! refused.

use std::sync::Arc;

use kvm_ioctls::{Kvm, VmFd};
use oxvm_arch::layout::PCI_CONFIG_PORT;
use oxvm_devices::block::MemDisk;
use oxvm_devices::virtio::pci::layout::DEVICE_CFG;
use oxvm_devices::virtio::{GuestMemoryMmap, VirtioBlk};
use oxvm_devices::Bus;
use vm_memory::GuestAddress;

use super::PciBus;
use crate::devices::state::PciBusState;
use crate::interrupts::InterruptManager;

struct Machine {
    bus: PciBus,
    pio: Bus,
    mmio: Bus,
    _vm: Arc<VmFd>,
}

/// A VM with two disks, `blk-vda` (1 MiB) in slot 1 and `blk-vdb` (2 MiB) in slot 2,
/// built as `attach_virtio_devices` builds them.
fn machine(mem: &GuestMemoryMmap) -> Machine {
    let vm = Arc::new(Kvm::new().unwrap().create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let interrupts = Arc::new(InterruptManager::new(vm.clone()));
    let (pio, mmio) = (Bus::new(), Bus::new());
    let mut bus = PciBus::new(vm.clone(), interrupts, &pio, &mmio, mem.clone()).unwrap();
    for (id, size) in [("vda", 1 << 20), ("vdb", 2 << 20)] {
        let blk = VirtioBlk::new(id, Box::new(MemDisk::new(size)), None);
        bus.add_virtio(&format!("blk-{id}"), Box::new(blk)).unwrap();
    }
    Machine {
        bus,
        pio,
        mmio,
        _vm: vm,
    }
}

fn config_write(pio: &Bus, slot: u32, reg: u32, value: u32) {
    let port = u64::from(PCI_CONFIG_PORT);
    pio.write(
        port,
        &(0x8000_0000 | (slot << 11) | (reg << 2)).to_le_bytes(),
    );
    pio.write(port + 4, &value.to_le_bytes());
}

fn bar0(m: &Machine, slot: usize) -> u64 {
    m.bus.devices[slot - 1].lock().bar_addr()
}

/// The disk capacity (sectors) the function at `bar` reports: tells them apart.
fn capacity_at(mmio: &Bus, bar: u64) -> u64 {
    let mut b = [0u8; 8];
    assert!(mmio.read(bar + DEVICE_CFG, &mut b), "nothing at {bar:#x}");
    u64::from_le_bytes(b)
}

#[test]
fn a_saved_bus_restores_with_swapped_bars() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let old = machine(&mem);
    let (a, b) = (bar0(&old, 1), bar0(&old, 2));
    // The guest swaps the two BARs, through a free address.
    let spare = b + 0x10_0000;
    config_write(&old.pio, 2, 4, spare as u32);
    config_write(&old.pio, 1, 4, b as u32);
    config_write(&old.pio, 2, 4, a as u32);
    assert_eq!((bar0(&old, 1), bar0(&old, 2)), (b, a));
    assert_eq!(capacity_at(&old.mmio, b), 2048);
    // And enables memory decoding and bus mastering on one, as drivers do.
    config_write(&old.pio, 1, 1, 0x6);

    old.bus.quiesce_all().unwrap();
    let state = old.bus.save_state().unwrap();
    old.bus.resume_all().unwrap();
    let state: PciBusState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(
        state
            .devices
            .iter()
            .map(|d| (d.slot, d.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "blk-vda"), (2, "blk-vdb")]
    );

    // The new machine puts the BARs where the allocator does (a, b) and must move
    // both, each onto the other's place: KVM refuses a second ioeventfd at an
    // address, so this only works if both leave before either arrives.
    let new = machine(&mem);
    assert_eq!((bar0(&new, 1), bar0(&new, 2)), (a, b));
    new.bus.restore_state(&state).unwrap();
    assert_eq!((bar0(&new, 1), bar0(&new, 2)), (b, a));
    assert_eq!(capacity_at(&new.mmio, b), 2048, "vda (1 MiB) decodes at b");
    assert_eq!(capacity_at(&new.mmio, a), 4096, "vdb (2 MiB) decodes at a");
    let port = u64::from(PCI_CONFIG_PORT);
    new.pio
        .write(port, &(0x8000_0000u32 | (1 << 11) | (1 << 2)).to_le_bytes());
    let mut cmd = [0u8; 2];
    new.pio.read(port + 4, &mut cmd);
    assert_eq!(u16::from_le_bytes(cmd), 0x6);
    // The guest can still move it: the bus and the function agree on where it is.
    config_write(&new.pio, 1, 4, spare as u32);
    assert_eq!(capacity_at(&new.mmio, spare), 2048);
}

#[test]
fn states_for_other_slots_or_devices_are_refused() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let old = machine(&mem);
    old.bus.quiesce_all().unwrap();
    let good = old.bus.save_state().unwrap();
    let new = machine(&mem);
    let refused = |edit: &dyn Fn(&mut PciBusState)| {
        let mut s = good.clone();
        edit(&mut s);
        new.bus.restore_state(&s).unwrap_err().to_string()
    };

    let e = refused(&|s| s.devices[0].name = "blk-vdz".into());
    assert!(
        e.contains("PCI slot 1 holds blk-vdz in the saved state, but blk-vda"),
        "{e}"
    );
    let e = refused(&|s| s.devices[1].slot = 5);
    assert!(e.contains("PCI slot 5") && e.contains("nothing"), "{e}");
    let e = refused(&|s| {
        s.devices.pop();
    });
    assert!(
        e.contains("blk-vdb (PCI slot 2) is not in the saved state"),
        "{e}"
    );
    let e = refused(&|s| s.devices[1].slot = 1);
    assert!(e.contains("PCI slot 1 is saved twice"), "{e}");
    // The two disks' states swapped between the slots: names match the slots, but
    // the contents do not fit the disks.
    let e = refused(&|s| {
        let (a, b) = (s.devices[0].state.clone(), s.devices[1].state.clone());
        s.devices[0].state = b;
        s.devices[1].state = a;
    });
    assert!(
        e.contains("blk-vda") && e.contains("capacity_sectors"),
        "{e}"
    );
    // A value refused by a device is reported with the device and field, and nothing
    // was applied to the bus: the good state still restores.
    let e = refused(&|s| s.devices[1].state.queues[0].msix_vector = 9999);
    assert!(
        e.contains("blk-vdb") && e.contains("queues[0].msix_vector"),
        "{e}"
    );
    new.bus.restore_state(&good).unwrap();
}
