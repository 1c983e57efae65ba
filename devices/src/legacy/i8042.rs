//! Minimal i8042 keyboard controller: just enough for the guest to reset the machine
//! by pulsing the CPU reset line (command 0xFE on port 0x64), the fallback Linux uses
//! when ACPI reset is unavailable.

use tracing::{error, info};
use vm_superio::I8042Device;

use super::byte_io::{read_bytes, write_bytes};
use crate::bus::BusDevice;
use crate::trigger::EventFdTrigger;

mod state;

pub use state::I8042State;

/// The device spans ports 0x60..=0x64 (see `arch::layout::I8042_PORT`); 0x61-0x63 are
/// not part of the controller (0x61 is the PC speaker/NMI port we do not emulate).
pub const I8042_PORT_LEN: u64 = 5;
/// Offset of the data port (0x60).
const DATA_OFFSET: u8 = 0;
/// Offset of the command (write) / status (read) port (0x64).
const COMMAND_OFFSET: u8 = 4;
/// "Pulse output line 0": wired to the CPU reset pin on a PC.
const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 controller; reset requests fire the trigger given to [`I8042::new`].
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// `reset` is fired when the guest asks for a CPU reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            inner: I8042Device::new(reset),
        }
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        match reg {
            // Status 0 = no keyboard data, input buffer empty: the guest's probe
            // finds an idle controller with nothing attached.
            DATA_OFFSET | COMMAND_OFFSET => self.inner.read(reg),
            _ => 0xff,
        }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        if reg != DATA_OFFSET && reg != COMMAND_OFFSET {
            return;
        }
        if reg == COMMAND_OFFSET && value == CMD_RESET_CPU {
            info!("guest requested reset (i8042)");
        }
        if let Err(e) = self.inner.write(reg, value) {
            error!(error = %e, "failed to signal i8042 reset");
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(offset, I8042_PORT_LEN, data, |reg| self.read_register(reg));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(offset, I8042_PORT_LEN, data, |reg, value| {
            self.write_register(reg, value)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (I8042, EventFdTrigger) {
        let reset = EventFdTrigger::new().unwrap();
        (I8042::new(reset.try_clone().unwrap()), reset)
    }

    #[test]
    fn reset_command_fires_the_trigger() {
        let (mut dev, reset) = device();
        dev.write(4, &[CMD_RESET_CPU]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn other_writes_do_not_reset() {
        let (mut dev, reset) = device();
        dev.write(4, &[0xfd]);
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(1, &[CMD_RESET_CPU]);
        dev.write(I8042_PORT_LEN, &[CMD_RESET_CPU]);
        dev.write(u64::MAX, &[CMD_RESET_CPU; 4]);
        assert!(reset.read().is_err(), "no reset expected");
    }

    #[test]
    fn reads() {
        let (mut dev, _reset) = device();
        let mut b = [0xaa];
        dev.read(0, &mut b);
        assert_eq!(b, [0]);
        dev.read(4, &mut b);
        assert_eq!(b, [0]);
        dev.read(2, &mut b);
        assert_eq!(b, [0xff]);
        let mut dword = [0u8; 4];
        dev.read(2, &mut dword);
        assert_eq!(dword, [0xff, 0xff, 0, 0xff]);
    }

    #[test]
    fn wide_access_reaching_the_command_port_resets() {
        let (mut dev, reset) = device();
        dev.write(3, &[0, CMD_RESET_CPU]);
        assert_eq!(reset.read().unwrap(), 1);
    }
}
