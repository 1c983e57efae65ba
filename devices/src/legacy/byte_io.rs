//! Wide accesses to 8-bit port devices.
//!
//! On a PC, a 16- or 32-bit `in`/`out` to an 8-bit ISA device is split by the chipset
//! into byte cycles to consecutive ports (`out 0x70, ax` writes the CMOS index *and*
//! data port). These helpers do the same, so each device only has to handle one byte
//! at a time. Bytes past the device's `len` read as 0xff (open bus) and writes there
//! are dropped: the bus should never deliver them, but a device must not trust that.

/// Fill `data` from consecutive one-byte registers starting at `offset`.
pub(crate) fn read_bytes(offset: u64, len: u64, data: &mut [u8], mut read: impl FnMut(u8) -> u8) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = match in_range(offset, i, len) {
            Some(reg) => read(reg),
            None => 0xff,
        };
    }
}

/// Write `data` to consecutive one-byte registers starting at `offset`.
pub(crate) fn write_bytes(offset: u64, len: u64, data: &[u8], mut write: impl FnMut(u8, u8)) {
    for (i, &byte) in data.iter().enumerate() {
        if let Some(reg) = in_range(offset, i, len) {
            write(reg, byte);
        }
    }
}

/// The register number of byte `i` of an access at `offset`, if it is below `len`
/// (which callers keep <= 256, so the register fits a `u8`).
fn in_range(offset: u64, i: usize, len: u64) -> Option<u8> {
    let reg = offset.checked_add(i as u64)?;
    if reg < len {
        u8::try_from(reg).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_wide_accesses_and_bounds_them() {
        let mut regs = [0u8; 4];
        write_bytes(2, 4, &[1, 2, 3, 4], |r, v| regs[r as usize] = v);
        assert_eq!(regs, [0, 0, 1, 2]);

        let mut data = [0u8; 4];
        read_bytes(1, 4, &mut data, |r| regs[r as usize]);
        assert_eq!(data, [0, 1, 2, 0xff]);

        read_bytes(u64::MAX, 4, &mut data, |_| panic!("out of range"));
        assert_eq!(data, [0xff; 4]);
        write_bytes(u64::MAX, 4, &[1, 2], |_, _| panic!("out of range"));
    }
}
