//! What the PCI bus needs from a function.

use super::config::BarChange;

pub trait PciDevice: Send {
    /// Read configuration register `reg` (dword index).
    fn config_read(&mut self, reg: usize) -> u32;

    /// Write `data` at byte `offset` of configuration register `reg`; returns the BAR the
    /// write moved, so the bus can move the device's MMIO range.
    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) -> Option<BarChange>;

    /// The BAR moved on the MMIO bus: follow it (e.g. move ioeventfds).
    fn bar_moved(&mut self, _change: &BarChange) {}
}
