//! The device-specific part of a virtio device's saved state, one variant per device
//! type (the transport's part is in `pci/state.rs`).

use serde::{Deserialize, Serialize};

use super::blk::BlkState;
use super::net::NetState;
use super::scsi::ScsiState;
use crate::state::StateError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtioDeviceState {
    Blk(BlkState),
    Net(NetState),
    Scsi(ScsiState),
}

impl VirtioDeviceState {
    fn kind(&self) -> &'static str {
        match self {
            VirtioDeviceState::Blk(_) => "blk",
            VirtioDeviceState::Net(_) => "net",
            VirtioDeviceState::Scsi(_) => "scsi",
        }
    }

    /// The error for a state of another device type than `expected`.
    pub(crate) fn wrong_kind(&self, expected: &str) -> StateError {
        StateError::invalid(
            "type",
            format!("the state of a {} device, this is {expected}", self.kind()),
        )
    }
}
