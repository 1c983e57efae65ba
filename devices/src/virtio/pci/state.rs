//! A virtio-pci function's saved state, and how it is checked against the function
//! built from the VM config before anything of it is applied (`restore.rs` applies
//! it).
//!
//! The state is taken from a quiesced device (`lifecycle.rs`): no request is in
//! flight, so the queues are fully described by their registers and two ring
//! positions. Whether the device runs is not stored: it follows from the status
//! (DRIVER_OK without NEEDS_RESET), exactly as on the saving machine.

use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::common_cfg::NO_VECTOR;
use super::device::VirtioPciDevice;
use super::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};
use crate::pci::{MsixState, PciConfigState};
use crate::state::StateError;
use crate::virtio::{GuestMemoryMmap, VirtioDeviceState, F_RING_EVENT_IDX, F_VERSION_1};

const STATUS_BITS: u8 = STATUS_ACKNOWLEDGE
    | STATUS_DRIVER
    | STATUS_DRIVER_OK
    | STATUS_FEATURES_OK
    | STATUS_NEEDS_RESET
    | STATUS_FAILED;
/// ISR bits: queue interrupt, configuration change.
const ISR_BITS: u8 = 0x3;
/// The MSI-X capability's message control: enable and function mask.
const MSIX_CTRL_ENABLE: u32 = 1 << 15;
const MSIX_CTRL_MASK: u32 = 1 << 14;

/// The common configuration registers (virtio 1.2 §4.1.4.3) other than the queues'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonCfgState {
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    /// MSI-X vector of configuration changes (0xffff: none).
    pub msix_config: u16,
    pub status: u8,
    pub config_generation: u8,
    pub queue_select: u16,
}

/// One virtqueue: what the driver set up, and where the device stands in its rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtqueueState {
    pub size: u16,
    /// `queue_enable` written.
    pub ready: bool,
    /// MSI-X vector (0xffff: none).
    pub msix_vector: u16,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    /// The next available-ring entry the device takes.
    pub next_avail: u16,
    /// The next used-ring entry the device fills (= the used index it published).
    pub next_used: u16,
    pub event_idx: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtioPciState {
    /// The virtio device type (1 net, 2 block, 8 SCSI).
    pub device_type: u32,
    /// PCI configuration space: command register, BAR address, MSI-X control.
    pub config: PciConfigState,
    pub msix: MsixState,
    pub common: CommonCfgState,
    pub queues: Vec<VirtqueueState>,
    /// ISR status for INTx: the line is high while it is not zero.
    pub isr: u8,
    /// The device's own state.
    pub device: VirtioDeviceState,
}

/// Whether a device with this status serves its queues.
pub(super) fn is_live(status: u8) -> bool {
    status & STATUS_DRIVER_OK != 0 && status & STATUS_NEEDS_RESET == 0
}

fn check_vector(field: &str, v: u16, vectors: usize) -> Result<(), StateError> {
    if v != NO_VECTOR && usize::from(v) >= vectors {
        return Err(StateError::invalid(
            field,
            format!("vector {v} is out of range (the device has {vectors} MSI-X vectors)"),
        ));
    }
    Ok(())
}

fn check_common(c: &CommonCfgState, offered: u64, vectors: usize) -> Result<(), StateError> {
    let err =
        |field: &str, reason: String| Err(StateError::invalid(format!("common.{field}"), reason));
    if c.status & !STATUS_BITS != 0 {
        return err("status", format!("{:#04x} has unknown bits", c.status));
    }
    if c.status & STATUS_DRIVER_OK != 0 && c.status & STATUS_FEATURES_OK == 0 {
        return err("status", "DRIVER_OK without FEATURES_OK".into());
    }
    if c.status & STATUS_FEATURES_OK != 0 {
        if c.driver_features & !offered != 0 {
            return err(
                "driver_features",
                format!(
                    "{:#x} has features the device built from the config does not offer \
                     ({offered:#x})",
                    c.driver_features
                ),
            );
        }
        if c.driver_features & F_VERSION_1 == 0 {
            return err("driver_features", "VIRTIO_F_VERSION_1 not accepted".into());
        }
    }
    check_vector("common.msix_config", c.msix_config, vectors)
}

