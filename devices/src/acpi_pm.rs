//! ACPI fixed-hardware PM registers: PM1 event/control blocks and the reset register.
//!
//! The FADT points the guest here (see `arch::layout`: PM1a_EVT at 0x600, PM1a_CNT at
//! 0x604, RESET_REG at 0x608; the device spans 0x600..0x610). The guest powers off by
//! writing SLP_TYP=S5|SLP_EN to PM1_CNT, reboots through RESET_REG, and learns about
//! power-button presses through PM1_STS and the (level-triggered) SCI.
//!
//! Guests access these registers at whatever width the FADT and their ACPI code
//! choose (ACPICA may touch PM1_STS and PM1_EN separately or the whole 32-bit
//! PM1_EVT block at once), so the block is a small register file and every access is
//! decomposed into the bytes it covers in each register.

use tracing::{error, info, warn};
use vm_superio::Trigger;

use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::trigger::EventFdTrigger;

mod state;

pub use state::AcpiPmState;

/// Size of the port block (`arch::layout::ACPI_PM_PORT_LEN`).
pub const ACPI_PM_PORT_LEN: u64 = 0x10;

/// PM1_STS / PM1_EN bit 8: the fixed power button.
const PWRBTN: u16 = 1 << 8;
/// PM1_CNT bit 0: events go to the SCI, not SMI. We have no SMM, so the machine is
/// always in ACPI mode (the FADT's SMI_CMD is 0) and this bit always reads 1.
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
/// PM1_CNT bit 13: write-only "enter the sleep state in SLP_TYP now".
const SLP_EN: u16 = 1 << 13;

/// The registers of the block, by offset and width in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// PM1_STS (u16 at +0): write-1-to-clear event status.
    Status,
    /// PM1_EN (u16 at +2): which status bits raise the SCI.
    Enable,
    /// PM1_CNT (u16 at +4).
    Control,
    /// RESET_REG (u8 at +8).
    Reset,
}

impl Reg {
    const ALL: [Reg; 4] = [Reg::Status, Reg::Enable, Reg::Control, Reg::Reset];

    fn offset(self) -> u64 {
        match self {
            Reg::Status => 0,
            Reg::Enable => 2,
            Reg::Control => 4,
            Reg::Reset => 8,
        }
    }

    fn width(self) -> u64 {
        match self {
            Reg::Reset => 1,
            _ => 2,
        }
    }

    /// The register holding block byte `addr`, and that byte's index in it.
    fn at(addr: u64) -> Option<(Reg, u64)> {
        Self::ALL.into_iter().find_map(|r| {
            let byte = addr.checked_sub(r.offset())?;
            (byte < r.width()).then_some((r, byte))
        })
    }
}

/// Platform-specific values the FADT/DSDT advertise to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiPmConfig {
    /// SLP_TYP of the DSDT's `\_S5` package (`arch::layout::S5_SLP_TYP`).
    pub s5_slp_typ: u8,
    /// The FADT's RESET_VALUE (`arch::layout::ACPI_RESET_VALUE`).
    pub reset_value: u8,
}

/// The ACPI PM register block.
pub struct AcpiPmDevice {
    config: AcpiPmConfig,
    pm1_sts: u16,
    pm1_en: u16,
    /// PM1_CNT as last written, without SLP_EN (which never reads back).
    pm1_cnt: u16,
    reset: EventFdTrigger,
    power_off: EventFdTrigger,
    sci: Option<Box<dyn IrqLine>>,
    /// Current SCI level, so the line is only driven on transitions.
    sci_level: bool,
}

impl AcpiPmDevice {
    /// `reset` fires when the guest writes the reset value to RESET_REG, `power_off`
    /// when it enters S5.
    pub fn new(config: AcpiPmConfig, reset: EventFdTrigger, power_off: EventFdTrigger) -> Self {
        Self {
            config,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: SCI_EN,
            reset,
            power_off,
            sci: None,
            sci_level: false,
        }
    }

    /// Connect the SCI. The line is driven to the current level right away, so it can
    /// be attached after state was restored or a button was pressed.
    pub fn set_sci(&mut self, sci: Box<dyn IrqLine>) {
        sci.set_level(self.sci_level);
        self.sci = Some(sci);
    }

    /// Whether the SCI is currently asserted.
    pub fn sci_asserted(&self) -> bool {
        self.sci_level
    }

    /// A press of the fixed power button: latches PWRBTN_STS and, if the guest enabled
    /// PWRBTN_EN, raises the SCI (ACPI-aware guests then shut down cleanly).
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PWRBTN;
        self.update_sci();
    }

    fn update_sci(&mut self) {
        let level = self.pm1_sts & self.pm1_en != 0;
        if level != self.sci_level {
            self.sci_level = level;
            if let Some(sci) = &self.sci {
                sci.set_level(level);
            }
        }
    }

    fn read_reg(&self, reg: Reg) -> u16 {
        match reg {
            Reg::Status => self.pm1_sts,
            Reg::Enable => self.pm1_en,
            Reg::Control => self.pm1_cnt | SCI_EN,
            // Write-only: OSPM never reads it.
            Reg::Reset => 0,
        }
    }

    /// Apply a (possibly partial) write: only the bits in `mask` were written.
    fn write_reg(&mut self, reg: Reg, value: u16, mask: u16) {
        match reg {
            Reg::Status => self.pm1_sts &= !(value & mask),
            Reg::Enable => self.pm1_en = (self.pm1_en & !mask) | (value & mask),
            Reg::Control => {
                let cnt = (self.pm1_cnt & !mask) | (value & mask);
                self.pm1_cnt = cnt & !SLP_EN;
                if cnt & SLP_EN != 0 {
                    self.sleep(((cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT) as u8);
                }
            }
            Reg::Reset => {
                if value as u8 == self.config.reset_value {
                    info!("guest requested reset (ACPI reset register)");
                    fire(&self.reset, "reset");
                }
            }
        }
    }

    fn sleep(&self, slp_typ: u8) {
        if slp_typ == self.config.s5_slp_typ {
            info!("guest requested power-off (ACPI S5)");
            fire(&self.power_off, "power-off");
        } else {
            // Only \_S5 is in the DSDT, so a well-behaved guest never gets here.
            warn!(
                slp_typ,
                "guest requested an unsupported sleep state; ignored"
            );
        }
    }
}

fn fire(trigger: &EventFdTrigger, what: &str) {
    if let Err(e) = trigger.trigger() {
        error!(error = %e, "failed to signal guest {what}");
    }
}

impl BusDevice for AcpiPmDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match offset.checked_add(i as u64).and_then(Reg::at) {
                Some((reg, n)) => (self.read_reg(reg) >> (8 * n)) as u8,
                // Reserved ports inside the block and anything beyond it.
                None => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Gather, per register, the bytes this access covers, then apply each register
        // write once, so e.g. SLP_TYP and SLP_EN written together are seen together.
        let mut parts = Reg::ALL.map(|reg| (reg, 0u16, 0u16));
        for (i, &byte) in data.iter().enumerate() {
            let Some((reg, n)) = offset.checked_add(i as u64).and_then(Reg::at) else {
                continue;
            };
            if let Some(part) = parts.iter_mut().find(|p| p.0 == reg) {
                part.1 |= u16::from(byte) << (8 * n);
                part.2 |= 0xff << (8 * n);
            }
        }
        for (reg, value, mask) in parts {
            if mask != 0 {
                self.write_reg(reg, value, mask);
            }
        }
        self.update_sci();
    }
}

#[cfg(test)]
mod tests;
