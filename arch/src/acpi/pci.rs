//! The PCI host bridge in the DSDT (`\_SB_.PCI0`) and the MCFG that points the OS at
//! ECAM.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package, Path,
    ResourceTemplate, IO,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::Aml;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{
    pci_intx_gsi, PCI_CONFIG_PORT, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_END, PCI_MMIO32_START,
};

const SLOTS: u32 = 32;

/// `\_SB_.PCI0`: a PCI Express host bridge for segment 0, bus 0, with its resource
/// windows (_CRS) and legacy interrupt routing (_PRT).
pub(super) fn host_bridge_aml(aml: &mut Vec<u8>) {
    let bus = AddressSpace::<u16>::new_bus_number(0, 0);
    let cfg_ports = IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0x0000, PCI_CONFIG_PORT - 1, None);
    let io_high = AddressSpace::<u16>::new_io(0x0d00, 0xffff, None);
    let mmio32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_END - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &cfg_ports, &io_low, &io_high, &mmio32]);

    // One entry per slot and pin: Package { address (slot << 16 | 0xFFFF), pin, 0, GSI }.
    let entries: Vec<(u32, u32, u32, u32)> = (0..SLOTS)
        .flat_map(|s| (0..4).map(move |p| ((s << 16) | 0xffff, p, 0u32, pci_intx_gsi(s, p))))
        .collect();
    let packages: Vec<Package> = entries
        .iter()
        .map(|(a, p, src, gsi)| Package::new(vec![a, p, src, gsi]))
        .collect();
    let prt = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());

    let hid = EISAName::new("PNP0A08");
    let cid = EISAName::new("PNP0A03");
    let zero = 0u8;
    let hid_n = Name::new(Path::new("_HID"), &hid);
    let cid_n = Name::new(Path::new("_CID"), &cid);
    let adr_n = Name::new(Path::new("_ADR"), &zero);
    let seg_n = Name::new(Path::new("_SEG"), &zero);
    let uid_n = Name::new(Path::new("_UID"), &zero);
    let bbn_n = Name::new(Path::new("_BBN"), &zero);
    let crs_n = Name::new(Path::new("_CRS"), &crs);
    let prt_n = Name::new(Path::new("_PRT"), &prt);
    Device::new(
        Path::new("PCI0"),
        vec![
            &hid_n, &cid_n, &adr_n, &seg_n, &uid_n, &bbn_n, &crs_n, &prt_n,
        ],
    )
    .to_aml_bytes(aml);

    // Motherboard resources: the ECAM window. Linux only trusts MCFG when the window
    // is also reserved here (or in e820).
    let mb_hid = EISAName::new("PNP0C02");
    let ecam = Memory32Fixed::new(false, PCI_ECAM_START as u32, PCI_ECAM_SIZE as u32);
    let mb_crs = ResourceTemplate::new(vec![&ecam]);
    let one = 1u8;
    let mb_hid_n = Name::new(Path::new("_HID"), &mb_hid);
    let mb_uid_n = Name::new(Path::new("_UID"), &one);
    let mb_crs_n = Name::new(Path::new("_CRS"), &mb_crs);
    Device::new(Path::new("MRES"), vec![&mb_hid_n, &mb_uid_n, &mb_crs_n]).to_aml_bytes(aml);
}

/// MCFG: ECAM of segment 0, bus 0 only.
pub(super) fn build_mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(PCI_ECAM_START, 0, 0, 0);
    let mut bytes = Vec::new();
    mcfg.to_aml_bytes(&mut bytes);
    bytes
}
