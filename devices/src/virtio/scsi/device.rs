//! `VirtioScsi`: the controller as a [`VirtioDevice`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;

use super::config::ConfigSpace;
use super::lun::{Lun, LunConfig, BLOCK_SIZE, MAX_SERIAL_LEN};
use super::metrics::ScsiMetrics;
use super::process::HeaderSizes;
use super::worker::{Worker, WorkerHandle};
use super::{MAX_TARGETS, NUM_QUEUES, QUEUE_SIZE};
use crate::block::WaitCanceller;
use crate::state::StateError;
use crate::virtio::{
    ActivateError, ActiveQueue, DiskVisitor, GuestMemoryMmap, VirtioDevice, VirtioDeviceState,
    VirtioInterrupt, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_SCSI,
};

/// Why a controller could not be built from its disks.
#[derive(Debug, thiserror::Error)]
pub enum ScsiError {
    #[error("virtio-scsi takes at most {MAX_TARGETS} disks, got {0}")]
    TooManyDisks(usize),
    #[error("disk {id}: {size} bytes is smaller than one {BLOCK_SIZE}-byte block")]
    TooSmall { id: String, size: u64 },
    #[error("disk {id}: the serial must be 1 to {MAX_SERIAL_LEN} printable ASCII characters")]
    InvalidSerial { id: String },
    #[error("disk id {0} is used twice")]
    DuplicateId(String),
}

/// One virtio-scsi controller. Disk `i` of the list given to [`VirtioScsi::new`] is
/// target `i`, LUN 0 (see `lun.rs` for why).
pub struct VirtioScsi {
    pub(super) luns: Arc<[Mutex<Lun>]>,
    pub(super) config: ConfigSpace,
    /// The header sizes the worker uses: the config space's at activation (a later
    /// change takes effect at the next activation). Kept across a quiesce.
    pub(super) active_sizes: Option<HeaderSizes>,
    metrics: ScsiMetrics,
    /// The throttled disks' wait cancellers, so a reset never waits for throttling.
    cancellers: Vec<WaitCanceller>,
    worker: Option<WorkerHandle>,
}

impl VirtioScsi {
    pub fn new(disks: Vec<LunConfig>) -> Result<Self, ScsiError> {
        if disks.len() > MAX_TARGETS {
            return Err(ScsiError::TooManyDisks(disks.len()));
        }
        let mut ids = HashSet::new();
        for d in &disks {
            if !ids.insert(d.id.as_str()) {
                return Err(ScsiError::DuplicateId(d.id.clone()));
            }
            let size = d.backend.size();
            if size < BLOCK_SIZE {
                return Err(ScsiError::TooSmall {
                    id: d.id.clone(),
                    size,
                });
            }
            if let Some(serial) = &d.serial {
                let printable = serial.bytes().all(|b| (0x20..0x7f).contains(&b));
                if serial.is_empty() || serial.len() > MAX_SERIAL_LEN || !printable {
                    return Err(ScsiError::InvalidSerial { id: d.id.clone() });
                }
            }
        }
        let luns: Vec<Lun> = disks
            .into_iter()
            .enumerate()
            // MAX_TARGETS <= 256, so the target always fits.
            .map(|(i, d)| Lun::new(i as u16, d))
            .collect();
        let metrics = ScsiMetrics::new(
            luns.iter()
                .map(|l| (l.id.clone(), l.target, l.metrics.clone()))
                .collect(),
        );
        let config = ConfigSpace::new(luns.len());
        let cancellers = luns
            .iter()
            .filter_map(|l| l.backend.wait_canceller())
            .collect();
        Ok(Self {
            luns: luns.into_iter().map(Mutex::new).collect(),
            config,
            active_sizes: None,
            metrics,
            cancellers,
            worker: None,
        })
    }

    /// Counters of every LUN; the handle stays valid across resets.
    pub fn metrics(&self) -> ScsiMetrics {
        self.metrics.clone()
    }

    /// Number of disks (= targets).
    pub fn num_disks(&self) -> usize {
        self.luns.len()
    }

