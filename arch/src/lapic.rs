//! Local APIC wiring of a PC: LINT0 takes the 8259's ExtINT, LINT1 takes NMI.

use kvm_ioctls::VcpuFd;

use crate::ArchError;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const MODE_EXTINT: u32 = 0x7;
const MODE_NMI: u32 = 0x4;

fn get_reg(regs: &[std::os::raw::c_char], offset: usize) -> u32 {
    let b: Vec<u8> = regs[offset..offset + 4].iter().map(|&c| c as u8).collect();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn set_reg(regs: &mut [std::os::raw::c_char], offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut state = vcpu.get_lapic().map_err(ArchError::Kvm)?;
    let lvt0 = get_reg(&state.regs, APIC_LVT0);
    set_reg(
        &mut state.regs,
        APIC_LVT0,
        with_delivery_mode(lvt0, MODE_EXTINT),
    );
    let lvt1 = get_reg(&state.regs, APIC_LVT1);
    set_reg(
        &mut state.regs,
        APIC_LVT1,
        with_delivery_mode(lvt1, MODE_NMI),
    );
    vcpu.set_lapic(&state).map_err(ArchError::Kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_mode_bits() {
        assert_eq!(with_delivery_mode(0x0001_0000, MODE_EXTINT), 0x0001_0700);
        assert_eq!(with_delivery_mode(0x0001_0700, MODE_NMI), 0x0001_0400);
        let mut regs = [0 as std::os::raw::c_char; 1024];
        set_reg(&mut regs, APIC_LVT1, 0xdead_beef);
        assert_eq!(get_reg(&regs, APIC_LVT1), 0xdead_beef);
    }
}
