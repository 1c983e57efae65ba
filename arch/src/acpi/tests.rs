//! The tables are checked the way a guest reads them: find the RSDP by the legacy
//! scan, follow the pointers, and decode fields at their ACPI 6.5 byte offsets.

use std::collections::HashMap;

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

use super::*;

fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

fn setup(num_vcpus: u8) -> (GuestMemoryMmap, GuestAddress) {
    let mem = guest_memory(1 << 20);
    let rsdp = setup_acpi_tables(&mem, &AcpiConfig { num_vcpus }).unwrap();
    (mem, rsdp)
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

/// Linux's acpi_tb_scan_memory_for_rsdp: 16-byte steps over 0xE0000..0xFFFFF, the
/// signature plus a valid checksum over the first 20 bytes (36 for revision >= 2).
fn scan_for_rsdp(mem: &GuestMemoryMmap) -> Option<u64> {
    (0xe0000u64..0x100000).step_by(16).find(|&addr| {
        let b = read(mem, addr, 36);
        &b[..8] == b"RSD PTR " && sum(&b[..20]) == 0 && (b[15] < 2 || sum(&b) == 0)
    })
}

/// Read a System Description Table and check its length and checksum.
fn read_sdt(mem: &GuestMemoryMmap, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
    let header = read(mem, addr, SDT_HEADER_LEN);
    assert_eq!(&header[..4], signature, "signature at {addr:#x}");
    let len = u32_at(&header, 4) as usize;
    assert!(len >= SDT_HEADER_LEN, "{signature:?} length {len}");
    assert!(addr + len as u64 <= layout::ACPI_END);
    let table = read(mem, addr, len);
    assert_eq!(sum(&table), 0, "{signature:?} checksum");
    assert_eq!(&table[10..16], &OEM_ID);
    table
}

/// Every table reachable from the RSDP, by signature.
fn walk(mem: &GuestMemoryMmap) -> HashMap<[u8; 4], (u64, Vec<u8>)> {
    let rsdp_addr = scan_for_rsdp(mem).expect("RSDP not found by the legacy scan");
    let rsdp = read(mem, rsdp_addr, 36);
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = read_sdt(mem, xsdt_addr, b"XSDT");

    let mut tables = HashMap::new();
    for entry in xsdt[SDT_HEADER_LEN..].chunks(8) {
        let addr = u64::from_le_bytes(entry.try_into().unwrap());
        let signature: [u8; 4] = read(mem, addr, 4).try_into().unwrap();
        assert!(
            [*b"FACP", *b"APIC", *b"MCFG"].contains(&signature),
            "unexpected table {signature:?} in the XSDT"
        );
        let table = read_sdt(mem, addr, &signature);
        assert!(tables.insert(signature, (addr, table)).is_none());
    }
    tables.insert(*b"XSDT", (xsdt_addr, xsdt));
    tables
}

#[test]
fn rsdp_found_by_legacy_scan_at_acpi_start() {
    let (mem, rsdp) = setup(1);
    assert_eq!(rsdp, GuestAddress(layout::ACPI_START));
    assert_eq!(scan_for_rsdp(&mem), Some(layout::ACPI_START));
    let b = read(&mem, rsdp.0, 36);
    assert_eq!(sum(&b[..20]), 0);
    assert_eq!(sum(&b), 0);
    assert_eq!(u32_at(&b, 16), 0, "no RSDT");
}

#[test]
fn xsdt_lists_fadt_madt_and_mcfg() {
    let (mem, _) = setup(2);
    let tables = walk(&mem);
    assert!(tables.contains_key(b"FACP"));
    assert!(tables.contains_key(b"APIC"));
    let xsdt = &tables[b"XSDT"].1;
    assert_eq!(xsdt.len(), SDT_HEADER_LEN + 3 * 8);
    // MCFG: one ECAM allocation (base, segment 0, buses 0..=0) after 8 reserved bytes.
    let mcfg = &tables[b"MCFG"].1;
    assert_eq!(mcfg.len(), SDT_HEADER_LEN + 8 + 16);
    assert_eq!(u64_at(mcfg, 44), layout::PCI_ECAM_START);
    assert_eq!((u16_at(mcfg, 52), mcfg[54], mcfg[55]), (0, 0, 0));
}

#[test]
fn dsdt_describes_the_pci_host_bridge() {
    let (mem, _) = setup(1);
    let tables = walk(&mem);
    let fadt = &tables[b"FACP"].1;
    let dsdt = read_sdt(&mem, u64_at(fadt, 140), b"DSDT");
    let has = |s: &[u8]| dsdt.windows(s.len()).any(|w| w == s);
    for name in [&b"PCI0"[..], b"_PRT", b"_CRS", b"_BBN", b"MRES"] {
        assert!(has(name), "{} missing", String::from_utf8_lossy(name));
    }
    // EISA ID of PNP0A08 (PCI Express root bridge), as AML encodes it.
    assert!(has(&[0x41, 0xd0, 0x0a, 0x08]));
}

#[test]
fn fadt_fields() {
    let (mem, _) = setup(1);
    let tables = walk(&mem);
    let fadt = &tables[b"FACP"].1;
    assert_eq!(fadt.len(), 276);
    assert_eq!(fadt[8], 6, "FADT major revision");
    assert_eq!(fadt[131], 5, "FADT minor revision");

    assert_eq!(u16_at(fadt, 46), 9, "SCI_INT");
    assert_eq!(u32_at(fadt, 48), 0, "SMI_CMD");
    assert_eq!(u32_at(fadt, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(fadt, 76), 0, "PM_TMR_BLK");
    assert_eq!(u32_at(fadt, 80), 0, "GPE0_BLK");
    assert_eq!(fadt[88], 4, "PM1_EVT_LEN");
    assert_eq!(fadt[89], 2, "PM1_CNT_LEN");
    assert_eq!(fadt[91], 0, "PM_TMR_LEN");
    assert_eq!(fadt[92], 0, "GPE0_BLK_LEN");

    // X_PM1a_EVT_BLK and X_PM1a_CNT_BLK: system I/O, 32 and 16 bits wide.
    assert_eq!(&fadt[148..152], &[1, 32, 0, 2]);
    assert_eq!(u64_at(fadt, 152), 0x600);
    assert_eq!(&fadt[172..176], &[1, 16, 0, 2]);
    assert_eq!(u64_at(fadt, 176), 0x604);
    assert_eq!(u64_at(fadt, 212), 0, "X_PM_TMR_BLK");
    assert_eq!(u64_at(fadt, 224), 0, "X_GPE0_BLK");

    // RESET_REG: system I/O port 0x608, 8 bits, byte access; RESET_VALUE 0x0e.
    assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
    assert_eq!(u64_at(fadt, 120), 0x608);
    assert_eq!(fadt[128], 0x0e);

    let flags = u32_at(fadt, 112);
    let (wbinvd, proc_c1, pwr_button, slp_button, tmr_val_ext, reset_reg_sup, hw_reduced) =
        (1, 1 << 2, 1 << 4, 1 << 5, 1 << 8, 1 << 10, 1 << 20);
    assert_eq!(flags, wbinvd | proc_c1 | slp_button | reset_reg_sup);
    assert_eq!(flags & (pwr_button | tmr_val_ext | hw_reduced), 0);
    assert_eq!(
        u16_at(fadt, 109),
        0b111,
        "IAPC_BOOT_ARCH: legacy, 8042, no VGA"
    );

    // DSDT: 32-bit and X_ pointers agree.
    let dsdt_addr = u64_at(fadt, 140);
    assert_eq!(u64::from(u32_at(fadt, 40)), dsdt_addr);
    read_sdt(&mem, dsdt_addr, b"DSDT");
    // FACS: FIRMWARE_CTRL only; X_FIRMWARE_CTRL must be 0 when FIRMWARE_CTRL is set.
    let facs_addr = u64::from(u32_at(fadt, 36));
    assert_eq!(u64_at(fadt, 132), 0, "X_FIRMWARE_CTRL");
    assert_eq!(facs_addr % 64, 0, "FACS alignment");
    let facs = read(&mem, facs_addr, 64);
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
    assert!(facs_addr + 64 <= layout::ACPI_END);
}

/// Decode the MADT's interrupt controller structures as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let len = madt[off + 1] as usize;
        assert!(len >= 2 && off + len <= madt.len(), "bad entry at {off}");
        entries.push((madt[off], madt[off..off + len].to_vec()));
        off += len;
    }
    entries
}

