//! Initial register state of the boot vCPU for each entry protocol.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::gdt::{boot_gdt, segment, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use crate::layout::{BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER};
use crate::memory::GuestMemoryMmap;
use crate::paging::setup_identity_paging;
use crate::ArchError;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the boot vCPU enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, RSI = zero page.
    Linux64 { entry: u64, zero_page: u64 },
    /// PVH: 32-bit protected mode without paging, EBX = hvm_start_info.
    Pvh { entry: u64, start_info: u64 },
    /// Raw payload: long mode with identity paging and a stack, nothing else.
    Raw64 { entry: u64 },
}

impl EntryMode {
    fn long_mode(self) -> bool {
        !matches!(self, EntryMode::Pvh { .. })
    }
}

/// Write the GDT (and, for long mode, page tables) into guest memory and load the
/// boot vCPU's registers for `mode`.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    mode: EntryMode,
) -> Result<(), ArchError> {
    let gdt = boot_gdt(mode.long_mode());
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(|_| ArchError::BootTables("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| ArchError::BootTables("IDT"))?;

    let mut sregs = vcpu.get_sregs().map_err(ArchError::Kvm)?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    load_segments(&mut sregs, &gdt);
    if mode.long_mode() {
        sregs.cr3 = setup_identity_paging(mem)?;
        sregs.cr4 |= CR4_PAE;
        sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    } else {
        sregs.cr0 = (sregs.cr0 | CR0_PE | CR0_ET) & !CR0_PG;
        sregs.cr4 = 0;
        sregs.efer = 0;
    }
    vcpu.set_sregs(&sregs).map_err(ArchError::Kvm)?;

    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 { entry, zero_page } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = zero_page;
        }
        EntryMode::Pvh { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
        EntryMode::Raw64 { entry } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
        }
    }
    vcpu.set_regs(&regs).map_err(ArchError::Kvm)?;
    Ok(())
}

fn load_segments(sregs: &mut kvm_sregs, gdt: &[u64]) {
    let code = segment(gdt, CODE_INDEX);
    let data = segment(gdt, DATA_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt, TSS_INDEX);
}

/// x87/SSE state as after FNINIT plus the default MXCSR: what firmware leaves behind.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(ArchError::Kvm)
}
