//! Guest physical memory and port layout of an oxvm x86-64 machine.
//!
//! One place for every fixed address so that the boot code, the ACPI tables and the
//! devices agree. The low 1 MiB follows the PC convention Linux expects (EBDA below
//! 640 KiB, BIOS area 0xE0000-0xFFFFF where the kernel scans for the RSDP).

/// GDT of the boot CPU (4 entries: null, null, code, data, plus a TSS descriptor).
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT placeholder (limit 0): the kernel loads its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` and its tables.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot CPU (grows down below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, one PDPT, and four page directories of 2 MiB pages
/// that together map the first 4 GiB (kernel, zero page, command line, initrd, and
/// the LAPIC/IOAPIC pages, which small test guests poke directly).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const PDE_COUNT: u64 = 4;
/// Kernel command line (NUL terminated).
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we accept (Linux/x86's COMMAND_LINE_SIZE is 2048; newer
/// kernels announce a larger `cmdline_size` in their setup header, which wins).
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Extended BIOS data area: reserved in the e820 map, as on a PC.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the BIOS read-only area where Linux scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// Start of "high" memory: where a bzImage's protected-mode kernel is loaded.
pub const HIMEM_START: u64 = 0x100000;

/// The 32-bit MMIO gap below 4 GiB: no RAM here. Holds the LAPIC, IOAPIC, KVM's
/// TSS/identity pages and (later) PCI ECAM and 32-bit BARs.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// RAM beyond what fits below the gap continues here.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// Pages KVM needs for real-mode emulation on Intel hosts (KVM_SET_TSS_ADDR, 3 pages,
/// and KVM_SET_IDENTITY_MAP_ADDR, 1 page), inside the gap so they never shadow RAM.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
pub const KVM_TSS_START: u64 = 0xfffb_d000;

/// Legacy I/O ports.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const I8042_PORT: u16 = 0x60;
pub const CMOS_PORT: u16 = 0x70;

/// ACPI fixed-hardware register blocks (I/O ports), described by the FADT and emulated
/// by `oxvm_devices::acpi_pm`. Non-hardware-reduced ACPI with a fixed power button:
/// the oldest and most widely supported path in guest kernels.
pub const PM1A_EVT_PORT: u16 = 0x600;
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1A_CNT_PORT: u16 = 0x604;
pub const PM1_CNT_LEN: u8 = 2;
/// FADT RESET_REG: writing `ACPI_RESET_VALUE` here resets the machine.
pub const ACPI_RESET_PORT: u16 = 0x608;
pub const ACPI_RESET_VALUE: u8 = 0x0e;
/// Ports 0x600..0x610 belong to the ACPI PM device.
pub const ACPI_PM_PORT_BASE: u16 = 0x600;
pub const ACPI_PM_PORT_LEN: u16 = 0x10;
/// SCI interrupt line (level triggered, active high, as QEMU's PIIX4 PM).
pub const SCI_IRQ: u32 = 9;
/// SLP_TYP value of the \_S5 (soft-off) package in the DSDT.
pub const S5_SLP_TYP: u8 = 5;

/// PCI: ECAM for bus 0 (1 MiB), reserved in the e820 map and in ACPI.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
/// 32-bit BAR window of the host bridge (all of the gap below the ECAM).
pub const PCI_MMIO32_START: u64 = MMIO_GAP_START;
pub const PCI_MMIO32_END: u64 = PCI_ECAM_START;
/// Legacy INTx of PCI slots goes to IOAPIC pins 16-23: slot S, pin P (0 = INTA) is
/// GSI 16 + (S + P) % 8, as the DSDT's _PRT says.
pub const PCI_INTX_GSI_BASE: u32 = 16;
pub const PCI_INTX_GSI_COUNT: u32 = 8;
/// Ports of PCI configuration mechanism #1.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// First GSI for MSI routes (above the IOAPIC's 24 pins).
pub const MSI_GSI_START: u32 = 24;

/// The GSI of INTx pin `pin` (0 = INTA) of PCI slot `slot`.
pub const fn pci_intx_gsi(slot: u32, pin: u32) -> u32 {
    PCI_INTX_GSI_BASE + (slot + pin) % PCI_INTX_GSI_COUNT
}
