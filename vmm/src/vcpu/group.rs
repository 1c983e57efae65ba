//! The running vCPU threads of one boot, driven together: pause, resume, stop.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pause::PauseControl;
use super::VcpuHandle;

pub struct VcpuGroup {
    handles: Vec<VcpuHandle>,
    pause: Arc<PauseControl>,
}

impl VcpuGroup {
    pub fn new(handles: Vec<VcpuHandle>, pause: Arc<PauseControl>) -> Self {
        VcpuGroup { handles, pause }
    }

    /// Stop every vCPU between two exits and return once all are parked (or ended).
    pub fn pause(&self) {
        self.pause.request_pause();
        for h in &self.handles {
            h.kick_out();
        }
        self.pause.wait_parked(self.handles.len());
    }

    /// Wait until every vCPU has parked (after a pause requested before the start).
    pub fn wait_parked(&self) {
        self.pause.wait_parked(self.handles.len());
    }

    pub fn resume(&self) {
        self.pause.resume();
    }

    /// Kick every vCPU out of the guest (parked ones too) and wait for its thread.
    pub fn stop(&mut self) {
        for h in &self.handles {
            h.request_stop();
        }
        self.pause.release_for_stop();
        for h in &mut self.handles {
            h.join();
        }
    }

    /// Every vCPU's state, in index order. The group must be paused.
    pub fn save_states(&self) -> Result<Vec<super::state::VcpuState>, crate::VmmError> {
        let answers: Vec<_> = self.handles.iter().map(|h| h.ask_state()).collect();
        self.pause.poke();
        answers
            .into_iter()
            .zip(&self.handles)
            .map(|(rx, h)| {
                // A parked thread answers within microseconds; the bound only keeps a
                // vCPU thread that has died from hanging the save.
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .map_err(|_| format!("vCPU {} did not answer", h.index()))
                    .and_then(|r| r)
                    .map_err(|e| crate::VmmError::Device(format!("saving vCPU {}: {e}", h.index())))
            })
            .collect()
    }

    pub fn request_dump(&self) {
        self.handles.iter().for_each(|h| h.request_dump());
    }

    /// (index, kernel thread id) of each vCPU thread.
    pub fn threads(&self) -> Vec<(u32, u32)> {
        self.handles.iter().map(|h| (h.index(), h.tid())).collect()
    }

    /// Exit counts by reason, per vCPU index.
    pub fn exit_counts(&self) -> Vec<(u32, BTreeMap<String, u64>)> {
        self.handles
            .iter()
            .map(|h| (h.index(), h.counters().snapshot()))
            .collect()
    }
}

impl Drop for VcpuGroup {
    fn drop(&mut self) {
        // Threads hold the vCPU fds: make sure none outlives the machine.
        self.stop();
    }
}
