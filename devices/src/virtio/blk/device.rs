//! `VirtioBlk`: the virtio-blk device model behind the transport-agnostic
//! [`VirtioDevice`] trait. One request queue of 256 entries, served by a worker thread
//! named `blk-<id>` from activation until reset.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use oxvm_api::DiskConfig;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES};
use virtio_queue::QueueT;

use super::config::{
    bit, config_space, device_features, CONFIG_SIZE, MAX_DISCARD_SECTORS, MAX_WRITE_ZEROES_SECTORS,
    QUEUE_SIZE,
};
use super::execute::Executor;
use super::metrics::BlkMetrics;
use super::request::{RequestLimits, ID_BYTES};
use super::worker::{QueueWorker, StopMode, Worker, WorkerHandle};
use crate::block::{open_disk, DiskBackend, DiskError, SECTOR_SIZE};
use crate::state::StateError;
use crate::virtio::{
    ActivateError, ActiveQueue, DiskVisitor, GuestMemoryMmap, VirtioDevice, VirtioDeviceState,
    VirtioInterrupt, F_RING_EVENT_IDX, TYPE_BLOCK,
};

pub struct VirtioBlk {
    id: String,
    /// Held here while the device is not active; the worker owns it in between.
    backend: Option<Box<dyn DiskBackend>>,
    serial: [u8; ID_BYTES],
    features: u64,
    config: [u8; CONFIG_SIZE],
    capacity_sectors: u64,
    read_only: bool,
    metrics: Arc<BlkMetrics>,
    worker: Option<WorkerHandle>,
}

impl std::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("id", &self.id)
            .field("capacity_sectors", &self.capacity_sectors)
            .field("features", &format_args!("{:#x}", self.features))
            .field("active", &self.worker.is_some())
            .finish()
    }
}

impl VirtioBlk {
    /// A device for `backend`. `serial` (at most 20 bytes are used; the config
    /// validation refuses longer ones) is what GET_ID returns, NUL-padded.
    pub fn new(
        id: impl Into<String>,
        backend: Box<dyn DiskBackend>,
        serial: Option<String>,
    ) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        if let Some(s) = &serial {
            let n = s.len().min(ID_BYTES);
            id_bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        VirtioBlk {
            id: id.into(),
            serial: id_bytes,
            features: device_features(backend.as_ref()),
            config: config_space(backend.as_ref()),
            capacity_sectors: backend.size() / SECTOR_SIZE,
            read_only: backend.is_read_only(),
            backend: Some(backend),
            metrics: Arc::default(),
            worker: None,
        }
    }

