//! virtio-net's saved state: the link status, the queue pairs the driver switched to
//! on the control queue, and the MAC (checked: the driver read it at probe time).
//!
//! Not kept, because nothing here keeps them: receive-mode and MAC-table commands
//! (acknowledged, no filtering is done). The tap's offloads follow from the
//! negotiated features, which the transport saves; resuming sets them again.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::VirtioNet;
use crate::state::StateError;
use crate::virtio::VirtioDeviceState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetState {
    pub mac: [u8; 6],
    pub link_up: bool,
    /// Queue pairs in use (1 unless the driver asked for more with MQ).
    pub queue_pairs: u16,
}

impl VirtioNet {
    pub(super) fn state(&self) -> NetState {
        NetState {
            mac: self.mac(),
            link_up: self.link.is_up(),
            queue_pairs: self.pairs_in_use.load(Ordering::Acquire),
        }
    }

    /// The net state in `state`, if it fits this NIC.
    pub(super) fn check<'a>(
        &self,
        state: &'a VirtioDeviceState,
    ) -> Result<&'a NetState, StateError> {
        let VirtioDeviceState::Net(s) = state else {
            return Err(state.wrong_kind("a network device"));
        };
        if s.mac != self.mac() {
            return Err(StateError::invalid(
                "mac",
                format!(
                    "saved {}, the NIC built from the config has {}",
                    mac_string(&s.mac),
                    mac_string(&self.mac())
                ),
            ));
        }
        if !(1..=self.queue_pairs()).contains(&s.queue_pairs) {
            return Err(StateError::invalid(
                "queue_pairs",
                format!(
                    "{} pairs in use, the NIC has 1 to {}",
                    s.queue_pairs,
                    self.queue_pairs()
                ),
            ));
        }
        Ok(s)
    }

    /// Take over a checked state (no config interrupt: the driver already knows the
    /// link status it had).
    pub(super) fn apply(&mut self, s: &NetState) {
        self.link.0.up.store(s.link_up, Ordering::Release);
        self.pairs_in_use.store(s.queue_pairs, Ordering::Release);
    }
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
