//! The ACPI PM block's saved state: PM1 status, enable and control. The SCI level is
//! not saved: it follows from status and enable, and a restore drives the restoring
//! machine's line to it (that line starts low).

use serde::{Deserialize, Serialize};

use super::{AcpiPmDevice, PWRBTN, SLP_EN};
use crate::state::StateError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcpiPmState {
    pub pm1_sts: u16,
    pub pm1_en: u16,
    pub pm1_cnt: u16,
}

impl AcpiPmDevice {
    pub fn save_state(&self) -> AcpiPmState {
        AcpiPmState {
            pm1_sts: self.pm1_sts,
            pm1_en: self.pm1_en,
            pm1_cnt: self.pm1_cnt,
        }
    }

    /// Take over `state` and drive the SCI to the level it implies (also when low: the
    /// line may be attached to anything). On error nothing changes.
    pub fn restore_state(&mut self, state: &AcpiPmState) -> Result<(), StateError> {
        let err =
            |field: &str, reason: &str| StateError::invalid(field, reason).within("acpi_pm", "");
        // Only the power button ever sets a status bit here.
        if state.pm1_sts & !PWRBTN != 0 {
            return Err(err(
                "pm1_sts",
                &format!("{:#06x}: only PWRBTN_STS can be set", state.pm1_sts),
            ));
        }
        if state.pm1_cnt & SLP_EN != 0 {
            return Err(err(
                "pm1_cnt",
                &format!("{:#06x}: SLP_EN is write-only", state.pm1_cnt),
            ));
        }
        self.pm1_sts = state.pm1_sts;
        self.pm1_en = state.pm1_en;
        self.pm1_cnt = state.pm1_cnt;
        self.sci_level = self.pm1_sts & self.pm1_en != 0;
        if let Some(sci) = &self.sci {
            sci.set_level(self.sci_level);
        }
        Ok(())
    }
}