fn check_ring(
    mem: &GuestMemoryMmap,
    field: &str,
    addr: u64,
    align: u64,
    len: u64,
    access: Permissions,
) -> Result<(), StateError> {
    if addr % align != 0 {
        return Err(StateError::invalid(
            field,
            format!("{addr:#x} is not {align}-byte aligned"),
        ));
    }
    let inside =
        usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(addr), len, access));
    if !inside {
        return Err(StateError::invalid(
            field,
            format!("{len} bytes at {addr:#x} are not inside guest memory"),
        ));
    }
    Ok(())
}

/// Check one queue; `live`: the device serves it after the restore.
fn check_queue(
    q: &VirtqueueState,
    max_size: u16,
    vectors: usize,
    driver_features: u64,
    live: bool,
    mem: &GuestMemoryMmap,
) -> Result<(), StateError> {
    if q.size == 0 || !q.size.is_power_of_two() || q.size > max_size {
        return Err(StateError::invalid(
            "size",
            format!("{} is not a power of two from 1 to {max_size}", q.size),
        ));
    }
    check_vector("msix_vector", q.msix_vector, vectors)?;
    if q.event_idx && driver_features & F_RING_EVENT_IDX == 0 {
        return Err(StateError::invalid(
            "event_idx",
            "set although VIRTIO_F_RING_EVENT_IDX was not negotiated",
        ));
    }
    if q.ready && live {
        let n = u64::from(q.size);
        check_ring(
            mem,
            "desc_table",
            q.desc_table,
            16,
            16 * n,
            Permissions::Read,
        )?;
        check_ring(
            mem,
            "avail_ring",
            q.avail_ring,
            2,
            6 + 2 * n,
            Permissions::Read,
        )?;
        check_ring(
            mem,
            "used_ring",
            q.used_ring,
            4,
            6 + 8 * n,
            Permissions::Write,
        )?;
    }
    Ok(())
}

impl VirtioPciDevice {
    /// Whether `state` can be restored into this function (built from the same VM
    /// config, on the restored guest memory). Changes nothing.
    pub fn check_state(&self, state: &VirtioPciState) -> Result<(), StateError> {
        self.check(state).map_err(|e| e.within(&self.name, ""))
    }

    fn check(&self, s: &VirtioPciState) -> Result<(), StateError> {
        let device_type = self.device.device_type();
        if s.device_type != device_type {
            return Err(StateError::invalid(
                "device_type",
                format!(
                    "{}, the device built from the config has type {device_type}",
                    s.device_type
                ),
            ));
        }
        self.config
            .check_state(&s.config)
            .map_err(|e| e.within("", "config."))?;
        let vectors = {
            let msix = self.msix();
            msix.check_state(&s.msix)
                .map_err(|e| e.within("", "msix."))?;
            msix.len()
        };
        self.check_msix_control(s)?;
        check_common(&s.common, self.device_features, vectors)?;
        if s.queues.len() != self.common.queues.len() {
            return Err(StateError::invalid(
                "queues",
                format!(
                    "{} queues, the device has {}",
                    s.queues.len(),
                    self.common.queues.len()
                ),
            ));
        }
        let live = is_live(s.common.status);
        for (i, (q, cfg)) in s.queues.iter().zip(&self.common.queues).enumerate() {
            check_queue(
                q,
                cfg.max_size,
                vectors,
                s.common.driver_features,
                live,
                &self.mem,
            )
            .map_err(|e| e.within("", &format!("queues[{i}].")))?;
        }
        if s.isr & !ISR_BITS != 0 {
            return Err(StateError::invalid(
                "isr",
                format!("{:#04x} has unknown bits", s.isr),
            ));
        }
        self.device
            .check_state(&s.device)
            .map_err(|e| e.within("", "device."))
    }

    /// MSI-X is enabled and masked where the capability in config space says it is.
    fn check_msix_control(&self, s: &VirtioPciState) -> Result<(), StateError> {
        // Capabilities are dword aligned: the control word is the upper half of the
        // capability's first register (the config check made sure `regs` is whole).
        let ctrl = s.config.regs[self.msix_cap / 4] >> 16;
        if (ctrl & MSIX_CTRL_ENABLE != 0) != s.msix.enabled
            || (ctrl & MSIX_CTRL_MASK != 0) != s.msix.function_masked
        {
            return Err(StateError::invalid(
                "msix.enabled",
                format!(
                    "enable/mask ({}, {}) disagree with the capability's control word \
                     {ctrl:#06x} in config.regs",
                    s.msix.enabled, s.msix.function_masked
                ),
            ));
        }
        Ok(())
    }
}
