//! Quiescing, saving and restoring the virtio-pci functions of the bus.
//!
//! The caller pauses the vCPUs first. Saving: [`PciBus::quiesce_all`] (every request
//! in flight completes, workers stop with their queues kept), [`PciBus::save_state`],
//! then [`PciBus::resume_all`] if the VM keeps running. Restoring: into a bus built
//! from the same VM config (same devices in the same slots), on the saved guest
//! memory, before the vCPUs run: [`PciBus::restore_state`].

use oxvm_devices::virtio::pci::layout::BAR_SIZE;
use oxvm_devices::virtio::DiskVisitor;
use oxvm_devices::StateError;

use super::{PciBus, PciSlot};
use crate::devices::state::{PciBusState, PciSlotState};
use crate::error::VmmError;

fn state_err(e: StateError) -> VmmError {
    VmmError::Device(format!("device state: {e}"))
}

impl PciBus {
    /// Complete every request in flight and stop every device's workers, keeping
    /// their queues; afterwards no device writes guest memory until
    /// [`PciBus::resume_all`]. All devices are quiesced even if one fails; the first
    /// failure is returned (that device cannot be saved).
    pub fn quiesce_all(&self) -> Result<(), VmmError> {
        let mut result = Ok(());
        for d in &self.devices {
            if let Err(e) = d.lock().quiesce() {
                tracing::error!("{e}");
                result = result.and(Err(state_err(e)));
            }
        }
        result
    }

    /// Restart the workers stopped by [`PciBus::quiesce_all`] on the same queues (the
    /// VM goes on after a save). All devices are tried; the first failure is
    /// returned (that device then needs a reset by its driver).
    pub fn resume_all(&self) -> Result<(), VmmError> {
        let mut result = Ok(());
        for d in &self.devices {
            if let Err(e) = d.lock().resume_after_quiesce() {
                tracing::error!("{e}");
                result = result.and(Err(state_err(e)));
            }
        }
        result
    }

    /// Visit every disk of every function (see `VirtioDevice::visit_disks`), in slot
    /// order; the functions must be quiesced or inactive. Stops at the first error.
    pub fn visit_disks(&self, visit: &mut DiskVisitor<'_>) -> Result<(), String> {
        self.devices
            .iter()
            .try_for_each(|d| d.lock().visit_disks(visit))
    }

    /// Every function's state, by slot. Refused while a device still runs (call
    /// [`PciBus::quiesce_all`] first).
    pub fn save_state(&self) -> Result<PciBusState, VmmError> {
        let devices = self
            .devices
            .iter()
            .map(|d| {
                Ok(PciSlotState {
                    slot: d.slot,
                    name: d.name.clone(),
                    state: d.lock().save_state().map_err(state_err)?,
                })
            })
            .collect::<Result<_, VmmError>>()?;
        Ok(PciBusState { devices })
    }

    /// Take over `state`: each saved function goes to the function in the same slot
    /// with the same name, and every function must have one. Every state is checked
    /// before any is applied. Then BARs the guest had moved are moved on the MMIO bus
    /// (all taken off first, so two functions whose BARs were swapped do not
    /// collide), the kick ioeventfds and MSI-X routes follow, and running devices
    /// resume at their saved ring positions.
    ///
    /// Apply it after the vCPUs' and the in-kernel irqchip's states: restoring drives
    /// INTx levels and raises MSI-X vectors, which a later irqchip or LAPIC restore
    /// would overwrite. An error after the checks leaves the bus half restored; the
    /// machine must then not run.
    pub fn restore_state(&self, state: &PciBusState) -> Result<(), VmmError> {
        let pairs = self.match_slots(state)?;
        for (d, s) in &pairs {
            d.lock().check_state(&s.state).map_err(state_err)?;
        }
        // BARs that move: off the bus (and their ioeventfds unregistered) first.
        let mut moved = Vec::new();
        for (d, s) in &pairs {
            let mut dev = d.lock();
            let (old, new) = (dev.bar_addr(), s.state.config.bars.first().copied());
            if let Some(new) = new.filter(|&new| new != old) {
                dev.unregister_notify();
                self.mmio
                    .remove(old)
                    .map_err(|e| VmmError::Device(format!("{}: BAR 0 at {old:#x}: {e}", d.name)))?;
                moved.push((*d, old, new));
            }
        }
        for (d, s) in &pairs {
            d.lock().restore_state(&s.state).map_err(state_err)?;
        }
        for (d, old, new) in moved {
            self.mmio
                .insert(d.dev.clone(), new, BAR_SIZE)
                .map_err(|e| {
                    VmmError::Device(format!(
                        "{}: cannot move BAR 0 from {old:#x} to the saved {new:#x}: {e}",
                        d.name
                    ))
                })?;
            tracing::info!("{}: BAR 0 moved to {new:#x} as saved", d.name);
        }
        Ok(())
    }

    /// Pair each function with its saved state: same slot, same name; nothing left
    /// over on either side.
    fn match_slots<'a>(
        &'a self,
        state: &'a PciBusState,
    ) -> Result<Vec<(&'a PciSlot, &'a PciSlotState)>, VmmError> {
        let refuse = |msg: String| Err(VmmError::Device(format!("device state: {msg}")));
        let mut pairs = Vec::new();
        for (i, s) in state.devices.iter().enumerate() {
            if state.devices[..i].iter().any(|o| o.slot == s.slot) {
                return refuse(format!("PCI slot {} is saved twice", s.slot));
            }
            match self.devices.iter().find(|d| d.slot == s.slot) {
                None => {
                    return refuse(format!(
                        "PCI slot {} holds {} in the saved state, but nothing in the \
                         machine built from the config",
                        s.slot, s.name
                    ))
                }
                Some(d) if d.name != s.name => {
                    return refuse(format!(
                        "PCI slot {} holds {} in the saved state, but {} in the machine \
                         built from the config",
                        s.slot, s.name, d.name
                    ))
                }
                Some(d) => pairs.push((d, s)),
            }
        }
        if let Some(d) = self
            .devices
            .iter()
            .find(|d| !state.devices.iter().any(|s| s.slot == d.slot))
        {
            return refuse(format!(
                "{} (PCI slot {}) is not in the saved state (was it added to the config?)",
                d.name, d.slot
            ));
        }
        Ok(pairs)
    }
}