#[test]
fn madt_entries_per_vcpu_count() {
    for num_vcpus in [1u8, 2, 8] {
        let (mem, _) = setup(num_vcpus);
        let tables = walk(&mem);
        let madt = &tables[b"APIC"].1;
        assert_eq!(u32_at(madt, 36), 0xfee0_0000, "local APIC address");
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
        let entries = madt_entries(madt);

        let lapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 0).collect();
        assert_eq!(lapics.len(), usize::from(num_vcpus));
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!((e[2], e[3]), (i as u8, i as u8), "UID, APIC ID");
            assert_eq!(u32_at(e, 4), 1, "enabled");
        }

        let ioapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = &ioapics[0].1;
        assert_eq!(io[2], 0, "IOAPIC id");
        assert_eq!(u32_at(io, 4), 0xfec0_0000);
        assert_eq!(u32_at(io, 8), 0, "GSI base");

        let isos: Vec<_> = entries
            .iter()
            .filter(|(t, _)| *t == 2)
            .map(|(_, e)| (e[2], e[3], u32_at(e, 4), u16_at(e, 8)))
            .collect();
        assert_eq!(isos, vec![(0, 0, 2, 0), (0, 9, 9, 0x000d)]);

        let nmis: Vec<_> = entries.iter().filter(|(t, _)| *t == 4).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!(nmis[0].1, vec![4, 6, 0xff, 0, 0, 1]);
        assert_eq!(entries.len(), usize::from(num_vcpus) + 4);
    }
}

