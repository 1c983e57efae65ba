//! Quiescing a virtio-pci function for a save, and resuming it afterwards.
//!
//! In-flight requests are completed before the state is taken; the state never
//! contains half-done I/O. Quiescing asks the device to finish what its workers have
//! in flight and stop them ([`VirtioDevice::quiesce`]); the workers hand their queues
//! back, positioned after the last completed request (a request taken but not started,
//! like a throttled one, goes back to the available ring). The transport keeps those
//! queues: saving reads their positions, resuming gives the same queues back to the
//! device. Like Firecracker and Cloud Hypervisor, in-flight requests are drained, not
//! recorded.
//!
//! [`VirtioDevice::quiesce`]: crate::virtio::VirtioDevice::quiesce

use super::device::{Run, VirtioPciDevice};
use crate::state::StateError;
use crate::virtio::{DiskVisitor, VirtioInterrupt};

impl VirtioPciDevice {
    /// Complete every request in flight and stop the device's workers, keeping the
    /// queues. Afterwards the device does not write guest memory until
    /// [`VirtioPciDevice::resume_after_quiesce`] (or a reset). Nothing to do when the
    /// driver has not activated the device, or it is already quiesced.
    ///
    /// If the device cannot give its queues back (a worker panicked), it is marked as
    /// needing a reset and the error says so; such a device cannot be saved.
    pub fn quiesce(&mut self) -> Result<(), StateError> {
        if !matches!(self.run, Run::Active) {
            return Ok(());
        }
        match self.device.quiesce() {
            Ok(queues) => {
                self.run = Run::Quiesced(queues);
                Ok(())
            }
            Err(e) => {
                self.run = Run::Failed;
                self.needs_reset();
                Err(e.within(&self.name, ""))
            }
        }
    }

    /// Restart the workers on the queues [`VirtioPciDevice::quiesce`] kept (the VM
    /// keeps running after a save), or on the queues a restore rebuilt (the restored
    /// VM is about to run). Nothing to do unless quiesced.
    pub fn resume_after_quiesce(&mut self) -> Result<(), StateError> {
        let queues = match std::mem::replace(&mut self.run, Run::Inactive) {
            Run::Quiesced(queues) => queues,
            other => {
                self.run = other;
                return Ok(());
            }
        };
        let indices: Vec<u16> = queues.iter().map(|q| q.index).collect();
        let features = self.common.driver_features;
        match self
            .device
            .resume(self.mem.clone(), self.interrupt.clone(), features, queues)
        {
            Ok(()) => {
                self.run = Run::Active;
                if std::mem::take(&mut self.notify_on_resume) {
                    for i in indices {
                        self.interrupt.notify_queue(i);
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.run = Run::Failed;
                self.needs_reset();
                Err(StateError::failed(format!("cannot resume: {e}")).within(&self.name, ""))
            }
        }
    }

    /// [`VirtioDevice::visit_disks`] of the device; refused while it runs (quiesce
    /// it first).
    ///
    /// [`VirtioDevice::visit_disks`]: crate::virtio::VirtioDevice::visit_disks
    pub fn visit_disks(&mut self, visit: &mut DiskVisitor<'_>) -> Result<(), String> {
        if matches!(self.run, Run::Active) {
            return Err(format!("{}: running (quiesce it first)", self.name));
        }
        self.device.visit_disks(visit)
    }

    /// Whether the device's workers are stopped with the queues kept.
    pub fn is_quiesced(&self) -> bool {
        matches!(self.run, Run::Quiesced(_))
    }
}
