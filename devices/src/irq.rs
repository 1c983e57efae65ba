//! Level-triggered interrupt lines.
//!
//! Edge interrupts can use an irqfd ([`crate::EventFdTrigger`]); a level-triggered line
//! (like the ACPI SCI) must also be deasserted, which an eventfd cannot express. The
//! VMM implements this trait on top of `KVM_IRQ_LINE` (or a resample irqfd pair).

/// A level-triggered interrupt line driven by a device.
pub trait IrqLine: Send {
    /// Drive the line high (asserted) or low (deasserted).
    fn set_level(&self, high: bool);
}

/// Lets the VMM pass a closure (`Box::new(move |high| vm.set_irq_line(9, high))`).
impl<F: Fn(bool) + Send> IrqLine for F {
    fn set_level(&self, high: bool) {
        self(high)
    }
}
