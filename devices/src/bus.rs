//! Port-I/O and MMIO bus: maps address ranges to devices so a vCPU exit can be
//! dispatched to the device that owns the address.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An address space (one for ports, one for MMIO). Cheap to clone: entries are shared.
#[derive(Default, Clone)]
pub struct Bus {
    entries: BTreeMap<u64, Arc<Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
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
        if let Some((b, e)) = self.entries.range(..end).next_back() {
            if b + e.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.entries.insert(base, Arc::new(Entry { len, device }));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Entry)> {
        let (base, entry) = self.entries.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        if offset.checked_add(size as u64)? <= entry.len {
            Some((offset, entry))
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
        let mut bus = Bus::new();
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
    }
}