    pub fn is_active(&self) -> bool {
        self.worker.is_some()
    }
}

impl VirtioDevice for VirtioScsi {
    fn device_type(&self) -> u32 {
        TYPE_SCSI
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; NUM_QUEUES]
    }

    /// No VIRTIO_SCSI_F_* bits: no bidirectional commands are needed (F_INOUT), disks
    /// are fixed (F_HOTPLUG, F_CHANGE) and there is no protection information (F_T10_PI).
    fn device_features(&self) -> u64 {
        F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let sizes = self.config.sizes();
        self.start(mem, interrupt, driver_features, queues, sizes)
    }

    fn resume(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let sizes = self.active_sizes.unwrap_or_else(|| self.config.sizes());
        self.start(mem, interrupt, driver_features, queues, sizes)
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            drop(worker.stop());
        }
        self.active_sizes = None;
        self.config.reset();
    }

    fn quiesce(&mut self) -> Result<Vec<ActiveQueue>, StateError> {
        let Some(mut worker) = self.worker.take() else {
            return Ok(Vec::new());
        };
        let queues = worker.stop().ok_or_else(|| {
            StateError::failed(
                "virtio-scsi worker did not stop cleanly (it panicked or could not be \
                 woken); its queues are lost",
            )
        })?;
        tracing::debug!("virtio-scsi quiesced");
        Ok(queues)
    }

    fn visit_disks(&mut self, visit: &mut DiskVisitor<'_>) -> Result<(), String> {
        if self.worker.is_some() {
            return Err("virtio-scsi: active (quiesce it first)".into());
        }
        let result = self.luns.iter().try_for_each(|lun| {
            let mut lun = lun.lock().unwrap_or_else(|e| e.into_inner());
            let lun = &mut *lun;
            visit(&lun.id, &mut lun.backend)?;
            // The guest read the capacity and mode once; a replacement must match.
            if lun.backend.size() / BLOCK_SIZE != lun.blocks
                || lun.backend.is_read_only() != lun.read_only
            {
                return Err(format!(
                    "disk {}: the replacement image differs in size or mode",
                    lun.id
                ));
            }
            lun.volatile_cache = lun.backend.has_volatile_cache();
            Ok(())
        });
        // A replaced backend brings its own throttle, and its own canceller.
        self.cancellers = self
            .luns
            .iter()
            .filter_map(|l| {
                l.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .backend
                    .wait_canceller()
            })
            .collect();
        result
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Scsi(self.state())
    }

    fn check_state(&self, state: &VirtioDeviceState) -> Result<(), StateError> {
        self.check(state).map(drop)
    }

    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), StateError> {
        let s = self.check(state)?;
        self.apply(s);
        Ok(())
    }
}

impl VirtioScsi {
    /// Start the worker on `queues` with the given header sizes.
    fn start(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        mut queues: Vec<ActiveQueue>,
        sizes: HeaderSizes,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::Other("virtio-scsi is already active".into()));
        }
        if driver_features & F_VERSION_1 == 0 {
            return Err(ActivateError::MissingFeatures(F_VERSION_1));
        }
        let event_idx = driver_features & F_RING_EVENT_IDX != 0;
        for q in &mut queues {
            if usize::from(q.index) >= NUM_QUEUES {
                return Err(ActivateError::BadQueue(q.index, "no such queue".into()));
            }
            if !q.queue.is_valid(&mem) {
                return Err(ActivateError::BadQueue(
                    q.index,
                    "rings are not in guest memory".into(),
                ));
            }
            q.queue.set_event_idx(event_idx);
        }
        tracing::debug!(
            disks = self.luns.len(),
            queues = queues.len(),
            event_idx,
            ?sizes,
            "activating virtio-scsi"
        );
        let worker = Worker::new(mem, interrupt, queues, self.luns.clone(), sizes);
        self.worker = Some(WorkerHandle::spawn(worker, self.cancellers.clone())?);
        self.active_sizes = Some(sizes);
        Ok(())
    }
}
