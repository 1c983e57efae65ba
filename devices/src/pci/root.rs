//! PCI segment 0, bus 0: the slots, the host bridge in slot 0, and config-space
//! routing. Accessed through ports 0xCF8/0xCFC ([`PciConfigIo`]) and ECAM
//! ([`PciConfigMmio`]).

use std::sync::{Arc, Mutex};

use super::config::{PciConfig, PciId};
use super::device::PciDevice;
use crate::bus::{Bus, BusDevice, WeakBus};

pub const NUM_SLOTS: usize = 32;
/// Size of one function's ECAM window.
const ECAM_FUNCTION_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("no free PCI slot (bus 0 has {NUM_SLOTS})")]
    NoFreeSlot,
    #[error("PCI slot {0} is in use")]
    SlotInUse(usize),
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Slot 0: a host bridge the OS recognises (QEMU's PCIe host bridge IDs, which
/// guests already know).
struct HostBridge(PciConfig);

impl PciDevice for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.0.read_reg(reg)
    }
    fn config_write(&mut self, _: usize, _: u64, _: &[u8]) -> Option<super::BarChange> {
        None
    }
}

pub struct PciRoot {
    slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>>,
    /// Where BARs are moved. Weak: the root is itself on that bus (ECAM).
    mmio: WeakBus,
}

impl PciRoot {
    pub fn new(mmio: &Bus) -> Self {
        let mut slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>> = vec![None; NUM_SLOTS];
        let bridge = HostBridge(PciConfig::new(PciId {
            vendor: 0x1b36,
            device: 0x0008,
            class: 0x06,
            subclass: 0x00,
            prog_if: 0,
            revision: 0,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        }));
        slots[0] = Some(Arc::new(Mutex::new(bridge)));
        PciRoot {
            slots,
            mmio: mmio.downgrade(),
        }
    }

    /// The lowest free slot.
    pub fn free_slot(&self) -> Result<usize, PciError> {
        self.slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::NoFreeSlot)
    }

    pub fn attach(&mut self, slot: usize, dev: Arc<Mutex<dyn PciDevice>>) -> Result<(), PciError> {
        match self.slots.get_mut(slot) {
            Some(s @ None) => {
                *s = Some(dev);
                Ok(())
            }
            _ => Err(PciError::SlotInUse(slot)),
        }
    }

    pub fn detach(&mut self, slot: usize) -> Option<Arc<Mutex<dyn PciDevice>>> {
        if slot == 0 {
            return None;
        }
        self.slots.get_mut(slot)?.take()
    }

    fn device(&self, bus: u8, slot: usize, func: u8) -> Option<Arc<Mutex<dyn PciDevice>>> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(slot)?.clone()
    }

    pub fn config_read(&self, bus: u8, slot: usize, func: u8, reg: usize) -> u32 {
        match self.device(bus, slot, func) {
            // Beyond the 256-byte space: no extended capabilities.
            Some(_) if reg >= 64 => 0,
            Some(d) => lock(&d).config_read(reg),
            None => 0xffff_ffff,
        }
    }

    pub fn config_write(&self, bus: u8, slot: usize, func: u8, reg: usize, off: u64, data: &[u8]) {
        let Some(d) = self.device(bus, slot, func) else {
            return;
        };
        if reg >= 64 {
            return;
        }
        let change = lock(&d).config_write(reg, off, data);
        if let Some(c) = change {
            // The device's lock is released here: vCPUs in its BAR keep working.
            let Some(mmio) = self.mmio.upgrade() else {
                return; // the machine is being dropped
            };
            match mmio.relocate(c.old, c.new) {
                Ok(()) => lock(&d).bar_moved(&c),
                Err(e) => tracing::warn!(
                    "PCI {slot:02x}.0: cannot move BAR{} {:#x} -> {:#x}: {e}",
                    c.index,
                    c.old,
                    c.new
                ),
            }
        }
    }
}

/// Ports 0xCF8-0xCFF: configuration mechanism #1.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    pub const PORT: u16 = 0xcf8;
    pub const LEN: u64 = 8;

    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    fn target(&self) -> Option<(u8, usize, u8, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let a = self.address;
        Some((
            ((a >> 16) & 0xff) as u8,
            ((a >> 11) & 0x1f) as usize,
            ((a >> 8) & 0x7) as u8,
            ((a >> 2) & 0x3f) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0..=3 => self.address,
            _ => match self.target() {
                Some((b, s, f, r)) => lock(&self.root).config_read(b, s, f, r),
                None => 0xffff_ffff,
            },
        };
        let shift = (offset % 4) * 8;
        for (i, d) in data.iter_mut().enumerate() {
            *d = (value
                .checked_shr((shift as u32) + 8 * i as u32)
                .unwrap_or(0xff)) as u8;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            4..=7 if (offset % 4) as usize + data.len() <= 4 => {
                if let Some((b, s, f, r)) = self.target() {
                    lock(&self.root).config_write(b, s, f, r, offset % 4, data);
                }
            }
            _ => {}
        }
    }
}

/// PCI Express enhanced configuration access (ECAM) for bus 0.
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    /// One bus: 32 devices x 8 functions x 4 KiB.
    pub const SIZE: u64 = 256 * ECAM_FUNCTION_SIZE;

    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigMmio { root }
    }

    fn decode(offset: u64) -> (usize, u8, usize, u64) {
        (
            ((offset >> 15) & 0x1f) as usize,
            ((offset >> 12) & 0x7) as u8,
            ((offset & 0xfff) >> 2) as usize,
            offset & 3,
        )
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (slot, func, reg, byte) = Self::decode(offset);
        if byte as usize + data.len() > 4 {
            data.fill(0xff);
            return;
        }
        let value = lock(&self.root).config_read(0, slot, func, reg);
        for (i, d) in data.iter_mut().enumerate() {
            *d = (value >> ((byte as usize + i) * 8)) as u8;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (slot, func, reg, byte) = Self::decode(offset);
        if byte as usize + data.len() <= 4 {
            lock(&self.root).config_write(0, slot, func, reg, byte, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_id(io: &mut PciConfigIo, slot: u32) -> u32 {
        io.write(0, &(0x8000_0000u32 | (slot << 11)).to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_and_empty_slots() {
        let root = Arc::new(Mutex::new(PciRoot::new(&Bus::new())));
        let mut io = PciConfigIo::new(root.clone());
        assert_eq!(read_id(&mut io, 0), 0x0008_1b36);
        assert_eq!(read_id(&mut io, 3), 0xffff_ffff);
        let mut ecam = PciConfigMmio::new(root.clone());
        let mut d = [0u8; 2];
        ecam.read(2, &mut d);
        assert_eq!(u16::from_le_bytes(d), 0x0008);
        ecam.read(3 << 15, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        // Function 1 of slot 0 does not exist.
        let mut d4 = [0u8; 4];
        ecam.read(1 << 12, &mut d4);
        assert_eq!(d4, [0xff; 4]);
        assert_eq!(root.lock().unwrap().free_slot(), Ok(1));
    }

    #[test]
    fn disabled_address_reads_all_ones_and_odd_writes_are_ignored() {
        let root = Arc::new(Mutex::new(PciRoot::new(&Bus::new())));
        let mut io = PciConfigIo::new(root);
        io.write(0, &0u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        io.write(1, &[1, 2]); // not a dword write to the address port
        io.write(7, &[1, 2]); // straddles the data port end
        io.read(0, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
