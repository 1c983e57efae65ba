//! The CMOS's saved state: the index register and the 128 NVRAM bytes (status
//! registers A/B, the RAM size firmware reads, anything the guest stored). The time is
//! not part of it: it is always read from the host clock.

use serde::{Deserialize, Serialize};

use super::{Cmos, INDEX_MASK, NVRAM_SIZE};
use crate::state::StateError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmosState {
    /// The register selected through port 0x70 (without the NMI bit).
    pub index: u8,
    /// All 128 bytes.
    pub nvram: Vec<u8>,
}

impl Cmos {
    pub fn save_state(&self) -> CmosState {
        CmosState {
            index: self.index,
            nvram: self.nvram.to_vec(),
        }
    }

    /// Take over `state`; on error nothing changes.
    pub fn restore_state(&mut self, state: &CmosState) -> Result<(), StateError> {
        let err =
            |field: &str, reason: String| StateError::invalid(field, reason).within("cmos", "");
        if state.index & !INDEX_MASK != 0 {
            return Err(err(
                "index",
                format!("{:#x} is not a register (0..=0x7f)", state.index),
            ));
        }
        let nvram: [u8; NVRAM_SIZE] = state.nvram.as_slice().try_into().map_err(|_| {
            err(
                "nvram",
                format!("{} bytes, the NVRAM has {NVRAM_SIZE}", state.nvram.len()),
            )
        })?;
        self.index = state.index;
        self.nvram = nvram;
        Ok(())
    }
}
