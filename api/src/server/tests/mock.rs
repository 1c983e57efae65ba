//! A VmController that records what reaches it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::control::{
    ActionReply, ApiError, ApiReply, ApiRequest, SnapshotInfo, VmController, VmInfo, VmState,
};

#[derive(Default)]
pub(crate) struct Mock {
    pub calls: Mutex<Vec<ApiRequest>>,
    /// How long each call takes (to show that calls run in parallel).
    pub delay: Duration,
    /// Answer every call with this error.
    pub fail: Option<ApiError>,
    /// Calls running right now.
    pub running: AtomicUsize,
    /// The most calls seen running at the same time.
    pub max_parallel: AtomicUsize,
}

impl Mock {
    pub(crate) fn calls(&self) -> Vec<ApiRequest> {
        self.calls.lock().unwrap().clone()
    }
}

pub(crate) fn sample_info() -> VmInfo {
    VmInfo {
        name: Some("demo".to_string()),
        state: VmState::Running,
        pid: 4242,
        uptime_s: Some(3.5),
        boots: 1,
        vcpu_threads: vec![],
        last_error: None,
        config: None,
    }
}

pub(crate) fn sample_snapshot(name: &str) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_string(),
        description: None,
        created_unix_ms: 1_800_000_000_000,
        vm_state: VmState::Running,
        dir: format!("/srv/snapshots/{name}").into(),
        disks: vec![],
    }
}

impl VmController for Mock {
    fn handle(&self, request: ApiRequest) -> Result<ApiReply, ApiError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_parallel.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.calls.lock().unwrap().push(request.clone());
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        Ok(match request {
            ApiRequest::Info => ApiReply::Info(Box::new(sample_info())),
            ApiRequest::Counters => ApiReply::Counters(Box::default()),
            ApiRequest::Create(_) => ApiReply::Action(ActionReply {
                state: VmState::Created,
            }),
            ApiRequest::MigrationStatus => ApiReply::Migration(Box::default()),
            ApiRequest::SnapshotList | ApiRequest::SnapshotDelete(_) => {
                ApiReply::Snapshots(Default::default())
            }
            ApiRequest::SnapshotGet(name) => ApiReply::Snapshot(Box::new(sample_snapshot(&name))),
            ApiRequest::SnapshotCreate(p) => ApiReply::Snapshot(Box::new(sample_snapshot(&p.name))),
            ApiRequest::SnapshotRevert(..) => ApiReply::Action(ActionReply {
                state: VmState::Running,
            }),
            ApiRequest::Deploy(_)
            | ApiRequest::Migrate(_)
            | ApiRequest::Incoming(_)
            | ApiRequest::Action(_)
            | ApiRequest::Save(_)
            | ApiRequest::Restore(_) => ApiReply::Action(ActionReply {
                state: VmState::Running,
            }),
        })
    }
}
