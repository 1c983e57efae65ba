//! MADT (signature "APIC"): the interrupt controllers of the machine.
//!
//! acpi_tables' `MADT` type cannot set the MADT flags (we need PCAT_COMPAT) and has no
//! x86 Interrupt Source Override or Local APIC NMI structures, so the table is laid
//! out with the generic `Sdt` builder; the LAPIC and IOAPIC entries reuse the crate's
//! structures.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID, SDT_HEADER_LEN};
use crate::layout;

/// MADT revision 5 (ACPI 6.3+): the revision from which Linux honours the
/// "online capable" LAPIC flag, which CPU hotplug will need.
const MADT_REVISION: u8 = 5;
/// Header, then Local Interrupt Controller Address (u32) and Flags (u32).
const MADT_FIXED_LEN: u32 = SDT_HEADER_LEN as u32 + 8;
const LOCAL_APIC_ADDRESS_OFFSET: usize = SDT_HEADER_LEN;
const MADT_FLAGS_OFFSET: usize = SDT_HEADER_LEN + 4;
/// The machine also has the dual 8259 PICs (KVM's in-kernel irqchip): the OS must
/// mask them before switching to the IOAPIC.
const MADT_PCAT_COMPAT: u32 = 1 << 0;

const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;
/// Interrupt Source Overrides always describe ISA (bus 0) IRQs.
const ISA_BUS: u8 = 0;

/// MPS INTI flags of an Interrupt Source Override.
const MPS_INTI_CONFORMS: u16 = 0;
const MPS_INTI_ACTIVE_HIGH: u16 = 0b01;
const MPS_INTI_LEVEL_TRIGGERED: u16 = 0b11 << 2;

/// Processor UID 0xff in a Local APIC NMI structure means "all processors".
const ALL_PROCESSORS: u8 = 0xff;
/// The BSP's LINT1 is wired to NMI on a PC.
const LINT1: u8 = 1;

/// The only IOAPIC: KVM's in-kernel one, 24 pins starting at GSI 0.
const IOAPIC_ID: u8 = 0;
const IOAPIC_GSI_BASE: u32 = 0;
/// ISA IRQ 0 (PIT) is wired to IOAPIC pin 2 on every PC; KVM's irqchip routes it so.
const PIT_IRQ: u8 = 0;
const PIT_GSI: u32 = 2;

const _: () = assert!(layout::APIC_START <= u32::MAX as u64);
const _: () = assert!(layout::IOAPIC_START <= u32::MAX as u64);
const _: () = assert!(layout::SCI_IRQ <= u8::MAX as u32);

/// Interrupt Source Override (type 2, 10 bytes): ISA `source` IRQ → `gsi`.
fn interrupt_source_override(source: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut s = vec![TYPE_INTERRUPT_SOURCE_OVERRIDE, 10, ISA_BUS, source];
    s.extend_from_slice(&gsi.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s
}

/// Local APIC NMI (type 4, 6 bytes).
fn local_apic_nmi(processor_uid: u8, flags: u16, lint: u8) -> Vec<u8> {
    let mut s = vec![TYPE_LOCAL_APIC_NMI, 6, processor_uid];
    s.extend_from_slice(&flags.to_le_bytes());
    s.push(lint);
    s
}

pub(super) fn build_madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_FIXED_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(LOCAL_APIC_ADDRESS_OFFSET, layout::APIC_START as u32);
    madt.write_u32(MADT_FLAGS_OFFSET, MADT_PCAT_COMPAT);

    let mut entries = Vec::new();
    // vCPU i has APIC ID i (set up so by the vCPU code) and ACPI processor UID i.
    for i in 0..cfg.num_vcpus {
        ProcessorLocalApic::new(i, i, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(IOAPIC_ID, layout::IOAPIC_START as u32, IOAPIC_GSI_BASE).to_aml_bytes(&mut entries);
    entries.extend(interrupt_source_override(
        PIT_IRQ,
        PIT_GSI,
        MPS_INTI_CONFORMS,
    ));
    // The SCI is level triggered, active high (unlike ISA's default edge/high): without
    // this override the guest would program the IOAPIC pin as edge and lose SCIs.
    entries.extend(interrupt_source_override(
        layout::SCI_IRQ as u8,
        layout::SCI_IRQ,
        MPS_INTI_ACTIVE_HIGH | MPS_INTI_LEVEL_TRIGGERED,
    ));
    entries.extend(local_apic_nmi(ALL_PROCESSORS, MPS_INTI_CONFORMS, LINT1));

    madt.append_slice(&entries);
    madt.as_slice().to_vec()
}
