//! Waiting for a state by polling `GET /v1/vm`. A VM process ends when its VM stops and
//! its socket goes with it, so "nobody serves the socket any more" means stopped.

use std::time::{Duration, Instant};

use oxvm_api::control::{ActionReply, ShutdownParams, VmAction, VmInfo, VmState};
use oxvm_api::{Client, ClientError};

use super::Failure;

const POLL: Duration = Duration::from_millis(150);
/// One look may take this long: a VM that hangs must not stretch the deadline by a
/// whole request timeout per poll.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than the guest's timeout a shutdown may take before we give up:
/// a forced destroy and the process exit come after the timeout.
const GRACE: Duration = Duration::from_secs(15);
/// The VM file's default `shutdown.timeout_s`, for a VM whose info lacks its config.
const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 120;

/// One look at the VM.
enum Seen {
    Vm(Box<VmInfo>),
    /// Nobody serves the socket, after we had reached it: the VM process ended.
    Gone,
    /// Nobody serves the socket, and we never reached it: not started yet, or a wrong
    /// path.
    NotUp(String),
    /// The process may be exiting mid-request (reset connection, 503): look again.
    Unsure(String),
}

struct Watcher {
    client: Client,
    reached: bool,
}

impl Watcher {
    fn new(client: &Client, reached: bool) -> Watcher {
        Watcher {
            client: client.clone().with_timeout(LOOK_TIMEOUT),
            reached,
        }
    }

    fn look(&mut self) -> Result<Seen, Failure> {
        match self.client.info() {
            Ok(info) => {
                self.reached = true;
                Ok(Seen::Vm(Box::new(info)))
            }
            Err(e) if e.is_gone() && self.reached => Ok(Seen::Gone),
            Err(e) if e.is_gone() => Ok(Seen::NotUp(e.to_string())),
            Err(ClientError::Http(e)) if e.status == 503 => Ok(Seen::Unsure(e.to_string())),
            Err(e @ ClientError::Http(_)) => Err(e.into()),
            Err(e) => Ok(Seen::Unsure(e.to_string())),
        }
    }
}

/// Ask for a shutdown and wait until the VM has stopped. Fails with 4 when the VM went
/// back to running with an error (no force) or nothing happened in timeout + 15 s.
pub(crate) fn shutdown(client: &Client, params: ShutdownParams) -> Result<ActionReply, Failure> {
    let before = client.info()?;
    let timeout_s = params.timeout_s.unwrap_or_else(|| {
        before
            .config
            .as_ref()
            .map_or(DEFAULT_SHUTDOWN_TIMEOUT_S, |c| c.shutdown.timeout_s)
    });
    client.action(&VmAction::Shutdown(params))?;
    let limit = Duration::from_secs(timeout_s) + GRACE;
    let deadline = Instant::now() + limit;
    let mut watcher = Watcher::new(client, true);
    let mut seen_shutting_down = false;
    let mut last: String;
    loop {
        match watcher.look()? {
            Seen::Vm(info) => {
                last = info.state.to_string();
                match info.state {
                    VmState::Stopped => return Ok(stopped()),
                    VmState::ShuttingDown => seen_shutting_down = true,
                    VmState::Running => {
                        // A failure from before this request is not this one's.
                        let fresh = seen_shutting_down || info.last_error != before.last_error;
                        if let Some(err) = info.last_error.filter(|_| fresh) {
                            return Err(Failure::timeout(format!(
                                "the guest did not power off; the VM is running: {err}"
                            )));
                        }
                    }
                    _ => {}
                }
            }
            Seen::Gone | Seen::NotUp(_) => return Ok(stopped()),
            Seen::Unsure(why) => last = why,
        }
        if Instant::now() >= deadline {
            return Err(Failure::timeout(format!(
                "the VM did not stop within {} s (last seen: {last})",
                limit.as_secs()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Wait until the VM is in `target`. A socket nobody serves is waited on (the VM may be
/// starting) unless the target is `stopped`, which it satisfies.
pub(crate) fn state(
    client: &Client,
    target: VmState,
    timeout: Duration,
) -> Result<ActionReply, Failure> {
    let deadline = Instant::now() + timeout;
    let mut watcher = Watcher::new(client, false);
    let mut last = "nothing yet".to_string();
    loop {
        match watcher.look()? {
            Seen::Vm(info) if info.state == target => return Ok(ActionReply { state: target }),
            Seen::Vm(info) => last = info.state.to_string(),
            Seen::Gone | Seen::NotUp(_) if target == VmState::Stopped => return Ok(stopped()),
            Seen::Gone => {
                return Err(Failure::new(
                    1,
                    format!("the VM process ended (last seen: {last}); it will not be {target}"),
                ))
            }
            Seen::NotUp(why) | Seen::Unsure(why) => last = why,
        }
        if Instant::now() >= deadline {
            let code = if watcher.reached { 4 } else { 1 };
            return Err(Failure::new(
                code,
                format!(
                    "the VM was not {target} within {} s (last seen: {last})",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn stopped() -> ActionReply {
    ActionReply {
        state: VmState::Stopped,
    }
}
