//! A virtio device on PCI: config space with the virtio capabilities and MSI-X, BAR 0
//! register emulation, and the device status state machine that activates and resets
//! the transport-agnostic device. Quiescing and resuming (for a save) are in
//! `lifecycle.rs`, saving and restoring in `state.rs` and `restore.rs`.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

use super::common_cfg::{CfgAction, CommonCfg};
use super::interrupt::PciInterrupt;
use super::layout::*;
use super::{STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::pci::{BarChange, BarKind, MsiRouter, Msix, MsixVector, PciConfig, PciDevice, PciId};
use crate::virtio::{
    ActiveQueue, GuestMemoryMmap, VirtioDevice, VirtioInterrupt, F_RING_EVENT_IDX, F_VERSION_1,
    TYPE_BLOCK, TYPE_NET, TYPE_SCSI,
};

/// Registers queue-notify addresses with the hypervisor so a guest kick becomes an
/// eventfd signal without a trip through the VMM (KVM_IOEVENTFD).
pub trait IoEventRegistrar: Send + Sync {
    fn register(&self, evt: &EventFd, addr: u64) -> std::io::Result<()>;
    fn unregister(&self, evt: &EventFd, addr: u64) -> std::io::Result<()>;
}

/// What the VMM hands a virtio-pci function when it creates it.
pub struct VirtioPciResources {
    /// Guest-physical address of BAR 0 (`layout::BAR_SIZE` bytes, naturally aligned).
    pub bar_addr: u64,
    /// One vector per queue plus one for configuration changes.
    pub msix_vectors: Vec<MsixVector>,
    pub msi_router: Arc<dyn MsiRouter>,
    pub ioevents: Arc<dyn IoEventRegistrar>,
    /// The INTx line (INTA) and the GSI the DSDT routes it to.
    pub intx: Box<dyn IrqLine>,
    pub intx_gsi: u8,
    pub mem: GuestMemoryMmap,
}

/// Whether the device serves its queues.
pub(super) enum Run {
    /// Not activated yet, or reset.
    Inactive,
    /// The device's workers serve the queues.
    Active,
    /// Stopped for a save (`lifecycle.rs`): the queues wait here, positioned after the
    /// last completed request, to be saved or served again.
    Quiesced(Vec<ActiveQueue>),
    /// Quiescing or resuming failed: stopped until the driver resets the device.
    Failed,
}

pub struct VirtioPciDevice {
    pub(super) name: String,
    pub(super) config: PciConfig,
    pub(super) common: CommonCfg,
    pub(super) device: Box<dyn VirtioDevice>,
    pub(super) device_features: u64,
    pub(super) interrupt: Arc<PciInterrupt>,
    pub(super) msix: Arc<Mutex<Msix>>,
    pub(super) msix_cap: usize,
    kicks: Vec<EventFd>,
    bar_addr: u64,
    /// Where the kick ioeventfds are registered (BAR 0's address), if they are.
    notify_at: Option<u64>,
    ioevents: Arc<dyn IoEventRegistrar>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) run: Run,
    /// Restored from a state: when the queues are served again, interrupt each one
    /// once, so the driver looks at used buffers it may not have seen.
    pub(super) notify_on_resume: bool,
}

fn class_of(device_type: u32) -> (u8, u8) {
    match device_type {
        TYPE_NET => (0x02, 0x00),
        TYPE_BLOCK | TYPE_SCSI => (0x01, 0x00),
        _ => (0xff, 0x00),
    }
}

/// Number of MSI-X vectors a device with `queues` queues gets.
pub fn msix_vector_count(queues: usize) -> usize {
    queues + 1
}

