//! Interrupt delivery for a virtio-pci function: MSI-X vectors when the driver enabled
//! MSI-X, else the legacy INTx line with the ISR status register.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::common_cfg::NO_VECTOR;
use crate::irq::IrqLine;
use crate::pci::Msix;
use crate::virtio::VirtioInterrupt;

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

pub struct PciInterrupt {
    pub msix: Arc<Mutex<Msix>>,
    /// MSI-X vector of each queue and of config changes, as the driver set them.
    pub queue_vectors: Mutex<Vec<u16>>,
    pub config_vector: Mutex<u16>,
    pub isr: AtomicU8,
    intx: Mutex<Box<dyn IrqLine>>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PciInterrupt {
    pub fn new(msix: Arc<Mutex<Msix>>, queues: usize, intx: Box<dyn IrqLine>) -> Self {
        PciInterrupt {
            msix,
            queue_vectors: Mutex::new(vec![NO_VECTOR; queues]),
            config_vector: Mutex::new(NO_VECTOR),
            isr: AtomicU8::new(0),
            intx: Mutex::new(intx),
        }
    }

    fn signal(&self, vector: u16, isr_bit: u8) {
        if lock(&self.msix).trigger(vector) {
            return;
        }
        // INTx: level-triggered, held until the driver reads ISR.
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        lock(&self.intx).set_level(true);
    }

    /// The driver read ISR: return and clear it, and drop the INTx line.
    pub fn read_isr(&self) -> u8 {
        let v = self.isr.swap(0, Ordering::SeqCst);
        lock(&self.intx).set_level(false);
        v
    }

    /// The ISR as a saved state has it (not cleared, unlike a driver read).
    pub fn isr(&self) -> u8 {
        self.isr.load(Ordering::SeqCst)
    }

    /// Take over a saved ISR and drive INTx to match: high while anything is pending,
    /// as it was on the saving machine (the restoring machine's line starts low).
    pub fn restore_isr(&self, isr: u8) {
        self.isr.store(isr, Ordering::SeqCst);
        lock(&self.intx).set_level(isr != 0);
    }

    pub fn reset(&self) {
        lock(&self.queue_vectors).fill(NO_VECTOR);
        *lock(&self.config_vector) = NO_VECTOR;
        self.read_isr();
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn notify_queue(&self, queue: u16) {
        let vector = lock(&self.queue_vectors)
            .get(usize::from(queue))
            .copied()
            .unwrap_or(NO_VECTOR);
        self.signal(vector, ISR_QUEUE);
    }

    fn notify_config(&self) {
        let vector = *lock(&self.config_vector);
        self.signal(vector, ISR_CONFIG);
    }
}