#[test]
fn dsdt_has_s5_package() {
    let (mem, _) = setup(1);
    let tables = walk(&mem);
    let dsdt_addr = u64_at(&tables[b"FACP"].1, 140);
    let dsdt = read_sdt(&mem, dsdt_addr, b"DSDT");
    let pos = dsdt
        .windows(4)
        .position(|w| w == b"_S5_")
        .expect("no _S5_ in the DSDT");
    // NameOp '\' "_S5_" PackageOp PkgLength NumElements=4 {BytePrefix 5, BytePrefix 5,
    // ZeroOp, ZeroOp}
    assert_eq!(&dsdt[pos - 2..pos], &[0x08, b'\\']);
    assert_eq!(
        &dsdt[pos + 4..pos + 13],
        &[0x12, 8, 4, 0x0a, 5, 0x0a, 5, 0x00, 0x00]
    );
    assert!(dsdt.windows(4).any(|w| w == b"_SB_"));
}

#[test]
fn tables_are_disjoint_aligned_and_inside_the_acpi_area() {
    let tables = build_acpi_tables(&AcpiConfig { num_vcpus: 255 }).unwrap();
    assert_eq!(tables.rsdp_addr, GuestAddress(layout::ACPI_START));
    let mut end = layout::ACPI_START;
    for t in &tables.tables {
        assert!(t.addr.0 >= end, "{} overlaps the previous table", t.name);
        assert_eq!(t.addr.0 % 8, 0, "{} alignment", t.name);
        end = t.addr.0 + t.bytes.len() as u64;
        assert!(end <= layout::ACPI_END, "{} does not fit", t.name);
    }
}

#[test]
fn zero_vcpus_is_an_error() {
    assert!(matches!(
        build_acpi_tables(&AcpiConfig { num_vcpus: 0 }),
        Err(AcpiError::NoVcpus)
    ));
}

#[test]
fn missing_guest_memory_names_the_table() {
    // RAM ends right where the ACPI area starts.
    let mem = guest_memory(layout::ACPI_START as usize);
    let err = setup_acpi_tables(&mem, &AcpiConfig { num_vcpus: 1 }).unwrap_err();
    assert!(
        matches!(err, AcpiError::GuestMemory { table: "RSDP", .. }),
        "{err}"
    );
}

#[test]
fn placer_reports_the_table_that_does_not_fit() {
    let mut placer = Placer {
        next: layout::ACPI_END - 16,
    };
    assert_eq!(placer.place("XSDT", 16, 8).unwrap(), layout::ACPI_END - 16);
    let err = placer.place("APIC", 1, 8).unwrap_err();
    assert!(matches!(err, AcpiError::NoSpace { table: "APIC", .. }));
    assert!(err.to_string().contains("APIC"), "{err}");
}

/// Not a check: writes the images to `$OXVM_ACPI_DUMP_DIR` (one `<name>.dat` per table)
/// for `iasl -d`. Run with
/// `OXVM_ACPI_DUMP_DIR=/tmp/acpi cargo test -p oxvm-arch acpi::tests::dump -- --ignored`.
#[test]
#[ignore]
fn dump_tables_for_iasl() {
    let dir = std::env::var("OXVM_ACPI_DUMP_DIR").expect("set OXVM_ACPI_DUMP_DIR");
    std::fs::create_dir_all(&dir).unwrap();
    let tables = build_acpi_tables(&AcpiConfig { num_vcpus: 2 }).unwrap();
    for t in &tables.tables {
        let path = std::path::Path::new(&dir).join(format!("{}.dat", t.name.to_lowercase()));
        std::fs::write(path, &t.bytes).unwrap();
    }
}
