//! virtio-scsi's saved state: the header sizes the driver may write in the config
//! space (and the ones the worker was started with), and the disks' ids, checked so
//! that a state is never applied to a controller with other targets.
//!
//! There is no per-LUN sense or unit-attention state to keep: errors are reported with
//! autosense in the response itself (see `sense.rs`), so nothing is pending between
//! two commands.

use serde::{Deserialize, Serialize};

use super::process::{lock, HeaderSizes};
use super::VirtioScsi;
use crate::state::StateError;
use crate::virtio::VirtioDeviceState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScsiHeaderSizes {
    pub cdb_size: u32,
    pub sense_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScsiState {
    /// Disk ids by target.
    pub luns: Vec<String>,
    /// The config space's `cdb_size` and `sense_size`.
    pub config: ScsiHeaderSizes,
    /// The sizes in use since activation, if active.
    pub active: Option<ScsiHeaderSizes>,
}

fn to_state(s: HeaderSizes) -> ScsiHeaderSizes {
    ScsiHeaderSizes {
        cdb_size: s.cdb_size,
        sense_size: s.sense_size,
    }
}

fn from_state(s: ScsiHeaderSizes) -> HeaderSizes {
    HeaderSizes {
        cdb_size: s.cdb_size,
        sense_size: s.sense_size,
    }
}

impl VirtioScsi {
    fn lun_ids(&self) -> Vec<String> {
        self.luns.iter().map(|l| lock(l).id.clone()).collect()
    }

    pub(super) fn state(&self) -> ScsiState {
        ScsiState {
            luns: self.lun_ids(),
            config: to_state(self.config.sizes()),
            active: self.active_sizes.map(to_state),
        }
    }

    /// The scsi state in `state`, if it was saved from a controller with these disks.
    pub(super) fn check<'a>(
        &self,
        state: &'a VirtioDeviceState,
    ) -> Result<&'a ScsiState, StateError> {
        let VirtioDeviceState::Scsi(s) = state else {
            return Err(state.wrong_kind("a SCSI controller"));
        };
        let ids = self.lun_ids();
        if s.luns != ids {
            return Err(StateError::invalid(
                "luns",
                format!(
                    "saved disks {:?}, the controller built from the config has {ids:?}",
                    s.luns
                ),
            ));
        }
        Ok(s)
    }

    /// Take over a checked state (the worker starts when the transport resumes).
    pub(super) fn apply(&mut self, s: &ScsiState) {
        self.config.set_sizes(from_state(s.config));
        self.active_sizes = s.active.map(from_state);
    }
}
