//! Port-I/O and MMIO bus: maps address ranges to devices so a vCPU exit can be
//! dispatched to the device that owns the address.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// A device reachable through port I/O or MMIO. `offset` is relative to the base the
/// device was inserted at; `data.len()` is the access width (1, 2, 4 or 8 bytes).
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range at {base:#x} has zero length")]
    ZeroLength { base: u64 },
    #[error("no device at bus address {0:#x}")]
    NotFound(u64),
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An address space (one for ports, one for MMIO). Clones share the same map, so a
/// device moved or added after boot (a relocated PCI BAR, a hotplugged device) is seen
/// by every vCPU thread.
#[derive(Default, Clone)]
pub struct Bus {
    entries: Arc<RwLock<BTreeMap<u64, Arc<Entry>>>>,
}

/// A reference to a [`Bus`] that does not keep it alive: for a device on the bus
/// that moves things on it (the PCI root relocating BARs), which would otherwise
/// form a cycle (bus → device → bus) that keeps the whole machine, guest memory
/// included, alive after it is dropped.
#[derive(Clone, Default)]
pub struct WeakBus {
    entries: Weak<RwLock<BTreeMap<u64, Arc<Entry>>>>,
}

impl WeakBus {
    /// The bus, unless it is gone.
    pub fn upgrade(&self) -> Option<Bus> {
        Some(Bus {
            entries: self.entries.upgrade()?,
        })
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn downgrade(&self) -> WeakBus {
        WeakBus {
            entries: Arc::downgrade(&self.entries),
        }
    }

    /// Attach `device` at `[base, base + len)`.
    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength { base });
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overlap { base, len })?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some((b, e)) = entries.range(..end).next_back() {
            if b + e.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        entries.insert(base, Arc::new(Entry { len, device }));
        Ok(())
    }

    /// Detach the device at `base`; returns it with its length.
    pub fn remove(&self, base: u64) -> Result<(Arc<Mutex<dyn BusDevice>>, u64), BusError> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let e = entries.remove(&base).ok_or(BusError::NotFound(base))?;
        Ok((e.device.clone(), e.len))
    }

    /// Move the device at `old` to `new` (same length). On overlap nothing changes.
    pub fn relocate(&self, old: u64, new: u64) -> Result<(), BusError> {
        let (device, len) = self.remove(old)?;
        if let Err(e) = self.insert(device.clone(), new, len) {
            self.insert(device, old, len)?;
            return Err(e);
        }
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, Arc<Entry>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let (base, entry) = entries.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        if offset.checked_add(size as u64)? <= entry.len {
            Some((offset, entry.clone()))
        } else {
            None
        }
    }

    /// Dispatch a read. Returns false (and fills `data` with 0xff, as an open PC bus
    /// reads) when no device owns the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, entry)) => {
                lock(&entry.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatch a write. Returns false when no device owns the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, entry)) => {
                lock(&entry.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// A poisoned device lock means a device panicked on another vCPU; its state is still
/// the best we have, and refusing every later access would hang the guest.
fn lock(device: &Mutex<dyn BusDevice>) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(Vec<u8>);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.0[o..o + data.len()]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.0[o..o + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn dispatches_by_range_and_rejects_overlap() {
        let bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Reg(vec![0; 4]))), 0x10, 4)
            .unwrap();
        assert_eq!(
            bus.insert(Arc::new(Mutex::new(Reg(vec![0; 4]))), 0x12, 4),
            Err(BusError::Overlap { base: 0x12, len: 4 })
        );
        assert_eq!(
            bus.insert(Arc::new(Mutex::new(Reg(vec![0; 4]))), 0x0e, 4),
            Err(BusError::Overlap { base: 0x0e, len: 4 })
        );
        bus.insert(Arc::new(Mutex::new(Reg(vec![0; 4]))), 0x14, 4)
            .unwrap();
        assert!(bus.write(0x11, &[7, 8]));
        let mut buf = [0u8; 2];
        assert!(bus.read(0x11, &mut buf));
        assert_eq!(buf, [7, 8]);
        // Straddling the end of a device is not a hit.
        assert!(!bus.read(0x13, &mut buf));
        assert_eq!(buf, [0xff, 0xff]);
        assert!(!bus.write(0x100, &[1]));
        // Relocation keeps the device (and its state) and frees the old range.
        bus.relocate(0x10, 0x40).unwrap();
        assert!(!bus.read(0x11, &mut buf));
        assert!(bus.read(0x41, &mut buf));
        assert_eq!(buf, [7, 8]);
        assert_eq!(
            bus.relocate(0x40, 0x12),
            Err(BusError::Overlap { base: 0x12, len: 4 })
        );
        assert!(bus.read(0x41, &mut buf));
    }
}
