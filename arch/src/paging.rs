//! Identity page tables for entering long mode.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{PDE_COUNT, PDE_START, PDPTE_START, PML4_START};
use crate::memory::GuestMemoryMmap;
use crate::ArchError;

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Map the first `PDE_COUNT` GiB 1:1 with 2 MiB pages. The Linux 64-bit entry needs the
/// kernel, zero page and command line mapped; 4 GiB also covers the initrd and the
/// LAPIC/IOAPIC pages small test guests use.
pub fn setup_identity_paging(mem: &GuestMemoryMmap) -> Result<u64, ArchError> {
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|_| ArchError::BootTables("page tables"))
    };
    w(PDPTE_START | PRESENT_RW, PML4_START)?;
    for gib in 0..PDE_COUNT {
        let pd = PDE_START + gib * 0x1000;
        w(pd | PRESENT_RW, PDPTE_START + gib * 8)?;
        for i in 0..512u64 {
            let addr = ((gib * 512 + i) << 21) | PRESENT_RW | PAGE_SIZE_2M;
            w(addr, pd + i * 8)?;
        }
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_4g_identity() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(setup_identity_paging(&mem).unwrap(), PML4_START);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let last: u64 = mem
            .read_obj(GuestAddress(PDE_START + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 24)).unwrap();
        assert_eq!(pdpt3, (PDE_START + 0x3000) | 3);
    }
}
