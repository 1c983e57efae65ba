//! ACPI tables of an oxvm guest.
//!
//! The tables are built as byte images first ([`build_acpi_tables`], pure, easy to
//! test) and then copied into guest memory ([`setup_acpi_tables`]). They are packed
//! one after another in the BIOS area `[ACPI_START, ACPI_END)`, RSDP first, so that
//! Linux finds the RSDP by its legacy scan of 0xE0000..0xFFFFF even without
//! `boot_params.acpi_rsdp_addr`:
//!
//! ```text
//! RSDP -> XSDT -> FADT -> FACS
//!              |       -> DSDT
//!              -> MADT
//! ```

mod dsdt;
mod fadt;
mod madt;
mod pci;
#[cfg(test)]
mod tests;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use crate::layout;

/// OEM fields of every table. The FADT's OEM Table ID must match the XSDT's, so all
/// tables share one.
const OEM_ID: [u8; 6] = *b"OXVM  ";
const OEM_TABLE_ID: [u8; 8] = *b"OXVMPC  ";
const OEM_REVISION: u32 = 1;
/// Length of the common System Description Table header.
const SDT_HEADER_LEN: usize = 36;

/// The RSDP must be 16-byte aligned (the legacy scan only looks there).
const RSDP_ALIGN: u64 = 16;
/// Other tables are 8-byte aligned so that their 64-bit fields are naturally aligned.
const TABLE_ALIGN: u64 = 8;

/// What the tables describe. Grows with the machine (PCI/MCFG, CPU hotplug, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs; vCPU `i` has APIC ID `i`. At least 1. u8 because xAPIC IDs
    /// are 8 bits and 0xff is the broadcast ID.
    pub num_vcpus: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables need at least one vCPU")]
    NoVcpus,
    #[error(
        "ACPI table {table} ({len} bytes at {addr:#x}) does not fit below {end:#x}",
        end = layout::ACPI_END
    )]
    NoSpace {
        table: &'static str,
        addr: u64,
        len: usize,
    },
    #[error("failed to write ACPI table {table} to guest memory at {addr:#x}: {source}")]
    GuestMemory {
        table: &'static str,
        addr: u64,
        #[source]
        source: GuestMemoryError,
    },
}

/// One table image and its guest physical address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTable {
    /// Signature ("RSDP" for the RSDP, whose real signature is "RSD PTR ").
    pub name: &'static str,
    pub addr: GuestAddress,
    pub bytes: Vec<u8>,
}

/// All table images, in address order, with every pointer and checksum filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    pub rsdp_addr: GuestAddress,
    pub tables: Vec<AcpiTable>,
}

/// Hands out consecutive, aligned addresses inside the ACPI area.
struct Placer {
    next: u64,
}

impl Placer {
    fn place(&mut self, table: &'static str, len: usize, align: u64) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(align);
        let end = addr.saturating_add(len as u64);
        if end > layout::ACPI_END {
            return Err(AcpiError::NoSpace { table, addr, len });
        }
        self.next = end;
        Ok(addr)
    }
}

/// Build the images of all tables for the addresses they will have in guest memory.
pub fn build_acpi_tables(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    if cfg.num_vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }

    // Tables that contain no pointers can be built before placing anything.
    let dsdt = dsdt::build_dsdt(cfg);
    let facs = fadt::build_facs();
    // Tables listed in the XSDT after the FADT. Later: MCFG, SRAT, ...
    let xsdt_tables: Vec<(&'static str, Vec<u8>)> =
        vec![("APIC", madt::build_madt(cfg)), ("MCFG", pci::build_mcfg())];

    let xsdt_len = SDT_HEADER_LEN + 8 * (1 + xsdt_tables.len());
    let mut placer = Placer {
        next: layout::ACPI_START,
    };
    let rsdp_addr = placer.place("RSDP", Rsdp::len(), RSDP_ALIGN)?;
    let xsdt_addr = placer.place("XSDT", xsdt_len, TABLE_ALIGN)?;
    let fadt_addr = placer.place("FACP", fadt::FADT_LEN, TABLE_ALIGN)?;
    let facs_addr = placer.place("FACS", fadt::FACS_LEN, fadt::FACS_ALIGN)?;
    let dsdt_addr = placer.place("DSDT", dsdt.len(), TABLE_ALIGN)?;
    let mut placed = Vec::with_capacity(xsdt_tables.len());
    for (name, bytes) in xsdt_tables {
        let addr = placer.place(name, bytes.len(), TABLE_ALIGN)?;
        placed.push(AcpiTable {
            name,
            addr: GuestAddress(addr),
            bytes,
        });
    }

    let fadt = fadt::build_fadt(facs_addr, dsdt_addr);
    debug_assert_eq!(fadt.len(), fadt::FADT_LEN);

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    for t in &placed {
        xsdt.add_entry(t.addr.0);
    }
    let mut xsdt_bytes = Vec::with_capacity(xsdt_len);
    xsdt.to_aml_bytes(&mut xsdt_bytes);
    debug_assert_eq!(xsdt_bytes.len(), xsdt_len);

    let mut rsdp = Vec::with_capacity(Rsdp::len());
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut rsdp);

    let mut tables = vec![
        AcpiTable {
            name: "RSDP",
            addr: GuestAddress(rsdp_addr),
            bytes: rsdp,
        },
        AcpiTable {
            name: "XSDT",
            addr: GuestAddress(xsdt_addr),
            bytes: xsdt_bytes,
        },
        AcpiTable {
            name: "FACP",
            addr: GuestAddress(fadt_addr),
            bytes: fadt,
        },
        AcpiTable {
            name: "FACS",
            addr: GuestAddress(facs_addr),
            bytes: facs,
        },
        AcpiTable {
            name: "DSDT",
            addr: GuestAddress(dsdt_addr),
            bytes: dsdt,
        },
    ];
    tables.extend(placed);

    Ok(AcpiTables {
        rsdp_addr: GuestAddress(rsdp_addr),
        tables,
    })
}

/// Build the ACPI tables and write them into guest memory. Returns the RSDP address
/// (for `boot_params.acpi_rsdp_addr` / PVH `rsdp_paddr`).
pub fn setup_acpi_tables<M: GuestMemory>(
    mem: &M,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    let tables = build_acpi_tables(cfg)?;
    for t in &tables.tables {
        mem.write_slice(&t.bytes, t.addr)
            .map_err(|source| AcpiError::GuestMemory {
                table: t.name,
                addr: t.addr.0,
                source,
            })?;
        tracing::debug!(
            table = t.name,
            addr = format_args!("{:#x}", t.addr.0),
            len = t.bytes.len(),
            "ACPI table written"
        );
    }
    Ok(tables.rsdp_addr)
}
