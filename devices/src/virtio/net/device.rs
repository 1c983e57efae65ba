//! The virtio-net device model: features, configuration space, queue layout, and
//! starting/stopping the per-pair workers.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::QueueT;

use oxvm_api::NicConfig;

use super::super::{
    ActivateError, ActiveQueue, GuestMemoryMmap, VirtioDevice, VirtioDeviceState, VirtioInterrupt,
    F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_NET,
};
use super::ctrl::CtrlQueue;
use super::metrics::NetMetrics;
use super::rx::RxQueue;
use super::tx::TxQueue;
use super::worker::{CtrlContext, Worker, WorkerControl, WorkerQueues};
use super::QUEUE_SIZE;
use crate::net::{offload_flags, Tap, TapError};
use crate::state::StateError;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Size of the configuration space we expose: mac[6], status u16, max_virtqueue_pairs
/// u16. (MTU and the later fields go with features we do not offer.)
const CONFIG_LEN: usize = 10;

/// Link state, shared with [`NetLink`] handles so the VMM can change it while the
/// transport owns the device.
pub(super) struct LinkState {
    pub(super) up: AtomicBool,
    interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
}

/// A handle on a NIC's link status (the `status` field's LINK_UP bit).
#[derive(Clone)]
pub struct NetLink(pub(super) Arc<LinkState>);

impl NetLink {
    /// Report the link up or down to the guest (a configuration-change interrupt if the
    /// device is running and the state changed).
    pub fn set_up(&self, up: bool) {
        if self.0.up.swap(up, Ordering::AcqRel) != up {
            let interrupt = self.0.interrupt.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(interrupt) = interrupt.as_ref() {
                interrupt.notify_config();
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Acquire)
    }
}

struct RunningWorker {
    control: Arc<WorkerControl>,
    thread: JoinHandle<WorkerQueues>,
}

/// A virtio-net NIC on a host tap: one queue pair per tap queue (receive queue 2n,
/// transmit queue 2n+1), plus a control queue after them when there are several pairs.
pub struct VirtioNet {
    id: String,
    tap: Arc<Tap>,
    mac: [u8; 6],
    pairs: u16,
    /// Queue pairs the driver uses: 1 until it asks for more on the control queue.
    pub(super) pairs_in_use: Arc<AtomicU16>,
    pub(super) link: NetLink,
    metrics: Arc<NetMetrics>,
    workers: Vec<RunningWorker>,
}

impl VirtioNet {
    /// A NIC named `id` (used in thread names and logs) on `tap` (one queue pair per
    /// tap queue), with guest MAC `mac`. The link starts up.
    pub fn new(id: impl Into<String>, tap: Tap, mac: [u8; 6]) -> Self {
        let pairs = u16::try_from(tap.queues().len()).unwrap_or(u16::MAX);
        Self {
            id: id.into(),
            tap: Arc::new(tap),
            mac,
            pairs,
            pairs_in_use: Arc::new(AtomicU16::new(1)),
            link: NetLink(Arc::new(LinkState {
                up: AtomicBool::new(true),
                interrupt: Mutex::new(None),
            })),
            metrics: Arc::new(NetMetrics::default()),
            workers: Vec::new(),
        }
    }

