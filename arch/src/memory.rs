//! Guest RAM regions and the e820 map that describes them, and the one type every crate
//! uses for guest memory.

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::GuestAddress;

use crate::layout::{
    ACPI_END, ACPI_START, EBDA_START, HIGH_RAM_START, HIMEM_START, MMIO_GAP_START, PCI_ECAM_SIZE,
    PCI_ECAM_START,
};

/// Guest memory, for every crate of oxvm (`oxvm_devices::virtio::GuestMemoryMmap` is
/// defined identically, as devices does not depend on arch). Each region carries a
/// dirty bitmap (one bit per 4 KiB page) that vm-memory sets on every write made
/// through it, so live migration sees what the VMM's own threads (virtio workers)
/// write; KVM's dirty log only sees vCPU writes.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;
/// One region of [`GuestMemoryMmap`], for mappings built by hand.
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<AtomicBitmap>;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// RAM split around the 32-bit MMIO gap: everything up to `MMIO_GAP_START` low, the
/// rest from 4 GiB up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamLayout {
    pub low_size: u64,
    pub high_size: u64,
}

impl RamLayout {
    pub fn new(mem_bytes: u64) -> Self {
        let low_size = mem_bytes.min(MMIO_GAP_START);
        RamLayout {
            low_size,
            high_size: mem_bytes - low_size,
        }
    }

    /// End (exclusive) of RAM below the gap.
    pub fn low_end(&self) -> u64 {
        self.low_size
    }

    /// `(start, size)` of each RAM region, for building the guest memory mapping.
    pub fn regions(&self) -> Vec<(GuestAddress, usize)> {
        let mut r = vec![(GuestAddress(0), self.low_size as usize)];
        if self.high_size > 0 {
            r.push((GuestAddress(HIGH_RAM_START), self.high_size as usize));
        }
        r
    }

    /// The e820 map: conventional memory below the EBDA, the EBDA and the BIOS area
    /// (ACPI tables) reserved, RAM from 1 MiB to the gap, the PCI ECAM window
    /// reserved, RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut map = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START.min(self.low_size),
                kind: E820_RAM,
            },
            E820Entry {
                addr: EBDA_START,
                size: 0xa0000 - EBDA_START,
                kind: E820_RESERVED,
            },
            E820Entry {
                addr: ACPI_START,
                size: ACPI_END - ACPI_START,
                kind: E820_RESERVED,
            },
        ];
        if self.low_size > HIMEM_START {
            map.push(E820Entry {
                addr: HIMEM_START,
                size: self.low_size - HIMEM_START,
                kind: E820_RAM,
            });
        }
        // PCI ECAM: reserved so the OS trusts the MCFG table.
        map.push(E820Entry {
            addr: PCI_ECAM_START,
            size: PCI_ECAM_SIZE,
            kind: E820_RESERVED,
        });
        if self.high_size > 0 {
            map.push(E820Entry {
                addr: HIGH_RAM_START,
                size: self.high_size,
                kind: E820_RAM,
            });
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vm_has_no_high_ram() {
        let l = RamLayout::new(256 << 20);
        assert_eq!(l.regions(), vec![(GuestAddress(0), 256 << 20)]);
        let ram: u64 = l
            .e820()
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (256 << 20) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn large_vm_splits_around_the_gap() {
        let l = RamLayout::new(5 << 30);
        assert_eq!(l.low_size, MMIO_GAP_START);
        assert_eq!(l.high_size, (5 << 30) - MMIO_GAP_START);
        let e = l.e820();
        let last = e.last().unwrap();
        assert_eq!(
            (last.addr, last.size),
            (HIGH_RAM_START, (5 << 30) - MMIO_GAP_START)
        );
        // No RAM entry reaches into the gap.
        assert!(e
            .iter()
            .filter(|e| e.kind == E820_RAM && e.addr < HIGH_RAM_START)
            .all(|e| e.addr + e.size <= MMIO_GAP_START));
    }
}
