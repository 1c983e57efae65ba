//! A PCI function's 256-byte type-0 configuration space: identity, command/status,
//! BARs and a capability list, with per-bit write masks so the guest can only change
//! what real hardware lets it change.

mod state;

pub use state::PciConfigState;

const NUM_REGS: usize = 64;
const REG_COMMAND: usize = 1;
const REG_BAR0: usize = 4;
const REG_INTERRUPT: usize = 15;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
const CAP_START: usize = 0x40;
/// Command register bits a guest may set: I/O, memory, bus master, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0407;
pub const COMMAND_MEMORY: u32 = 0x2;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Mem32,
    Mem64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub index: usize,
    pub addr: u64,
    pub size: u64,
    pub kind: BarKind,
}

/// A BAR the guest moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarChange {
    pub index: usize,
    pub old: u64,
    pub new: u64,
    pub size: u64,
}

/// Identity of a function.
#[derive(Debug, Clone, Copy)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

pub struct PciConfig {
    regs: [u32; NUM_REGS],
    writable: [u32; NUM_REGS],
    bars: Vec<Bar>,
    next_cap: usize,
    last_cap_next_ptr: Option<usize>,
}

impl PciConfig {
    pub fn new(id: PciId) -> Self {
        let mut regs = [0u32; NUM_REGS];
        regs[0] = u32::from(id.vendor) | (u32::from(id.device) << 16);
        regs[2] = u32::from(id.revision)
            | (u32::from(id.prog_if) << 8)
            | (u32::from(id.subclass) << 16)
            | (u32::from(id.class) << 24);
        regs[11] = u32::from(id.subsystem_vendor) | (u32::from(id.subsystem) << 16);
        let mut writable = [0u32; NUM_REGS];
        writable[REG_COMMAND] = COMMAND_WRITABLE;
        // Interrupt line is scratch for the OS; interrupt pin is read-only.
        writable[REG_INTERRUPT] = 0xff;
        PciConfig {
            regs,
            writable,
            bars: Vec::new(),
            next_cap: CAP_START,
            last_cap_next_ptr: None,
        }
    }

    /// Place a memory BAR at `addr` (`size` a power of two, at least 16 bytes).
    pub fn add_bar(&mut self, index: usize, addr: u64, size: u64, kind: BarKind) {
        assert!(size.is_power_of_two() && size >= 16 && index < 6);
        let mask = !(size - 1);
        match kind {
            BarKind::Mem32 => {
                self.regs[REG_BAR0 + index] = addr as u32;
                self.writable[REG_BAR0 + index] = mask as u32 & !0xf;
            }
            BarKind::Mem64 => {
                assert!(index < 5);
                self.regs[REG_BAR0 + index] = (addr as u32 & !0xf) | 0x4;
                self.regs[REG_BAR0 + index + 1] = (addr >> 32) as u32;
                self.writable[REG_BAR0 + index] = mask as u32 & !0xf;
                self.writable[REG_BAR0 + index + 1] = (mask >> 32) as u32;
            }
        }
        self.bars.push(Bar {
            index,
            addr,
            size,
            kind,
        });
    }

    pub fn bars(&self) -> &[Bar] {
        &self.bars
    }

