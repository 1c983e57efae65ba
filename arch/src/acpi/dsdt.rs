//! DSDT: the AML namespace of the machine.
//!
//! For now it only carries what the fixed hardware needs: the `\_S5_` sleep package
//! that tells the OS which SLP_TYP to write to PM1a_CNT to power off. Everything that
//! is not fixed hardware goes under `\_SB_` as it is added: the PCI host bridge (with
//! its _PRT and _CRS), COM1 (PNP0501), hotplug methods. The power button needs no
//! device: the FADT declares it as a fixed-feature button.

use acpi_tables::aml::{Name, Package, Path, Scope};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID, SDT_HEADER_LEN};
use crate::layout;

/// DSDT revision 2: integers in the AML are 64 bits wide.
const DSDT_REVISION: u8 = 2;

pub(super) fn build_dsdt(_cfg: &AcpiConfig) -> Vec<u8> {
    let mut aml = Vec::new();

    // System bus scope: the PCI host bridge and motherboard resources.
    let mut sb = Vec::new();
    super::pci::host_bridge_aml(&mut sb);
    let sb = RawAml(sb);
    let sb_devices: Vec<&dyn Aml> = vec![&sb];
    Scope::new(Path::new("\\_SB_"), sb_devices).to_aml_bytes(&mut aml);

    // \_S5_: Package { SLP_TYPa, SLP_TYPb, reserved, reserved }. Only PM1a exists, but
    // SLP_TYPb is conventionally the same value (as in QEMU's and OVMF's tables).
    let slp_typ = layout::S5_SLP_TYP;
    let zero = 0u8;
    Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&slp_typ, &slp_typ, &zero, &zero]),
    )
    .to_aml_bytes(&mut aml);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        SDT_HEADER_LEN as u32,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&aml);
    dsdt.as_slice().to_vec()
}

/// Already-encoded AML placed as is inside a scope.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}
