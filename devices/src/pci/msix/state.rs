//! MSI-X's saved state: the vector table as the guest programmed it, the pending bits
//! and the capability's enable and function-mask bits. Restoring it re-programs the
//! hypervisor route of every vector, since the restoring machine's routing table
//! starts empty.

use serde::{Deserialize, Serialize};

use super::{Entry, Msix, VECTOR_MASKED};
use crate::state::StateError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsixEntryState {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
    /// The vector control's mask bit (the only writable bit).
    pub masked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsixState {
    pub enabled: bool,
    pub function_masked: bool,
    /// One per vector.
    pub entries: Vec<MsixEntryState>,
    /// The pending bit array, one per vector.
    pub pending: Vec<bool>,
}

impl Msix {
    pub fn save_state(&self) -> MsixState {
        MsixState {
            enabled: self.enabled,
            function_masked: self.function_masked,
            entries: self
                .entries
                .iter()
                .map(|e| MsixEntryState {
                    addr_lo: e.addr_lo,
                    addr_hi: e.addr_hi,
                    data: e.data,
                    masked: e.ctrl & VECTOR_MASKED != 0,
                })
                .collect(),
            pending: self.pending.clone(),
        }
    }

    /// Whether `state` fits this table (same number of vectors).
    pub fn check_state(&self, state: &MsixState) -> Result<(), StateError> {
        let n = self.entries.len();
        if state.entries.len() != n {
            return Err(StateError::invalid(
                "entries",
                format!("{} vectors, the device has {n}", state.entries.len()),
            ));
        }
        if state.pending.len() != n {
            return Err(StateError::invalid(
                "pending",
                format!("{} bits, the device has {n} vectors", state.pending.len()),
            ));
        }
        Ok(())
    }

    /// Apply `state` (checked first; on error nothing changes), re-program every
    /// vector's route and deliver what is pending on a vector that is not masked
    /// (a consistent state has none: unmasking delivers).
    pub fn restore_state(&mut self, state: &MsixState) -> Result<(), StateError> {
        self.check_state(state)?;
        self.enabled = state.enabled;
        self.function_masked = state.function_masked;
        for (e, s) in self.entries.iter_mut().zip(&state.entries) {
            *e = Entry {
                addr_lo: s.addr_lo,
                addr_hi: s.addr_hi,
                data: s.data,
                ctrl: if s.masked { VECTOR_MASKED } else { 0 },
            };
        }
        self.pending.clone_from(&state.pending);
        for v in 0..self.entries.len() {
            self.update_route(v);
        }
        if self.enabled && !self.function_masked {
            self.deliver_pending();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vmm_sys_util::eventfd::EventFd;

    use super::super::{MsiMessage, MsiRouter, MsixVector, CTRL_ENABLE};
    use super::*;

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);
    impl MsiRouter for Routes {
        fn update_route(&self, gsi: u32, msg: Option<MsiMessage>) {
            self.0.lock().unwrap().push((gsi, msg));
        }
    }

    fn msix(n: u32, first_gsi: u32) -> (Msix, Arc<Routes>) {
        let routes = Arc::new(Routes::default());
        let vectors = (0..n)
            .map(|i| MsixVector {
                gsi: first_gsi + i,
                irqfd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            })
            .collect();
        (Msix::new(vectors, routes.clone()), routes)
    }

    #[test]
    fn table_round_trips_and_routes_are_reprogrammed() {
        let (mut old, _) = msix(3, 24);
        old.set_control(CTRL_ENABLE);
        for v in 0..2u64 {
            old.write_table(16 * v, &0xfee0_0000u32.to_le_bytes());
            old.write_table(16 * v + 8, &(0x40 + v as u32).to_le_bytes());
            old.write_table(16 * v + 12, &0u32.to_le_bytes());
        }
        // Vector 2 stays masked and gets a pending interrupt.
        assert!(old.trigger(2));
        let json = serde_json::to_string(&old.save_state()).unwrap();
        let saved: MsixState = serde_json::from_str(&json).unwrap();
        assert_eq!(saved.pending, vec![false, false, true]);

        // The new machine allocates other GSIs: routes follow the table, not GSIs.
        let (mut new, routes) = msix(3, 40);
        new.restore_state(&saved).unwrap();
        assert_eq!(new.save_state(), saved);
        let routes = routes.0.lock().unwrap().clone();
        let msg = |data| {
            Some(MsiMessage {
                addr: 0xfee0_0000,
                data,
            })
        };
        assert_eq!(routes, vec![(40, msg(0x40)), (41, msg(0x41)), (42, None)]);
        assert!(
            new.vectors[2].irqfd.read().is_err(),
            "masked: still pending"
        );
        new.write_table(16 * 2 + 12, &0u32.to_le_bytes());
        assert_eq!(new.vectors[2].irqfd.read().unwrap(), 1);
        assert!(new.trigger(0));
        assert_eq!(new.vectors[0].irqfd.read().unwrap(), 1);
    }

    #[test]
    fn a_table_of_another_size_is_refused() {
        let (old, _) = msix(3, 24);
        let (mut new, routes) = msix(4, 24);
        let e = new.restore_state(&old.save_state()).unwrap_err();
        assert!(e.to_string().contains("`entries`"), "{e}");
        let mut s = new.save_state();
        s.pending.pop();
        assert!(new
            .restore_state(&s)
            .unwrap_err()
            .to_string()
            .contains("`pending`"));
        assert!(routes.0.lock().unwrap().is_empty());
    }
}