    /// Open the disk `cfg` describes ([`open_disk`]) and make a device of it.
    pub fn from_config(cfg: &DiskConfig) -> Result<Self, DiskError> {
        let backend = open_disk(cfg)?;
        Ok(Self::new(cfg.id.clone(), backend, cfg.serial.clone()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity_sectors
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn is_active(&self) -> bool {
        self.worker.is_some()
    }

    /// The device's counters (shared; they survive resets).
    pub fn metrics(&self) -> Arc<BlkMetrics> {
        self.metrics.clone()
    }

    fn thread_name(&self) -> String {
        // Linux keeps 15 bytes of a thread name; a NUL would make spawning panic.
        format!("blk-{}", self.id)
            .replace('\0', "?")
            .chars()
            .take(15)
            .collect()
    }
}

impl VirtioDevice for VirtioBlk {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.config.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Nothing is writable: `wce` only with CONFIG_WCE, which is not offered.
        tracing::debug!(
            "disk {}: ignoring a {}-byte config write at {offset:#x}",
            self.id,
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        mut queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::Other(format!(
                "disk {}: already active",
                self.id
            )));
        }
        if queues.len() != 1 {
            return Err(ActivateError::Other(format!(
                "disk {}: expected 1 queue, got {}",
                self.id,
                queues.len()
            )));
        }
        let ActiveQueue {
            index,
            mut queue,
            kick,
        } = queues.remove(0);
        if index != 0 {
            return Err(ActivateError::BadQueue(
                index,
                "virtio-blk has only queue 0".into(),
            ));
        }
        if !queue.is_valid(&mem) {
            return Err(ActivateError::BadQueue(
                index,
                "descriptor table or rings lie outside guest memory".into(),
            ));
        }
        let acked = driver_features & self.features;
        queue.set_event_idx(acked & F_RING_EVENT_IDX != 0);
        let backend = self.backend.take().ok_or_else(|| {
            ActivateError::Other(format!(
                "disk {}: backend lost after a worker failure",
                self.id
            ))
        })?;
        let limits = RequestLimits {
            capacity_sectors: self.capacity_sectors,
            read_only: self.read_only,
            discard: acked & bit(VIRTIO_BLK_F_DISCARD) != 0,
            write_zeroes: acked & bit(VIRTIO_BLK_F_WRITE_ZEROES) != 0,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_write_zeroes_sectors: MAX_WRITE_ZEROES_SECTORS,
        };
        let worker = QueueWorker {
            id: self.id.clone(),
            mem,
            queue,
            index,
            interrupt,
            executor: Executor::new(
                self.id.clone(),
                backend,
                limits,
                self.serial,
                self.metrics.clone(),
            ),
            stop: Arc::new(AtomicBool::new(false)),
            broken: false,
        };
        let worker = Worker::new(worker);
        let native = matches!(worker, Worker::Native(_));
        match WorkerHandle::spawn(self.thread_name(), worker, kick) {
            Ok(handle) => {
                self.worker = Some(handle);
                tracing::debug!(
                    "disk {}: activated with features {acked:#x}{}",
                    self.id,
                    if native { ", io=native" } else { "" }
                );
                Ok(())
            }
            Err((e, worker)) => {
                self.backend = Some(worker.into_backend());
                Err(ActivateError::Worker(e))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            match worker.stop(StopMode::Reset) {
                Some(stopped) => self.backend = Some(stopped.backend),
                None => tracing::error!(
                    "disk {}: worker thread panicked; the disk stays unusable",
                    self.id
                ),
            }
        }
    }

    fn quiesce(&mut self) -> Result<Vec<ActiveQueue>, StateError> {
        let Some(worker) = self.worker.take() else {
            return Ok(Vec::new());
        };
        match worker.stop(StopMode::Quiesce) {
            Some(stopped) => {
                self.backend = Some(stopped.backend);
                tracing::debug!("disk {}: quiesced", self.id);
                Ok(vec![stopped.queue])
            }
            None => Err(StateError::failed(format!(
                "disk {}: worker thread panicked; its queue is lost",
                self.id
            ))),
        }
    }

    fn visit_disks(&mut self, visit: &mut DiskVisitor<'_>) -> Result<(), String> {
        if self.worker.is_some() {
            return Err(format!("disk {}: active (quiesce it first)", self.id));
        }
        let Some(backend) = self.backend.as_mut() else {
            return Err(format!(
                "disk {}: backend lost after a worker failure",
                self.id
            ));
        };
        visit(&self.id, backend)?;
        // The guest was told the capacity and mode once; a replacement must match.
        if backend.size() / SECTOR_SIZE != self.capacity_sectors
            || backend.is_read_only() != self.read_only
        {
            return Err(format!(
                "disk {}: the replacement image differs in size or mode",
                self.id
            ));
        }
        Ok(())
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Blk(self.state())
    }

    fn check_state(&self, state: &VirtioDeviceState) -> Result<(), StateError> {
        self.check(state).map(drop)
    }

    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), StateError> {
        // Nothing of the disk changes at run time; checking is all there is to do.
        self.check(state).map(drop)
    }
}

impl Drop for VirtioBlk {
    fn drop(&mut self) {
        self.reset();
    }
}
