//! The UART's saved state: its registers and receive FIFO, as vm-superio's
//! `SerialState` has them. The output sink and the interrupt are the restoring
//! machine's own.

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState as SuperioState};
use vm_superio::Serial;

use super::SerialDevice;
use crate::state::StateError;

/// Receive FIFO depth of a 16550A (vm-superio refuses more).
const FIFO_SIZE: usize = 64;
/// IIR bits vm-superio keeps: "no interrupt", THR empty, receive data available.
const IIR_BITS: u8 = 0x07;

/// Registers and receive FIFO of the 16550A.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// Bytes received but not read by the guest yet, oldest first.
    pub in_buffer: Vec<u8>,
}

impl SerialState {
    fn check(&self) -> Result<(), StateError> {
        if self.in_buffer.len() > FIFO_SIZE {
            return Err(StateError::invalid(
                "in_buffer",
                format!(
                    "{} bytes do not fit the {FIFO_SIZE}-byte FIFO",
                    self.in_buffer.len()
                ),
            ));
        }
        if self.interrupt_identification & !IIR_BITS != 0 {
            return Err(StateError::invalid(
                "interrupt_identification",
                format!("{:#04x} has unknown bits", self.interrupt_identification),
            ));
        }
        Ok(())
    }
}

impl SerialDevice {
    pub fn save_state(&self) -> SerialState {
        let s = self.serial.state();
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Take over `state`, keeping this device's output sink and interrupt. A pending
    /// interrupt (enabled and flagged in IIR) is raised again, since the restoring
    /// machine's interrupt line never saw it. On error nothing changes.
    pub fn restore_state(&mut self, state: &SerialState) -> Result<(), StateError> {
        state.check().map_err(|e| e.within("serial", ""))?;
        let trigger = self
            .serial
            .interrupt_evt()
            .try_clone()
            .map_err(|e| StateError::failed(format!("cannot clone the COM1 eventfd: {e}")))?;
        let s = SuperioState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        // Fails only if the interrupt cannot be raised; the old UART (and the shared
        // sink) are then untouched.
        self.serial = Serial::from_state(&s, trigger, NoEvents, self.out.clone())
            .map_err(|e| StateError::failed(format!("cannot raise the COM1 interrupt: {e}")))
            .map_err(|e| e.within("serial", ""))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::bus::BusDevice;
    use crate::trigger::EventFdTrigger;

    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const SCR: u64 = 7;

    fn device() -> (SerialDevice, EventFdTrigger) {
        let irq = EventFdTrigger::new().unwrap();
        (
            SerialDevice::new(irq.try_clone().unwrap(), Box::new(io::sink())),
            irq,
        )
    }

    fn read1(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn registers_fifo_and_pending_interrupt_round_trip() {
        let (mut old, old_irq) = device();
        old.write(LCR, &[0x83]); // DLAB on: the next two set the divisor
        old.write(DATA, &[0x0c]);
        old.write(IER, &[0x00]);
        old.write(LCR, &[0x03]);
        old.write(SCR, &[0x5a]);
        old.write(IER, &[0x01]); // receive interrupt on
        old.enqueue_input(b"hey").unwrap();
        // Saved with the receive interrupt pending (the guest has not looked yet).
        let saved = old.save_state();
        assert_eq!(saved.in_buffer, b"hey");
        assert_eq!(saved.baud_divisor_low, 0x0c);
        drop(old_irq);

        // Through JSON, as a state file carries it.
        let json = serde_json::to_string(&saved).unwrap();
        let saved: SerialState = serde_json::from_str(&json).unwrap();

        let (mut new, irq) = device();
        new.restore_state(&saved).unwrap();
        // Data was pending with the receive interrupt enabled: it is raised again.
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(new.save_state(), saved);
        assert_eq!(read1(&mut new, IIR) & 0x0f, 0x04);
        assert_eq!(read1(&mut new, SCR), 0x5a);
        assert_eq!(read1(&mut new, DATA), b'h');
        assert_eq!(read1(&mut new, DATA), b'e');
        assert_eq!(read1(&mut new, DATA), b'y');
    }

    #[test]
    fn bad_states_are_refused_and_change_nothing() {
        let (mut dev, _irq) = device();
        dev.write(SCR, &[0x11]);
        let mut s = dev.save_state();
        s.in_buffer = vec![b'x'; 65];
        s.scratch = 0x22;
        let e = dev.restore_state(&s).unwrap_err();
        assert!(e.to_string().contains("serial"), "{e}");
        assert!(e.to_string().contains("`in_buffer`"), "{e}");
        let mut s = dev.save_state();
        s.interrupt_identification = 0x80;
        assert!(dev
            .restore_state(&s)
            .unwrap_err()
            .to_string()
            .contains("interrupt_identification"));
        assert_eq!(read1(&mut dev, SCR), 0x11);
        assert!(serde_json::from_str::<SerialState>(
            r#"{"baud_divisor_low":0,"baud_divisor_high":0,"interrupt_enable":0,
            "interrupt_identification":1,"line_control":0,"line_status":0,"modem_control":0,
            "modem_status":0,"scratch":0,"in_buffer":[],"extra":1}"#
        )
        .is_err());
    }
}
