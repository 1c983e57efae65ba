//! The guest RAM size as the PC CMOS reports it to firmware (SeaBIOS reads these;
//! the layout matches QEMU's `pc_cmos_init`).

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// (register, value) pairs describing `mem_below_4g` bytes of RAM below 4 GiB and
/// `mem_above_4g` above it.
pub(crate) fn memory_size_registers(mem_below_4g: u64, mem_above_4g: u64) -> [(u8, u8); 11] {
    // Conventional memory in KiB, at most 640.
    let base = (mem_below_4g / KIB).min(640);
    // Extended memory between 1 MiB and 64 MiB in KiB (the 16-bit field saturates).
    let ext = (mem_below_4g.saturating_sub(MIB) / KIB).min(0xffff);
    // Memory between 16 MiB and 4 GiB in 64 KiB units.
    let ext16 = (mem_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
    // Memory above 4 GiB in 64 KiB units, a 24-bit field.
    let high = (mem_above_4g / (64 * KIB)).min(0xff_ffff);
    let b = |v: u64, n: u32| (v >> (8 * n)) as u8;
    [
        (0x15, b(base, 0)),
        (0x16, b(base, 1)),
        (0x17, b(ext, 0)),
        (0x18, b(ext, 1)),
        (0x30, b(ext, 0)),
        (0x31, b(ext, 1)),
        (0x34, b(ext16, 0)),
        (0x35, b(ext16, 1)),
        (0x5b, b(high, 0)),
        (0x5c, b(high, 1)),
        (0x5d, b(high, 2)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(regs: &[(u8, u8)], lo: u8, n: usize) -> u64 {
        let start = regs.iter().position(|r| r.0 == lo).unwrap();
        (0..n).fold(0, |acc, i| acc | u64::from(regs[start + i].1) << (8 * i))
    }

    #[test]
    fn small_machine() {
        let r = memory_size_registers(32 * MIB, 0);
        assert_eq!(get(&r, 0x15, 2), 640);
        assert_eq!(get(&r, 0x17, 2), 31 * 1024);
        assert_eq!(get(&r, 0x30, 2), 31 * 1024);
        assert_eq!(get(&r, 0x34, 2), 16 * 16);
        assert_eq!(get(&r, 0x5b, 3), 0);
    }

    #[test]
    fn large_machine_saturates() {
        let r = memory_size_registers(3 * 1024 * MIB, 5 * 1024 * MIB);
        assert_eq!(get(&r, 0x17, 2), 0xffff);
        assert_eq!(get(&r, 0x34, 2), (3 * 1024 - 16) * 16);
        assert_eq!(get(&r, 0x5b, 3), 5 * 1024 * 16);
        let r = memory_size_registers(u64::MAX, u64::MAX);
        assert_eq!(get(&r, 0x34, 2), 0xffff);
        assert_eq!(get(&r, 0x5b, 3), 0xff_ffff);
    }

    #[test]
    fn tiny_machine_does_not_underflow() {
        let r = memory_size_registers(512 * KIB, 0);
        assert_eq!(get(&r, 0x15, 2), 512);
        assert_eq!(get(&r, 0x17, 2), 0);
        assert_eq!(get(&r, 0x34, 2), 0);
    }
}
