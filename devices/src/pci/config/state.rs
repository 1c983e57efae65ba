//! A function's saved configuration space: the 64 registers as the guest left them
//! (command register, BAR values, interrupt line, capability bits it may write) and
//! where each BAR decodes.
//!
//! Only the bits the guest can write are taken from a state. The read-only bits
//! (identity, capability list, BAR types) come from the device built from the VM
//! config, and a state whose read-only bits differ was saved from another device: it
//! is refused.

use serde::{Deserialize, Serialize};

use super::{BarKind, PciConfig, NUM_REGS};
use crate::state::StateError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciConfigState {
    /// All 64 dword registers.
    pub regs: Vec<u32>,
    /// The guest-physical address each BAR decodes at, in the order the device
    /// declared them. Kept apart from `regs`: a guest caught between writing all ones
    /// (sizing) and writing the address back has the mask in the register while the
    /// BAR still decodes at its address.
    pub bars: Vec<u64>,
}

impl PciConfig {
    pub fn save_state(&self) -> PciConfigState {
        PciConfigState {
            regs: self.regs.to_vec(),
            bars: self.bars.iter().map(|b| b.addr).collect(),
        }
    }

    /// Whether `state` can be applied to this function.
    pub fn check_state(&self, state: &PciConfigState) -> Result<(), StateError> {
        if state.regs.len() != NUM_REGS {
            return Err(StateError::invalid(
                "regs",
                format!("{} registers, a function has {NUM_REGS}", state.regs.len()),
            ));
        }
        for (i, (&saved, &built)) in state.regs.iter().zip(&self.regs).enumerate() {
            let fixed = !self.writable[i];
            if (saved ^ built) & fixed != 0 {
                return Err(StateError::invalid(
                    format!("regs[{i}]"),
                    format!(
                        "read-only bits {:#010x} differ from the device built from the \
                         config ({:#010x}): saved from another device",
                        saved & fixed,
                        built & fixed
                    ),
                ));
            }
        }
        if state.bars.len() != self.bars.len() {
            return Err(StateError::invalid(
                "bars",
                format!(
                    "{} BARs, the device has {}",
                    state.bars.len(),
                    self.bars.len()
                ),
            ));
        }
        for (i, (&addr, bar)) in state.bars.iter().zip(&self.bars).enumerate() {
            let limit = match bar.kind {
                BarKind::Mem32 => 1u64 << 32,
                BarKind::Mem64 => u64::MAX,
            };
            let fits = addr.checked_add(bar.size).is_some_and(|end| end <= limit);
            if addr % bar.size != 0 || !fits {
                return Err(StateError::invalid(
                    format!("bars[{i}]"),
                    format!(
                        "{addr:#x} is not a place for a {:#x}-byte {:?} BAR",
                        bar.size, bar.kind
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Apply `state` (checked first; on error nothing changes). Moving the MMIO range
    /// and whatever hangs off the BAR addresses is the caller's business: compare
    /// [`PciConfig::bars`] before and after.
    pub fn restore_state(&mut self, state: &PciConfigState) -> Result<(), StateError> {
        self.check_state(state)?;
        for (i, &saved) in state.regs.iter().enumerate() {
            self.regs[i] = (self.regs[i] & !self.writable[i]) | (saved & self.writable[i]);
        }
        for (bar, &addr) in self.bars.iter_mut().zip(&state.bars) {
            bar.addr = addr;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PciId;
    use super::*;

    fn config(device: u16) -> PciConfig {
        let mut c = PciConfig::new(PciId {
            vendor: 0x1af4,
            device,
            class: 1,
            subclass: 0,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        });
        c.add_bar(0, 0xc000_0000, 0x1_0000, BarKind::Mem32);
        c.add_capability(&[0x11, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0, 0xc0]);
        c
    }

    #[test]
    fn guest_writes_and_bar_moves_round_trip() {
        let mut old = config(0x1042);
        old.write(1, 0, &[0x06, 0x04]); // memory + bus master, INTx disable
        old.write(4, 0, &0xd000_0000u32.to_le_bytes());
        old.write(15, 0, &[11]);
        old.write(0x40 / 4, 3, &[0x80]); // MSI-X enable
        let json = serde_json::to_string(&old.save_state()).unwrap();
        let saved: PciConfigState = serde_json::from_str(&json).unwrap();

        let mut new = config(0x1042);
        new.restore_state(&saved).unwrap();
        assert_eq!(new.save_state(), saved);
        assert_eq!(new.command(), 0x0406);
        assert_eq!(new.bars()[0].addr, 0xd000_0000);
        assert_eq!(new.read_reg(15) & 0xff, 11);
    }

    #[test]
    fn a_guest_caught_sizing_keeps_its_decode_address() {
        let mut old = config(0x1042);
        old.write(4, 0, &[0xff; 4]);
        let saved = old.save_state();
        let mut new = config(0x1042);
        new.restore_state(&saved).unwrap();
        assert_eq!(new.read_reg(4), 0xffff_0000);
        assert_eq!(new.bars()[0].addr, 0xc000_0000);
        // Writing the address back is not a move, as on the old machine.
        assert_eq!(new.write(4, 0, &0xc000_0000u32.to_le_bytes()), None);
    }

    #[test]
    fn bad_states_are_refused_and_change_nothing() {
        let mut dev = config(0x1042);
        let other = config(0x1041).save_state();
        let e = dev.restore_state(&other).unwrap_err().to_string();
        assert!(
            e.contains("`regs[0]`") && e.contains("another device"),
            "{e}"
        );

        let mut s = dev.save_state();
        s.regs.pop();
        assert!(dev
            .restore_state(&s)
            .unwrap_err()
            .to_string()
            .contains("`regs`"));
        for addr in [0xd000_8000, 0xffff_0000_0000, !0xffff_u64] {
            let mut s = dev.save_state();
            s.bars[0] = addr;
            s.regs[1] |= 0x0002;
            let e = dev.restore_state(&s).unwrap_err().to_string();
            assert!(e.contains("`bars[0]`"), "{e}");
        }
        let mut s = dev.save_state();
        s.bars.push(0);
        assert!(dev
            .restore_state(&s)
            .unwrap_err()
            .to_string()
            .contains("`bars`"));
        assert_eq!(dev.command(), 0);
        assert_eq!(dev.bars()[0].addr, 0xc000_0000);
    }
}
