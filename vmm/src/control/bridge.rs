//! The API server's way into the control loop: requests travel over a channel to the
//! main thread, which owns the VM, and the answer comes back on a per-request channel.
//! The API threads never touch the machine themselves.

use std::sync::mpsc;

use oxvm_api::{ApiError, ApiReply, ApiRequest, VmController};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub type Reply = Result<ApiReply, ApiError>;
pub type Envelope = (ApiRequest, mpsc::SyncSender<Reply>);

pub struct ApiBridge {
    tx: mpsc::Sender<Envelope>,
    wake: EventFd,
}

/// The bridge, the control loop's end of the channel, and the eventfd that wakes it.
pub fn channel() -> std::io::Result<(ApiBridge, mpsc::Receiver<Envelope>, EventFd)> {
    let (tx, rx) = mpsc::channel();
    let wake = EventFd::new(EFD_NONBLOCK)?;
    let loop_wake = wake.try_clone()?;
    Ok((ApiBridge { tx, wake }, rx, loop_wake))
}

impl VmController for ApiBridge {
    fn handle(&self, request: ApiRequest) -> Reply {
        let gone = || ApiError::unavailable("the VM process is stopping");
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx.send((request, reply_tx)).map_err(|_| gone())?;
        self.wake
            .write(1)
            .map_err(|e| ApiError::internal(format!("cannot wake the control loop: {e}")))?;
        reply_rx.recv().map_err(|_| gone())?
    }
}
