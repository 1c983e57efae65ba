//! Saving a quiesced virtio-pci function, and restoring a state into a freshly built
//! one (the restoring VMM built the machine from the same VM config and mapped the
//! saved guest memory; the guest must not notice the move).
//!
//! Restoring, after every value was checked (`state.rs`):
//! - the device's own state;
//! - config space, and BAR 0 at the saved address: the kick ioeventfds are registered
//!   at the notify addresses in it (the MMIO bus entry is the caller's: compare
//!   [`VirtioPciDevice::bar_addr`] before and after);
//! - the MSI-X table, re-programming the route of every vector (the restoring
//!   machine's routing table starts empty);
//! - the common configuration and the vectors the interrupt path uses;
//! - ISR, with INTx driven high if something was pending;
//! - if the device was running: queues rebuilt at the saved ring positions and handed
//!   to the device, which continues exactly where the saved one stopped. Each queue's
//!   interrupt is then raised once: an interrupt the quiesce drain raised may not have
//!   reached the saved vCPU state, and a spurious one is harmless (drivers look at the
//!   used ring).

use virtio_queue::QueueT;

use super::device::{Run, VirtioPciDevice};
use super::state::{is_live, CommonCfgState, VirtioPciState, VirtqueueState};
use crate::state::StateError;

impl VirtioPciDevice {
    /// The function's state. Only a quiesced device (or one the driver has not
    /// started) can be saved: a running one may have requests in flight.
    pub fn save_state(&self) -> Result<VirtioPciState, StateError> {
        let err = |reason: &str| Err(StateError::failed(reason).within(&self.name, ""));
        // Ring positions of the queues the device served; the others were never used.
        let mut positions = vec![(0u16, 0u16, false); self.common.queues.len()];
        match &self.run {
            Run::Active => return err("still running: quiesce it before saving"),
            Run::Failed => return err("stopped after a failure; it cannot be saved"),
            Run::Inactive if is_live(self.common.status) => {
                return err("shut down while the driver had it running; it cannot be saved")
            }
            Run::Inactive => {}
            Run::Quiesced(queues) => {
                for q in queues {
                    if let Some(p) = positions.get_mut(usize::from(q.index)) {
                        *p = (
                            q.queue.next_avail(),
                            q.queue.next_used(),
                            q.queue.event_idx_enabled(),
                        );
                    }
                }
            }
        }
        let c = &self.common;
        Ok(VirtioPciState {
            device_type: self.device.device_type(),
            config: self.config.save_state(),
            msix: self.msix().save_state(),
            common: CommonCfgState {
                device_feature_select: c.device_feature_select,
                driver_feature_select: c.driver_feature_select,
                driver_features: c.driver_features,
                msix_config: c.msix_config,
                status: c.status,
                config_generation: c.config_generation,
                queue_select: c.queue_select,
            },
            queues: c
                .queues
                .iter()
                .zip(positions)
                .map(|(q, (next_avail, next_used, event_idx))| VirtqueueState {
                    size: q.size,
                    ready: q.enabled,
                    msix_vector: q.msix_vector,
                    desc_table: q.desc,
                    avail_ring: q.driver,
                    used_ring: q.device,
                    next_avail,
                    next_used,
                    event_idx,
                })
                .collect(),
            isr: self.interrupt.isr(),
            device: self.device.save_state(),
        })
    }

    /// Take over `state` (module comment). Only into a freshly built device; every
    /// value is checked before anything is applied. An error after that (an
    /// ioeventfd that cannot be registered, a worker that cannot start) leaves the
    /// device half restored: the machine must not run.
    pub fn restore_state(&mut self, state: &VirtioPciState) -> Result<(), StateError> {
        let name = self.name.clone();
        self.restore(state).map_err(|e| e.within(&name, ""))
    }

    fn restore(&mut self, s: &VirtioPciState) -> Result<(), StateError> {
        if !matches!(self.run, Run::Inactive) || self.common.status != 0 {
            return Err(StateError::failed(
                "a state can only be restored into a freshly built device",
            ));
        }
        self.check_state(s)?;
        self.device
            .restore_state(&s.device)
            .map_err(|e| e.within("", "device."))?;

        self.config
            .restore_state(&s.config)
            .map_err(|e| e.within("", "config."))?;
        if let Some(bar) = self.config.bars().first().map(|b| b.addr) {
            if bar != self.bar_addr() || !self.notify_registered_at(bar) {
                self.unregister_notify();
                self.register_notify(bar).map_err(|e| {
                    StateError::failed(format!(
                        "cannot register the queue notify ioeventfds in BAR 0 at {bar:#x}: {e}"
                    ))
                })?;
                self.set_bar_addr(bar);
            }
        }
        self.msix()
            .restore_state(&s.msix)
            .map_err(|e| e.within("", "msix."))?;

        let c = &s.common;
        self.common.device_feature_select = c.device_feature_select;
        self.common.driver_feature_select = c.driver_feature_select;
        self.common.driver_features = c.driver_features;
        self.common.msix_config = c.msix_config;
        self.common.status = c.status;
        self.common.config_generation = c.config_generation;
        self.common.queue_select = c.queue_select;
        for (cfg, q) in self.common.queues.iter_mut().zip(&s.queues) {
            cfg.size = q.size;
            cfg.enabled = q.ready;
            cfg.msix_vector = q.msix_vector;
            cfg.desc = q.desc_table;
            cfg.driver = q.avail_ring;
            cfg.device = q.used_ring;
        }
        self.sync_vectors();
        self.interrupt.restore_isr(s.isr);

        if is_live(c.status) {
            let queues = self
                .ready_queues(|i| (s.queues[i].next_avail, s.queues[i].next_used))
                .map_err(|e| StateError::failed(format!("cannot rebuild the queues: {e}")))?;
            // Served from `resume_after_quiesce`, when the restored guest is about to
            // run: until then the device touches neither guest memory nor its disks and
            // taps (an incoming migration waits for the source's go; the source may
            // still take the guest back).
            self.run = Run::Quiesced(queues);
            self.notify_on_resume = true;
        }
        tracing::info!(
            "{}: state restored (BAR 0 at {:#x}, {})",
            self.name,
            self.bar_addr(),
            if is_live(c.status) {
                "queues served once the VM resumes"
            } else {
                "not started by the driver"
            }
        );
        Ok(())
    }
}
