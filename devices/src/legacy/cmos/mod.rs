//! MC146818 CMOS RTC and NVRAM at ports 0x70 (index) / 0x71 (data).
//!
//! Firmware and kernels read the wall-clock time and (SeaBIOS) the RAM size here.
//! The time always comes from the host clock in UTC: the guest cannot set it (writes
//! to the time registers are dropped; a per-VM offset could be added later), and no
//! RTC interrupts are generated (register C always reads 0).

mod civil_time;
mod memory_size;
mod state;

use std::time::SystemTime;

use tracing::debug;

use self::civil_time::UtcTime;
use self::memory_size::memory_size_registers;
use super::byte_io::{read_bytes, write_bytes};
use crate::bus::BusDevice;

pub use state::CmosState;

/// Index port 0x70 and data port 0x71 (see `arch::layout::CMOS_PORT`).
pub const CMOS_PORT_LEN: u64 = 2;

/// Source of the current time, injectable for tests.
pub type CmosClock = Box<dyn Fn() -> SystemTime + Send>;

const INDEX_OFFSET: u8 = 0;
const DATA_OFFSET: u8 = 1;
/// Bit 7 of the index port gates NMIs on a PC; it is not part of the address.
const INDEX_MASK: u8 = 0x7f;
const NVRAM_SIZE: usize = 128;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// 32.768 kHz time base, 1024 Hz periodic rate: what a PC BIOS leaves behind.
const REG_A_DEFAULT: u8 = 0x26;
/// Update-in-progress: never set, since our time is read atomically from the host.
const REG_A_UIP: u8 = 0x80;
/// Binary (not BCD) data mode.
const REG_B_DM: u8 = 0x04;
/// 24-hour mode.
const REG_B_24H: u8 = 0x02;
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Valid RAM and time: the battery is fine.
const REG_D_VRT: u8 = 0x80;
/// PM flag in the hours register in 12-hour mode.
const HOURS_PM: u8 = 0x80;

/// The CMOS RTC/NVRAM device.
pub struct Cmos {
    index: u8,
    nvram: [u8; NVRAM_SIZE],
    clock: CmosClock,
}

impl Cmos {
    /// A CMOS reading the host clock. `mem_below_4g`/`mem_above_4g` are the guest
    /// RAM sizes in bytes, published in the registers SeaBIOS reads.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64) -> Self {
        Self::with_clock(mem_below_4g, mem_above_4g, Box::new(SystemTime::now))
    }

    /// Like [`Cmos::new`] but with the time taken from `clock`.
    pub fn with_clock(mem_below_4g: u64, mem_above_4g: u64, clock: CmosClock) -> Self {
        let mut nvram = [0u8; NVRAM_SIZE];
        nvram[usize::from(REG_A)] = REG_A_DEFAULT;
        nvram[usize::from(REG_B)] = REG_B_DEFAULT;
        for (reg, value) in memory_size_registers(mem_below_4g, mem_above_4g) {
            nvram[usize::from(reg)] = value;
        }
        Self {
            index: 0,
            nvram,
            clock,
        }
    }

    fn read_data(&self) -> u8 {
        match self.index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => self.read_time(self.index),
            REG_A => self.nvram[usize::from(REG_A)] & !REG_A_UIP,
            REG_C => 0,
            REG_D => REG_D_VRT,
            reg => self.nvram[usize::from(reg & INDEX_MASK)],
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                debug!(reg = self.index, value, "guest RTC time write ignored");
            }
            REG_A => self.nvram[usize::from(REG_A)] = value & !REG_A_UIP,
            // Status registers C and D are read-only.
            REG_C | REG_D => {}
            reg => self.nvram[usize::from(reg & INDEX_MASK)] = value,
        }
    }

    fn read_time(&self, reg: u8) -> u8 {
        let now = UtcTime::from_system_time((self.clock)());
        let reg_b = self.nvram[usize::from(REG_B)];
        let encode = |v: u8| if reg_b & REG_B_DM != 0 { v } else { to_bcd(v) };
        match reg {
            REG_SECONDS => encode(now.second),
            REG_MINUTES => encode(now.minute),
            REG_HOURS if reg_b & REG_B_24H != 0 => encode(now.hour),
            REG_HOURS => {
                let h12 = match now.hour % 12 {
                    0 => 12,
                    h => h,
                };
                let pm = if now.hour >= 12 { HOURS_PM } else { 0 };
                encode(h12) | pm
            }
            REG_WEEKDAY => encode(now.weekday),
            REG_DAY => encode(now.day),
            REG_MONTH => encode(now.month),
            REG_YEAR => encode((now.year % 100) as u8),
            REG_CENTURY => encode((now.year / 100 % 100) as u8),
            _ => 0,
        }
    }
}

/// Packed BCD of a value below 100.
fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(offset, CMOS_PORT_LEN, data, |port| match port {
            DATA_OFFSET => self.read_data(),
            // The index port is write-only on a PC.
            _ => 0xff,
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(offset, CMOS_PORT_LEN, data, |port, value| match port {
            INDEX_OFFSET => self.index = value & INDEX_MASK,
            _ => self.write_data(value),
        });
    }
}

#[cfg(test)]
mod tests;
