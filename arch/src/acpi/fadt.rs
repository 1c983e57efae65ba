//! FADT (signature "FACP") and FACS: the fixed ACPI hardware of the machine.
//!
//! We describe a classic, *non*-hardware-reduced PC (like QEMU's PIIX4 PM): guests
//! then drive the PM1 event/control registers emulated by `oxvm_devices::acpi_pm`,
//! handle the fixed-feature power button through PM1_STS/PM1_EN, and enter S5 by
//! writing SLP_TYP|SLP_EN to PM1a_CNT. This path works in every x86 guest kernel.

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::Aml;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout;

/// FADT revision the acpi_tables builder emits (6.5 layout, 276 bytes, with the X_
/// fields and HYPERVISOR_VENDOR_IDENTITY). Linux needs >= 3 to use the X_ fields.
pub(super) const FADT_LEN: usize = 276;
/// FACS length (fixed by the spec); it must sit on a 64-byte boundary.
pub(super) const FACS_LEN: usize = 64;
pub(super) const FACS_ALIGN: u64 = 64;

/// IAPC_BOOT_ARCH bits (ACPI 6.5, table 5.11).
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
/// An i8042 keyboard controller is present (Linux then probes it; our i8042 also
/// carries the 0xfe CPU-reset command).
const IAPC_8042: u16 = 1 << 1;
/// "VGA Not Present": no legacy VGA, so the guest does not poke 0xa0000/0x3c0.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

// The 32-bit FADT fields below are filled with `as` casts; make sure they fit.
const _: () = assert!(layout::SCI_IRQ <= u16::MAX as u32);
const _: () = assert!(layout::ACPI_END <= u32::MAX as u64);

/// Generic Address Structure of an I/O port register block of `len` bytes.
fn io_gas(port: u16, len: u8, access: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, len * 8, 0, access, port.into())
}

/// Build the FADT pointing at the FACS and the DSDT (both below 1 MiB).
pub(super) fn build_fadt(facs_addr: u64, dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .preferred_pm_profile(PmProfile::Unspecified)
        .flag(Flags::Wbinvd)
        // C1 (HLT) works on every vCPU.
        .flag(Flags::ProcC1)
        // PWR_BUTTON clear = the power button is a fixed-feature button (PM1 PWRBTN_STS),
        // so no PNP0C0C device is needed in the DSDT. SLP_BUTTON set = no sleep button.
        .flag(Flags::SlpButton)
        // RESET_REG below is valid: Linux's default reboot method on ACPI machines.
        .flag(Flags::ResetRegSup);
    // TMR_VAL_EXT stays clear and PM_TMR_BLK stays 0: there is no ACPI PM timer, guests
    // use kvmclock or the TSC (the timer is optional since ACPI 5.0A).

    // FACS: the spec allows at most one of FIRMWARE_CTRL and X_FIRMWARE_CTRL to be
    // non-zero, and X_FIRMWARE_CTRL is meant for a FACS above 4 GiB: ours is not.
    fadt.firmware_ctrl = (facs_addr as u32).into();
    fadt.x_firmware_ctrl = 0.into();
    // DSDT: both pointers, with the same value (as QEMU does). OSPMs prefer X_DSDT;
    // ACPICA only warns when the two differ.
    fadt.dsdt = (dsdt_addr as u32).into();
    fadt.x_dsdt = dsdt_addr.into();

    fadt.sci_int = (layout::SCI_IRQ as u16).into();
    // SMI_CMD = 0: the machine is always in ACPI mode (no ACPI_ENABLE handshake).
    fadt.smi_cmd = 0.into();

    // PM1a event block: PM1_STS and PM1_EN, two 16-bit registers.
    fadt.pm1a_evt_blk = u32::from(layout::PM1A_EVT_PORT).into();
    fadt.pm1_evt_len = layout::PM1_EVT_LEN;
    fadt.x_pm1a_evt_blk = io_gas(
        layout::PM1A_EVT_PORT,
        layout::PM1_EVT_LEN,
        AccessSize::WordAccess,
    );
    // PM1a control block: PM1_CNT (SCI_EN, SLP_TYP, SLP_EN), one 16-bit register.
    fadt.pm1a_cnt_blk = u32::from(layout::PM1A_CNT_PORT).into();
    fadt.pm1_cnt_len = layout::PM1_CNT_LEN;
    fadt.x_pm1a_cnt_blk = io_gas(
        layout::PM1A_CNT_PORT,
        layout::PM1_CNT_LEN,
        AccessSize::WordAccess,
    );

    // GPE blocks: none yet. PCI hotplug will add a GPE0 block here (GPE0_BLK,
    // GPE0_BLK_LEN and X_GPE0_BLK, e.g. via `FADTBuilder::gpe_info`) together with
    // the matching _GPE methods in the DSDT.

    fadt.reset_reg = io_gas(layout::ACPI_RESET_PORT, 1, AccessSize::ByteAccess);
    fadt.reset_value = layout::ACPI_RESET_VALUE;

    fadt.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT).into();

    let mut bytes = Vec::with_capacity(FADT_LEN);
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// Build the FACS. Mandatory on non-hardware-reduced platforms (it holds the global
/// lock and the firmware waking vector); we never use S3, so it stays all zero apart
/// from its header.
pub(super) fn build_facs() -> Vec<u8> {
    let mut facs = FACS::new();
    // Version 2 is the current FACS layout (64-bit X_FIRMWARE_WAKING_VECTOR).
    facs.version = 2;
    let mut bytes = Vec::with_capacity(FACS_LEN);
    facs.to_aml_bytes(&mut bytes);
    bytes
}