    /// Open (or create) the configured tap with `cfg.queues` queues, attach it to
    /// `cfg.bridge` if set, and build the NIC. `mac` is the guest MAC the caller chose
    /// (`cfg.mac` parsed, or one derived when absent).
    pub fn from_config(cfg: &NicConfig, mac: [u8; 6]) -> Result<Self, TapError> {
        let tap = Tap::open(&cfg.tap, cfg.queues)?;
        if let Some(bridge) = &cfg.bridge {
            tap.attach_to_bridge(bridge)?;
        }
        Ok(Self::new(cfg.id.clone(), tap, mac))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn queue_pairs(&self) -> u16 {
        self.pairs
    }

    /// Counters, live.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// A handle to change the link status later.
    pub fn link(&self) -> NetLink {
        self.link.clone()
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[..6].copy_from_slice(&self.mac);
        let status = if self.link.is_up() {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        cfg[6..8].copy_from_slice(&status.to_le_bytes());
        cfg[8..10].copy_from_slice(&self.pairs.to_le_bytes());
        cfg
    }

    fn ctrl_queue_index(&self) -> Option<u16> {
        (self.pairs > 1).then(|| 2 * self.pairs)
    }

    /// Stop and join the workers; the queues they give back, in queue order, or an
    /// error if one panicked (its queues are lost).
    fn stop_workers(&mut self) -> Result<Vec<ActiveQueue>, StateError> {
        for w in &self.workers {
            w.control.stop();
        }
        let mut queues = Vec::new();
        let mut panicked = false;
        for w in self.workers.drain(..) {
            match w.thread.join() {
                Ok(q) => queues.extend([q.rx, q.tx].into_iter().chain(q.ctrl)),
                Err(_) => {
                    tracing::error!("net {}: a worker panicked", self.id);
                    panicked = true;
                }
            }
        }
        queues.sort_by_key(|q| q.index);
        if panicked {
            return Err(StateError::failed(format!(
                "net {}: a worker thread panicked; its queues are lost",
                self.id
            )));
        }
        Ok(queues)
    }

    /// Start serving `queues` with `pairs_in_use` of them in use (tap queues attached,
    /// workers reading them); the others wait for the driver's MQ command.
    fn start(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
        pairs_in_use: u16,
    ) -> Result<(), ActivateError> {
        // Whatever ran before is replaced; its queues are not needed.
        let _ = self.stop_workers();
        if driver_features & F_VERSION_1 == 0 {
            return Err(ActivateError::MissingFeatures(F_VERSION_1));
        }
        let event_idx = driver_features & F_RING_EVENT_IDX != 0;
        let mergeable = driver_features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0;
        let multiqueue = driver_features & bit(VIRTIO_NET_F_MQ) != 0;
        let ctrl_negotiated = driver_features & bit(VIRTIO_NET_F_CTRL_VQ) != 0;

        let mut slots: Vec<Option<ActiveQueue>> = Vec::new();
        slots.resize_with(self.queue_max_sizes().len(), || None);
        for mut q in queues {
            let index = q.index;
            let Some(slot) = slots.get_mut(usize::from(index)) else {
                return Err(ActivateError::BadQueue(index, "no such queue".into()));
            };
            if !q.queue.is_valid(&mem) {
                return Err(ActivateError::BadQueue(
                    index,
                    "rings are not inside guest memory".into(),
                ));
            }
            q.queue.set_event_idx(event_idx);
            *slot = Some(q);
        }

        // Pairs the driver set up (all of them with MQ, else only the first).
        let wanted = if multiqueue { self.pairs } else { 1 };
        let mut pairs = Vec::new();
        for pair in 0..wanted {
            let (rx, tx) = (2 * usize::from(pair), 2 * usize::from(pair) + 1);
            match (slots[rx].take(), slots[tx].take()) {
                (Some(rx), Some(tx)) => pairs.push((rx, tx)),
                (None, _) if pair == 0 => {
                    return Err(ActivateError::BadQueue(0, "receive queue not ready".into()))
                }
                (_, None) if pair == 0 => {
                    return Err(ActivateError::BadQueue(
                        1,
                        "transmit queue not ready".into(),
                    ))
                }
                _ => break,
            }
        }
        let ctrl = match self.ctrl_queue_index() {
            Some(index) if ctrl_negotiated => slots[usize::from(index)].take(),
            _ => None,
        };

        // What the guest accepts is what the tap may hand us.
        let offloads = offload_flags(driver_features);
        self.tap
            .set_offload(offloads)
            .map_err(|e| ActivateError::Other(e.to_string()))?;
        // Only the pairs in use get traffic (a fresh driver starts with one and asks
        // for more on the control queue).
        let in_use = usize::from(pairs_in_use.max(1)).min(pairs.len());
        for index in 0..self.tap.queues().len() {
            self.tap
                .set_queue_enabled(index, index < in_use)
                .map_err(|e| ActivateError::Other(e.to_string()))?;
        }
        self.pairs_in_use.store(in_use as u16, Ordering::Release);

        let controls = (0..pairs.len())
            .map(|i| WorkerControl::new(i < in_use).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ctrl = ctrl.map(|q| CtrlContext {
            queue: CtrlQueue::new(q.queue),
            index: q.index,
            kick: q.kick,
            controls: controls.clone(),
            max_pairs: pairs.len() as u16,
            pairs_in_use: self.pairs_in_use.clone(),
        });

        *self
            .link
            .0
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(interrupt.clone());
        for (pair, (rx, tx)) in pairs.into_iter().enumerate() {
            let control = controls[pair].clone();
            let worker = Worker {
                pair: pair as u16,
                mem: mem.clone(),
                interrupt: interrupt.clone(),
                metrics: self.metrics.clone(),
                tap: self.tap.clone(),
                rx: RxQueue::new(rx.queue, mergeable),
                rx_index: rx.index,
                rx_kick: rx.kick,
                tx: TxQueue::new(tx.queue),
                tx_index: tx.index,
                tx_kick: tx.kick,
                ctrl: if pair == 0 { ctrl.take() } else { None },
                control: control.clone(),
            };
            match worker.spawn(format!("net-{}-q{pair}", self.id)) {
                Ok(thread) => self.workers.push(RunningWorker { control, thread }),
                Err(e) => {
                    let _ = self.stop_workers();
                    return Err(ActivateError::Worker(e));
                }
            }
        }
        tracing::info!(
            "net {}: active on tap {}: {} queue pair(s) ({in_use} in use), features {driver_features:#x}, offloads {offloads:#x}",
            self.id,
            self.tap.name(),
            self.workers.len()
        );
        Ok(())
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        let n = 2 * usize::from(self.pairs) + usize::from(self.ctrl_queue_index().is_some());
        vec![QUEUE_SIZE; n]
    }

    fn device_features(&self) -> u64 {
        let mut features = F_VERSION_1
            | F_RING_EVENT_IDX
            | F_RING_INDIRECT_DESC
            | bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_STATUS)
            | bit(VIRTIO_NET_F_CSUM)
            | bit(VIRTIO_NET_F_GUEST_CSUM)
            | bit(VIRTIO_NET_F_HOST_TSO4)
            | bit(VIRTIO_NET_F_HOST_TSO6)
            | bit(VIRTIO_NET_F_HOST_ECN)
            | bit(VIRTIO_NET_F_GUEST_TSO4)
            | bit(VIRTIO_NET_F_GUEST_TSO6)
            | bit(VIRTIO_NET_F_GUEST_ECN)
            | bit(VIRTIO_NET_F_MRG_RXBUF);
        if self.pairs > 1 {
            features |= bit(VIRTIO_NET_F_MQ) | bit(VIRTIO_NET_F_CTRL_VQ);
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.config_space();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // All fields are read-only for a VERSION_1 driver (the MAC is writable only in
        // legacy mode, which we do not offer).
        tracing::debug!(
            "net {}: ignoring a {}-byte config write at {offset}",
            self.id,
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        // The spec starts a multiqueue device with one pair.
        self.start(mem, interrupt, driver_features, queues, 1)
    }

    fn resume(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        driver_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let in_use = self.pairs_in_use.load(Ordering::Acquire);
        self.start(mem, interrupt, driver_features, queues, in_use)
    }

    fn reset(&mut self) {
        // A panicked worker was logged; the driver starts over anyway.
        let _ = self.stop_workers();
        self.pairs_in_use.store(1, Ordering::Release);
        *self
            .link
            .0
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn quiesce(&mut self) -> Result<Vec<ActiveQueue>, StateError> {
        let queues = self.stop_workers()?;
        if !queues.is_empty() {
            tracing::debug!("net {}: quiesced", self.id);
        }
        Ok(queues)
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Net(self.state())
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

impl Drop for VirtioNet {
    fn drop(&mut self) {
        let _ = self.stop_workers();
    }
}
