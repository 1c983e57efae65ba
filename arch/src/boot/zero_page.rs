//! The Linux zero page (`struct boot_params`) for the 64-bit entry.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use super::kernel::LoadedKernel;
use super::InitrdPlacement;
use crate::layout::{CMDLINE_START, ZERO_PAGE_START};
use crate::memory::{GuestMemoryMmap, RamLayout};
use crate::ArchError;

const BOOT_FLAG: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader id: we are not a registered boot loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    rsdp: u64,
) -> Result<u64, ArchError> {
    // A bzImage brings its own header (version, flags, init_size the decompressor
    // relies on); an ELF image gets the minimal header the 64-bit entry reads.
    let hdr = kernel.setup_header.unwrap_or(setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        kernel_alignment: KERNEL_MIN_ALIGNMENT,
        ..Default::default()
    });
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    params.acpi_rsdp_addr = rsdp;
    let map = ram.e820();
    if map.len() > params.e820_table.len() {
        return Err(ArchError::BootTables("e820 map"));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| ArchError::BootTables("zero page"))?;
    Ok(ZERO_PAGE_START)
}
