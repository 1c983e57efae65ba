//! Saved device state: the error every `restore_state` returns.
//!
//! Device states are plain serde data (`Serialize` + `Deserialize`, unknown fields
//! refused); the container around them (the VMM's state file) carries the format
//! version. A state comes from a file, so it is untrusted input: every restore checks
//! every value against the device built from the VM config before using it, and
//! refuses with the device and the field named. Nothing in a state can make a restore
//! panic.

/// Why a saved state cannot be taken or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A value that cannot be right for the device it is applied to.
    #[error("{device}: saved state field `{field}`: {reason}")]
    Invalid {
        device: String,
        field: String,
        reason: String,
    },
    /// The state is acceptable, but taking or applying it failed.
    #[error("{device}: {reason}")]
    Failed { device: String, reason: String },
}

impl StateError {
    /// `field` of the state is wrong because of `reason`. Inner layers leave `device`
    /// empty; the layer that knows the device's name fills it in with [`Self::within`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        StateError::Invalid {
            device: String::new(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Taking or applying the state failed for a reason other than its contents.
    pub fn failed(reason: impl Into<String>) -> Self {
        StateError::Failed {
            device: String::new(),
            reason: reason.into(),
        }
    }

    /// The same error seen from the container: `device` names the device, and
    /// `prefix` (e.g. `"msix."`) goes in front of the field.
    pub fn within(self, device: &str, prefix: &str) -> Self {
        match self {
            StateError::Invalid { field, reason, .. } => StateError::Invalid {
                device: device.to_string(),
                field: format!("{prefix}{field}"),
                reason,
            },
            StateError::Failed { reason, .. } => StateError::Failed {
                device: device.to_string(),
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_device_and_field() {
        let e =
            StateError::invalid("size", "3 is not a power of two").within("blk-vda", "queues[0].");
        assert_eq!(
            e.to_string(),
            "blk-vda: saved state field `queues[0].size`: 3 is not a power of two"
        );
        let e = StateError::failed("cannot register an ioeventfd").within("net-eth0", "x.");
        assert_eq!(e.to_string(), "net-eth0: cannot register an ioeventfd");
    }
}
