//! The i8042's saved state: there is none. The controller only turns a command into a
//! reset request, so it has no registers to keep; the empty state still goes into the
//! state file, so that a later version with a real keyboard controller can tell an old
//! file apart.

use serde::{Deserialize, Serialize};

use super::I8042;
use crate::state::StateError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I8042State {}

impl I8042 {
    pub fn save_state(&self) -> I8042State {
        I8042State {}
    }

    pub fn restore_state(&mut self, _state: &I8042State) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::EventFdTrigger;

    #[test]
    fn round_trips_as_an_empty_object() {
        let mut dev = I8042::new(EventFdTrigger::new().unwrap());
        let json = serde_json::to_string(&dev.save_state()).unwrap();
        assert_eq!(json, "{}");
        let s: I8042State = serde_json::from_str(&json).unwrap();
        dev.restore_state(&s).unwrap();
        assert!(serde_json::from_str::<I8042State>(r#"{"x":1}"#).is_err());
    }
}