    /// Set the INTx pin (1 = INTA) and the line the firmware routed it to.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.regs[REG_INTERRUPT] = u32::from(line) | (u32::from(pin) << 8);
    }

    /// Append a capability: `body` starts with the capability ID byte; its next
    /// pointer (byte 1) is filled in here. `writable` gives per-byte write masks for
    /// the body (same length, or empty for read-only). Returns its config offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> usize {
        let off = self.next_cap;
        let len = body.len().max(2);
        assert!(
            off + len <= NUM_REGS * 4,
            "capabilities overflow config space"
        );
        for (i, b) in body.iter().enumerate() {
            self.set_byte(off + i, if i == 1 { 0 } else { *b });
            let m = writable.get(i).copied().unwrap_or(0);
            self.set_mask_byte(off + i, m);
        }
        match self.last_cap_next_ptr {
            Some(p) => self.set_byte(p, off as u8),
            None => {
                self.set_byte(0x34, off as u8);
                self.regs[1] |= STATUS_CAP_LIST;
            }
        }
        self.last_cap_next_ptr = Some(off + 1);
        self.next_cap = (off + len + 3) & !3;
        off
    }

    fn set_byte(&mut self, off: usize, v: u8) {
        let shift = (off % 4) * 8;
        let r = &mut self.regs[off / 4];
        *r = (*r & !(0xff << shift)) | (u32::from(v) << shift);
    }

    fn set_mask_byte(&mut self, off: usize, v: u8) {
        let shift = (off % 4) * 8;
        let r = &mut self.writable[off / 4];
        *r = (*r & !(0xff << shift)) | (u32::from(v) << shift);
    }

    pub fn read_reg(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(0xffff_ffff)
    }

    /// Read bytes at a config-space offset (for capability handling).
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let o = off + i;
            *b = if o < NUM_REGS * 4 {
                (self.regs[o / 4] >> ((o % 4) * 8)) as u8
            } else {
                0xff
            };
        }
    }

    pub fn command(&self) -> u32 {
        self.regs[REG_COMMAND] & 0xffff
    }

    /// Guest write of `data` at byte `offset` within register `reg`. Returns the BAR
    /// that moved, if the write moved one.
    pub fn write(&mut self, reg: usize, offset: u64, data: &[u8]) -> Option<BarChange> {
        if reg >= NUM_REGS || offset as usize + data.len() > 4 {
            return None;
        }
        for (i, b) in data.iter().enumerate() {
            let shift = (offset as usize + i) * 8;
            let mask = (self.writable[reg] >> shift) & 0xff;
            let r = &mut self.regs[reg];
            let old = (*r >> shift) & 0xff;
            let new = (old & !mask) | (u32::from(*b) & mask);
            *r = (*r & !(0xff << shift)) | (new << shift);
        }
        if !(REG_BAR0..REG_BAR0 + 6).contains(&reg) {
            return None;
        }
        for (i, bar) in self.bars.clone().iter().enumerate() {
            let now = self.bar_addr(bar);
            let all_ones = !(bar.size - 1) & self.bar_span_mask(bar);
            // Sizing (all ones written) is not a move, and neither is writing the old
            // address back after sizing. A 64-bit BAR written one half at a time moves
            // twice; each intermediate address is a valid (if odd) placement.
            if now != bar.addr && now != all_ones {
                self.bars[i].addr = now;
                return Some(BarChange {
                    index: bar.index,
                    old: bar.addr,
                    new: now,
                    size: bar.size,
                });
            }
        }
        None
    }

    fn bar_span_mask(&self, bar: &Bar) -> u64 {
        match bar.kind {
            BarKind::Mem32 => 0xffff_ffff,
            BarKind::Mem64 => u64::MAX,
        }
    }

    fn bar_addr(&self, bar: &Bar) -> u64 {
        let lo = u64::from(self.regs[REG_BAR0 + bar.index] & !0xf);
        match bar.kind {
            BarKind::Mem32 => lo,
            BarKind::Mem64 => lo | (u64::from(self.regs[REG_BAR0 + bar.index + 1]) << 32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PciId {
        PciId {
            vendor: 0x1af4,
            device: 0x1042,
            class: 1,
            subclass: 0,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    #[test]
    fn bar_sizing_and_moving() {
        let mut c = PciConfig::new(id());
        c.add_bar(0, 0xc000_0000, 0x1_0000, BarKind::Mem32);
        assert_eq!(c.read_reg(4), 0xc000_0000);
        // Sizing: all ones reads back the size mask, and is not a move.
        assert_eq!(c.write(4, 0, &[0xff; 4]), None);
        assert_eq!(c.read_reg(4), 0xffff_0000);
        // Restoring the address is not a move either.
        assert_eq!(c.write(4, 0, &0xc000_0000u32.to_le_bytes()), None);
        assert_eq!(c.read_reg(4), 0xc000_0000);
        let m = c.write(4, 0, &0xd000_0000u32.to_le_bytes()).unwrap();
        assert_eq!((m.old, m.new, m.size), (0xc000_0000, 0xd000_0000, 0x1_0000));
        assert_eq!(c.bars()[0].addr, 0xd000_0000);
    }

    #[test]
    fn read_only_identity_and_capability_chain() {
        let mut c = PciConfig::new(id());
        c.write(0, 0, &[0, 0, 0, 0]);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        let a = c.add_capability(&[0x09, 0, 16, 1], &[]);
        let b = c.add_capability(&[0x11, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0, 0xc0]);
        assert_eq!((a, b), (0x40, 0x44));
        assert_eq!(c.read_reg(0x34 / 4) & 0xff, 0x40);
        let mut next = [0u8; 1];
        c.read_bytes(0x41, &mut next);
        assert_eq!(next[0], 0x44);
        assert_ne!(c.read_reg(1) & STATUS_CAP_LIST, 0);
        // Only the masked bits of the MSI-X message control are writable.
        c.write(0x44 / 4, 2, &[0xff, 0xff]);
        let mut mc = [0u8; 2];
        c.read_bytes(0x46, &mut mc);
        assert_eq!(mc, [0, 0xc0]);
    }

    #[test]
    fn command_register_mask() {
        let mut c = PciConfig::new(id());
        c.write(1, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.command(), 0x0407);
    }
}
