use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::{GuestMemoryMmap, VirtioDeviceState};
use crate::block::DiskBackend;
use crate::state::StateError;

/// What [`VirtioDevice::visit_disks`] calls for each disk of a device: the disk id
/// and its backend, which it may replace. An error stops the visit.
pub type DiskVisitor<'a> = dyn FnMut(&str, &mut Box<dyn DiskBackend>) -> Result<(), String> + 'a;

/// How a device tells the driver about used buffers and configuration changes. The
/// transport maps this to MSI-X vectors (or the legacy INTx line).
pub trait VirtioInterrupt: Send + Sync {
    /// Queue `queue` has new used buffers.
    fn notify_queue(&self, queue: u16);
    /// The device configuration space changed.
    fn notify_config(&self);
}

/// A queue the driver made ready, and the eventfd the transport signals when the
/// driver notifies (kicks) it.
pub struct ActiveQueue {
    pub index: u16,
    pub queue: Queue,
    pub kick: EventFd,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {0} is not usable: {1}")]
    BadQueue(u16, String),
    #[error("driver did not accept required feature(s) {0:#x}")]
    MissingFeatures(u64),
    #[error("cannot start worker: {0}")]
    Worker(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// A virtio device, independent of the transport that carries it.
pub trait VirtioDevice: Send {
    /// Virtio device type (`super::TYPE_*`).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;

    /// Features the device offers (must include `F_VERSION_1`).
    fn device_features(&self) -> u64;

    /// Read from the device-specific configuration space. Bytes past its end read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Write to the device-specific configuration space (most fields are read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// The driver set DRIVER_OK: start serving `queues` with the negotiated
    /// `driver_features`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;

    /// The driver reset the device (or the VM stops): stop and join the workers and
    /// return to the pre-activation state. Must not block on the guest.
    fn reset(&mut self);

    /// Stop serving the queues without losing them (the VM is being saved): complete
    /// every request in flight, stop and join the workers and hand back the queues
    /// they served, positioned so that nothing taken from an available ring is left
    /// half done: each request is either completed (in the used ring, the driver
    /// interrupted as it asked) or not taken at all. After this the device does not
    /// touch guest memory until [`VirtioDevice::resume`]. Empty when not active.
    fn quiesce(&mut self) -> Result<Vec<ActiveQueue>, StateError>;

    /// Serve `queues` again: those [`VirtioDevice::quiesce`] handed back, or queues
    /// rebuilt from a saved state. Unlike [`VirtioDevice::activate`] this keeps the
    /// state a running driver set up (e.g. net's queue pairs in use) instead of
    /// starting from what a fresh driver expects.
    fn resume(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        self.activate(mem, interrupt, driver_features, queues)
    }

    /// While the device is quiesced or not active (no worker owns its disks): call
    /// `visit` with each disk the device serves, by disk id. The visitor may replace
    /// a backend with one of the same size and mode: a named snapshot puts a new
    /// overlay on top of each disk this way. Stops at the first error, which names
    /// the disk. Devices without disks have nothing to visit.
    fn visit_disks(&mut self, _visit: &mut DiskVisitor<'_>) -> Result<(), String> {
        Ok(())
    }

    /// The device-specific state (the transport saves queues and registers).
    fn save_state(&self) -> VirtioDeviceState;

    /// Whether `state` can be restored into this device (built from the same config).
    fn check_state(&self, state: &VirtioDeviceState) -> Result<(), StateError>;

    /// Take over `state` before the transport resumes the queues. Checked first; on
    /// error nothing changes.
    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), StateError>;
}