impl VirtioPciDevice {
    /// Wrap `device`; `name` is for logs. Fails only if ioeventfds cannot be registered.
    pub fn new(
        name: String,
        device: Box<dyn VirtioDevice>,
        res: VirtioPciResources,
    ) -> std::io::Result<Self> {
        let queue_sizes = device.queue_max_sizes();
        let device_type = device.device_type();
        let (class, subclass) = class_of(device_type);
        let mut config = PciConfig::new(PciId {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_DEVICE_BASE + device_type as u16,
            class,
            subclass,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x1100,
        });
        config.add_bar(0, res.bar_addr, BAR_SIZE, BarKind::Mem32);
        for (t, off, len) in [
            (CAP_COMMON, COMMON_CFG, COMMON_CFG_LEN),
            (
                CAP_NOTIFY,
                NOTIFY,
                queue_sizes.len() as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
            ),
            (CAP_ISR, ISR, ISR_LEN),
            (CAP_DEVICE, DEVICE_CFG, DEVICE_CFG_LEN),
        ] {
            config.add_capability(&virtio_cap(t, off, len), &[]);
        }
        let msix_vectors = u16::try_from(res.msix_vectors.len()).unwrap_or(u16::MAX);
        let msix = Msix::new(res.msix_vectors, res.msi_router);
        let (cap, mask) = msix.capability(0, MSIX_TABLE as u32, MSIX_PBA as u32);
        let msix_cap = config.add_capability(&cap, &mask);
        config.set_interrupt(1, res.intx_gsi);
        let msix = Arc::new(Mutex::new(msix));
        let interrupt = Arc::new(PciInterrupt::new(msix.clone(), queue_sizes.len(), res.intx));
        let kicks = (0..queue_sizes.len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut dev = VirtioPciDevice {
            name,
            config,
            common: CommonCfg::new(&queue_sizes, msix_vectors),
            device_features: device.device_features() | F_VERSION_1,
            device,
            interrupt,
            msix,
            msix_cap,
            kicks,
            bar_addr: res.bar_addr,
            notify_at: None,
            ioevents: res.ioevents,
            mem: res.mem,
            run: Run::Inactive,
            notify_on_resume: false,
        };
        dev.register_notify(res.bar_addr)?;
        Ok(dev)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bar_addr(&self) -> u64 {
        self.bar_addr
    }

    pub(super) fn set_bar_addr(&mut self, bar: u64) {
        self.bar_addr = bar;
    }

    pub(super) fn notify_registered_at(&self, bar: u64) -> bool {
        self.notify_at == Some(bar)
    }

    /// Stop the device's workers (VM teardown or unplug).
    pub fn shutdown(&mut self) {
        if !matches!(self.run, Run::Inactive) {
            self.device.reset();
            self.run = Run::Inactive;
        }
    }

    /// Register the queues' kick ioeventfds at their notify addresses in a BAR 0 at
    /// `bar`. All are tried; the first error is returned.
    pub(super) fn register_notify(&mut self, bar: u64) -> std::io::Result<()> {
        self.notify_at = Some(bar);
        let mut result = Ok(());
        for (q, k) in self.kicks.iter().enumerate() {
            if let Err(e) = self.ioevents.register(k, notify_addr(bar, q)) {
                tracing::warn!("{}: register ioeventfd: {e}", self.name);
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Unregister the kick ioeventfds (the BAR is about to move). Kicks still work
    /// meanwhile, through the MMIO exit path.
    pub fn unregister_notify(&mut self) {
        let Some(bar) = self.notify_at.take() else {
            return;
        };
        for (q, k) in self.kicks.iter().enumerate() {
            if let Err(e) = self.ioevents.unregister(k, notify_addr(bar, q)) {
                tracing::warn!("{}: unregister ioeventfd: {e}", self.name);
            }
        }
    }

    /// Interrupt the driver about a failure that needs a device reset.
    pub(super) fn needs_reset(&mut self) {
        self.common.status |= STATUS_NEEDS_RESET;
        self.common.config_generation = self.common.config_generation.wrapping_add(1);
        self.interrupt.notify_config();
    }

    fn reset(&mut self) {
        self.shutdown();
        self.common.reset();
        self.interrupt.reset();
        for k in &self.kicks {
            let _ = k.read();
        }
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            tracing::debug!("{}: driver reset the device", self.name);
            self.reset();
            return;
        }
        let old = self.common.status;
        let mut new = value | (old & STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let f = self.common.driver_features;
            if f & !self.device_features != 0 || f & F_VERSION_1 == 0 {
                tracing::warn!(
                    "{}: driver features {f:#x} not acceptable (offered {:#x})",
                    self.name,
                    self.device_features
                );
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            if new & STATUS_FEATURES_OK == 0 {
                new &= !STATUS_DRIVER_OK;
            } else if let Err(e) = self.activate() {
                tracing::error!("{}: activation failed: {e}", self.name);
                self.needs_reset();
                new |= STATUS_NEEDS_RESET;
            }
        }
        self.common.status = new;
    }

    fn activate(&mut self) -> Result<(), crate::virtio::ActivateError> {
        let features = self.common.driver_features;
        let queues = self.ready_queues(|_| (0, 0))?;
        self.device
            .activate(self.mem.clone(), self.interrupt.clone(), features, queues)?;
        self.run = Run::Active;
        tracing::info!("{}: activated (features {features:#x})", self.name);
        Ok(())
    }

    /// The queues the driver enabled, as the device gets them, each starting at the
    /// ring positions `position(index)` gives: (next available, next used).
    pub(super) fn ready_queues(
        &self,
        position: impl Fn(usize) -> (u16, u16),
    ) -> Result<Vec<ActiveQueue>, crate::virtio::ActivateError> {
        use crate::virtio::ActivateError;
        let event_idx = self.common.driver_features & F_RING_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (i, qc) in self.common.queues.iter().enumerate() {
            if !qc.enabled {
                continue;
            }
            let bad = |e: String| ActivateError::BadQueue(i as u16, e);
            let (next_avail, next_used) = position(i);
            // Checks the size and the rings' alignment.
            let q = Queue::try_from(QueueState {
                max_size: qc.max_size,
                next_avail,
                next_used,
                event_idx_enabled: event_idx,
                size: qc.size,
                ready: true,
                desc_table: qc.desc,
                avail_ring: qc.driver,
                used_ring: qc.device,
            })
            .map_err(|e| bad(e.to_string()))?;
            if !virtio_queue::QueueT::is_valid(&q, &self.mem) {
                return Err(bad("rings lie outside guest memory".into()));
            }
            queues.push(ActiveQueue {
                index: i as u16,
                queue: q,
                kick: self.kicks[i].try_clone()?,
            });
        }
        Ok(queues)
    }

    /// Mirror the driver's vector choices into the interrupt path.
    pub(super) fn sync_vectors(&self) {
        *self
            .interrupt
            .config_vector
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.common.msix_config;
        let mut qv = self
            .interrupt
            .queue_vectors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (v, q) in qv.iter_mut().zip(&self.common.queues) {
            *v = q.msix_vector;
        }
    }

    pub(super) fn msix(&self) -> std::sync::MutexGuard<'_, Msix> {
        self.msix.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn notify_addr(bar: u64, queue: usize) -> u64 {
    bar + NOTIFY + queue as u64 * u64::from(NOTIFY_OFF_MULTIPLIER)
}

fn within(offset: u64, len: usize, start: u64, size: u64) -> bool {
    offset >= start && offset + len as u64 <= start + size
}

impl BusDevice for VirtioPciDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if within(offset, data.len(), COMMON_CFG, COMMON_CFG_LEN) {
            self.common
                .read(offset - COMMON_CFG, data, self.device_features);
        } else if within(offset, data.len(), ISR, ISR_LEN) {
            data[0] = self.interrupt.read_isr();
        } else if within(offset, data.len(), DEVICE_CFG, DEVICE_CFG_LEN) {
            self.device.read_config(offset - DEVICE_CFG, data);
        } else if within(offset, data.len(), MSIX_TABLE, self.msix().table_size()) {
            self.msix().read_table(offset - MSIX_TABLE, data);
        } else if within(offset, data.len(), MSIX_PBA, self.msix().pba_size()) {
            self.msix().read_pba(offset - MSIX_PBA, data);
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if within(offset, data.len(), COMMON_CFG, COMMON_CFG_LEN) {
            let action = self.common.write(offset - COMMON_CFG, data);
            self.sync_vectors();
            if let CfgAction::Status(s) = action {
                self.set_status(s);
            }
        } else if within(offset, data.len(), DEVICE_CFG, DEVICE_CFG_LEN) {
            self.device.write_config(offset - DEVICE_CFG, data);
        } else if within(offset, data.len(), NOTIFY, NOTIFY_LEN) {
            // Reached only when the ioeventfd did not catch the write.
            let q = ((offset - NOTIFY) / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
            if let Some(k) = self.kicks.get(q) {
                let _ = k.write(1);
            }
        } else if within(offset, data.len(), MSIX_TABLE, self.msix().table_size()) {
            self.msix().write_table(offset - MSIX_TABLE, data);
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read_reg(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) -> Option<BarChange> {
        let change = self.config.write(reg, offset, data);
        let start = reg * 4 + offset as usize;
        let ctrl_at = self.msix_cap + 2;
        if start < ctrl_at + 2 && ctrl_at < start + data.len() {
            let mut ctrl = [0u8; 2];
            self.config.read_bytes(ctrl_at, &mut ctrl);
            self.msix().set_control(u16::from_le_bytes(ctrl));
        }
        change
    }

    fn bar_moved(&mut self, change: &BarChange) {
        self.unregister_notify();
        // Failures are logged; kicks then take the (slower) MMIO exit path.
        let _ = self.register_notify(change.new);
        self.bar_addr = change.new;
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}
