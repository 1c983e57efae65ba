//! 16550A UART (COM1) on top of `vm_superio::Serial`.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tracing::{debug, error, warn};
use vm_superio::serial::{Error as SuperioError, NoEvents};
use vm_superio::Serial;

use super::byte_io::{read_bytes, write_bytes};
use crate::bus::BusDevice;
use crate::trigger::EventFdTrigger;

mod state;

pub use state::SerialState;

/// A UART occupies 8 consecutive ports (THR/RBR .. SCR).
pub const SERIAL_PORT_LEN: u64 = 8;

/// Why guest input could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SerialInputError {
    /// In practice the receive interrupt could not be raised (the only failure
    /// vm-superio reports here). The bytes were still queued, and the guest sees them
    /// the next time it polls the line status.
    #[error("failed to queue serial input")]
    Queue(#[source] SuperioError<io::Error>),
}

/// The guest's serial console. Output goes to the sink chosen by the VMM (stdout, a
/// log file, or `io::sink()`); input is pushed with [`SerialDevice::enqueue_input`].
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, Output>,
    /// Another handle on the sink the UART writes to: restoring a state builds a new
    /// UART on the same sink (and interrupt), whatever happens to the old one.
    out: Output,
    /// A broken sink (closed pipe, full disk) fails on every byte; warn once, then
    /// only log at debug level so a chatty guest cannot flood the VMM's log.
    output_failed: bool,
}

impl SerialDevice {
    /// `interrupt` is fired on THR-empty and data-ready (register it as the COM1 irqfd).
    ///
    /// No extra flushing wrapper is needed around `out`: vm-superio flushes the sink
    /// after every byte the guest transmits, so a reader of a stdout pipe sees output
    /// immediately (pinned by the `every_byte_is_flushed` test).
    pub fn new(interrupt: EventFdTrigger, out: Box<dyn Write + Send>) -> Self {
        let out = Output(Arc::new(Mutex::new(out)));
        Self {
            serial: Serial::new(interrupt, out.clone()),
            out,
            output_failed: false,
        }
    }

    /// Queue bytes for the guest to read (e.g. from the VMM's stdin). Returns how many
    /// fit in the 64-byte receive FIFO; the caller retries the rest later. A full FIFO
    /// is not an error: it is back-pressure from a guest that is not reading.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, SerialInputError> {
        match self.serial.enqueue_raw_bytes(bytes) {
            Ok(n) => Ok(n),
            Err(SuperioError::FullFifo) => Ok(0),
            Err(e) => Err(SerialInputError::Queue(e)),
        }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        match self.serial.write(reg, value) {
            Ok(()) => {}
            Err(SuperioError::IOError(e)) if !self.output_failed => {
                // The byte is lost, but the guest must keep running.
                warn!(error = %e, "serial output sink failed; dropping guest output");
                self.output_failed = true;
            }
            Err(SuperioError::IOError(e)) => debug!(error = %e, "serial output dropped"),
            Err(e) => error!(error = %e, reg, "serial register write failed"),
        }
    }
}

/// The guest's output sink, shared between the UART and the device. Only the vCPU
/// thread that holds the device's lock writes, so the mutex is never contended.
#[derive(Clone)]
struct Output(Arc<Mutex<Box<dyn Write + Send>>>);

impl Output {
    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(offset, SERIAL_PORT_LEN, data, |reg| self.serial.read(reg));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(offset, SERIAL_PORT_LEN, data, |reg, value| {
            self.write_register(reg, value)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Only exposes bytes once they are flushed, like a buffered stdout would.
    #[derive(Clone, Default)]
    struct Flushed {
        pending: Arc<Mutex<Vec<u8>>>,
        visible: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flushed {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.pending.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            let mut pending = self.pending.lock().unwrap();
            self.visible.lock().unwrap().append(&mut pending);
            Ok(())
        }
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    fn device(out: Box<dyn Write + Send>) -> (SerialDevice, EventFdTrigger) {
        let irq = EventFdTrigger::new().unwrap();
        (SerialDevice::new(irq.try_clone().unwrap(), out), irq)
    }

    fn read1(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn every_byte_is_flushed() {
        let out = Flushed::default();
        let (mut dev, _irq) = device(Box::new(out.clone()));
        for &b in b"hi\n" {
            dev.write(DATA, &[b]);
        }
        assert_eq!(*out.visible.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn thr_empty_interrupt_fires_when_enabled() {
        let (mut dev, irq) = device(Box::new(io::sink()));
        dev.write(IER, &[0x02]);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(read1(&mut dev, IIR) & 0x0f, 0x02);
    }

    #[test]
    fn input_is_readable_and_raises_rx_interrupt() {
        let (mut dev, irq) = device(Box::new(io::sink()));
        dev.write(IER, &[0x01]);
        assert_eq!(dev.enqueue_input(b"ok").unwrap(), 2);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(read1(&mut dev, LSR) & 0x01, 0x01);
        assert_eq!(read1(&mut dev, DATA), b'o');
        assert_eq!(read1(&mut dev, DATA), b'k');
        assert_eq!(read1(&mut dev, LSR) & 0x01, 0);
    }

    #[test]
    fn full_fifo_is_back_pressure_not_an_error() {
        let (mut dev, _irq) = device(Box::new(io::sink()));
        assert_eq!(dev.enqueue_input(&[b'x'; 100]).unwrap(), 64);
        assert_eq!(dev.enqueue_input(b"y").unwrap(), 0);
        assert_eq!(dev.enqueue_input(b"").unwrap(), 0);
    }

    #[test]
    fn broken_sink_does_not_stop_the_guest() {
        let (mut dev, _irq) = device(Box::new(Broken));
        dev.write(DATA, b"a");
        dev.write(DATA, b"b");
        // The UART still works: the scratch register round-trips.
        dev.write(SCR, &[0x5a]);
        assert_eq!(read1(&mut dev, SCR), 0x5a);
    }

    #[test]
    fn odd_widths_and_offsets_never_panic() {
        let (mut dev, _irq) = device(Box::new(io::sink()));
        // A word write at SCR-1 hits LSR+1 (MSR, ignored) and SCR.
        dev.write(SCR - 1, &[0, 0x42]);
        let mut word = [0u8; 2];
        dev.read(SCR, &mut word);
        assert_eq!(word, [0x42, 0xff]);
        let mut dword = [0u8; 4];
        dev.read(u64::MAX - 1, &mut dword);
        assert_eq!(dword, [0xff; 4]);
        dev.write(SERIAL_PORT_LEN, &[1, 2, 3, 4]);
        dev.write(u64::MAX, &[1, 2]);
    }
}
