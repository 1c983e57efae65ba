//! Boot GDT and the KVM segment descriptors derived from it.

use kvm_bindings::kvm_segment;

/// Encode a GDT entry from access/flags (`0xF0FF` layout: flags nibble, access byte),
/// base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (((base as u64) & 0xff00_0000) << 32)
        | (((base as u64) & 0x00ff_ffff) << 16)
        | ((limit as u64) & 0x0000_ffff)
        | (((limit as u64) & 0x000f_0000) << 32)
        | (((flags as u64) & 0x0000_f0ff) << 40)
}

/// Selectors the Linux 64-bit boot protocol expects: __BOOT_CS = 0x10, __BOOT_DS = 0x18.
pub const CODE_INDEX: u16 = 2;
pub const DATA_INDEX: u16 = 3;
pub const TSS_INDEX: u16 = 4;

/// The boot GDT: null, null, code, data, TSS. `long_mode` picks a 64-bit (L=1) or a
/// 32-bit (D=1, for PVH) code segment; everything is flat.
pub fn boot_gdt(long_mode: bool) -> [u64; 5] {
    let code = if long_mode { 0xa09b } else { 0xc09b };
    [
        0,
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// The KVM view of GDT entry `index` of `table`.
pub fn segment(table: &[u64], index: u16) -> kvm_segment {
    let entry = table[index as usize];
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0xf_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if present == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_code_segment() {
        let gdt = boot_gdt(true);
        assert_eq!(gdt[2], 0x00af_9b00_0000_ffff);
        let cs = segment(&gdt, CODE_INDEX);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.present, cs.s),
            (0x10, 1, 0, 1, 1)
        );
        assert_eq!((cs.type_, cs.limit, cs.base), (0xb, 0xffff_ffff, 0));
        let ds = segment(&gdt, DATA_INDEX);
        assert_eq!((ds.selector, ds.type_, ds.db), (0x18, 3, 1));
        let tr = segment(&gdt, TSS_INDEX);
        assert_eq!((tr.selector, tr.type_, tr.s), (0x20, 0xb, 0));
    }

    #[test]
    fn pvh_code_segment_is_32_bit() {
        let cs = segment(&boot_gdt(false), CODE_INDEX);
        assert_eq!((cs.l, cs.db), (0, 1));
    }
}
