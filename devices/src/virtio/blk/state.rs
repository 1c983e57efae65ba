//! virtio-blk's saved state. The device has no run-time state of its own (no
//! writeback-cache toggle: CONFIG_WCE is not offered; queue positions belong to the
//! transport), so the state records what the driver saw of the disk, and a restore
//! refuses a disk that would look different to it.

use serde::{Deserialize, Serialize};

use super::VirtioBlk;
use crate::state::StateError;
use crate::virtio::VirtioDeviceState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlkState {
    /// Capacity in 512-byte sectors, as the driver read it from the config space.
    pub capacity_sectors: u64,
    pub read_only: bool,
}

impl VirtioBlk {
    pub(super) fn state(&self) -> BlkState {
        BlkState {
            capacity_sectors: self.capacity(),
            read_only: self.is_read_only(),
        }
    }

    /// The blk state in `state`, if it describes this disk.
    pub(super) fn check<'a>(
        &self,
        state: &'a VirtioDeviceState,
    ) -> Result<&'a BlkState, StateError> {
        let VirtioDeviceState::Blk(s) = state else {
            return Err(state.wrong_kind("a block device"));
        };
        if s.capacity_sectors != self.capacity() {
            return Err(StateError::invalid(
                "capacity_sectors",
                format!(
                    "saved {}, disk {} has {} (a different disk?)",
                    s.capacity_sectors,
                    self.id(),
                    self.capacity()
                ),
            ));
        }
        if s.read_only != self.is_read_only() {
            return Err(StateError::invalid(
                "read_only",
                format!(
                    "saved {}, disk {} is opened {}",
                    s.read_only,
                    self.id(),
                    if self.is_read_only() {
                        "read-only"
                    } else {
                        "read-write"
                    }
                ),
            ));
        }
        Ok(s)
    }
}
