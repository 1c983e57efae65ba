//! PVH boot: `hvm_start_info` with the memory map and the initrd as module 0.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use super::InitrdPlacement;
use crate::layout::{CMDLINE_START, PVH_INFO_START};
use crate::memory::{GuestMemoryMmap, RamLayout};
use crate::ArchError;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const MEMMAP_START: u64 = PVH_INFO_START + 0x40;
const MODLIST_START: u64 = PVH_INFO_START + 0x400;

pub fn write_start_info(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    initrd: Option<InitrdPlacement>,
    rsdp: u64,
) -> Result<u64, ArchError> {
    let err = |_| ArchError::BootTables("PVH start info");
    let map = ram.e820();
    for (i, e) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let at = MEMMAP_START + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        if at >= MODLIST_START {
            return Err(ArchError::BootTables("PVH memory map"));
        }
        mem.write_obj(entry, GuestAddress(at)).map_err(err)?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp,
        memmap_paddr: MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(i) = initrd {
        let module = hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(MODLIST_START))
            .map_err(err)?;
        info.nr_modules = 1;
        info.modlist_paddr = MODLIST_START;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(err)?;
    Ok(PVH_INFO_START)
}
