//! The io=native worker loop: reads and writes go to Linux AIO and complete when their
//! events arrive, in any order, so up to a queue's worth are in flight at once.
//!
//! - Bound: a chain is popped only while the AIO context has a free slot, and the
//!   context's depth is the queue size. A guest that re-posts heads it has not got back
//!   cannot push more in flight: popping just stops until completions free slots.
//! - Admission (iotune) happens once per request, in queue order, without blocking: a
//!   request the throttle holds back is parked, nothing behind it is popped, and the
//!   thread keeps completing what is in flight until the parked one may go.
//! - Everything else (flush, discard, write-zeroes, GET_ID, and reads/writes O_DIRECT
//!   cannot take as they are: unaligned, or at offset 0 of a probed image) is served on
//!   this thread as with io=threads, after waiting for what is in flight. So a FLUSH
//!   completes only after every write popped before it has completed *and* the
//!   following fdatasync returned (IOCB_CMD_FDSYNC is not used: many filesystems do not
//!   implement it for AIO); and the O_DIRECT bounce path, which rewrites whole 4 KiB
//!   blocks around an unaligned write, never races an AIO write to the same block.
//! - Stopping completes every request in flight before the worker is given back:
//!   their status and used entries are written. At a device reset (or VM end) the
//!   driver is not interrupted (it is resetting), and a parked request, which never
//!   started, is dropped unanswered like the chains still in the ring. When quiescing
//!   (the VM is being saved) the driver is interrupted as usual, and the parked
//!   request is put back in the available ring: nothing was popped after it, so
//!   stepping the queue's position back one entry un-pops exactly it, and it is served
//!   when the queue is served again (here or on the restoring machine).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::buffers::GuestBuffers;
use super::request::{Request, RequestKind};
use super::worker::{QueueWorker, StopMode, NOTIFY_INTERVAL};
use crate::block::aio::{AioContext, Completion, Op, Refusal};
use crate::block::{DiskBackend, IoDirection, NativeIo};

const EVENT_KICK: u64 = 0;
const EVENT_STOP: u64 = 1;
const EVENT_AIO: u64 = 2;

/// A read or write the kernel is working on.
#[derive(Debug)]
pub(crate) struct InFlight {
    head: u16,
    status: GuestAddress,
    data: GuestBuffers,
}

/// A request the throttle holds back, and when to ask again.
struct Parked {
    head: u16,
    req: Request,
    retry_at: Instant,
}

pub(crate) struct AsyncWorker {
    base: QueueWorker,
    aio: AioContext<InFlight>,
    guard_offset_zero: bool,
    parked: Option<Parked>,
    /// Reused buffer for reaped completions.
    done: Vec<Completion<InFlight>>,
    unnotified: bool,
    last_notify: Instant,
    /// io_submit failures are logged at warn level once, then at debug level.
    warned_submit: bool,
}

impl AsyncWorker {
    /// Set up an AIO context as deep as the queue; on failure the worker comes back.
    pub(crate) fn new(
        base: QueueWorker,
        native: NativeIo,
    ) -> Result<Self, (io::Error, Box<QueueWorker>)> {
        match AioContext::new(native.file, base.mem.clone(), base.queue.size()) {
            Ok(aio) => Ok(AsyncWorker {
                base,
                aio,
                guard_offset_zero: native.guard_offset_zero,
                parked: None,
                done: Vec::new(),
                unnotified: false,
                last_notify: Instant::now(),
                warned_submit: false,
            }),
            Err(e) => Err((e, Box::new(base))),
        }
    }

    pub(crate) fn base(&self) -> &QueueWorker {
        &self.base
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.aio.in_flight()
    }

    /// Whether a request waits for the throttle.
    #[cfg(test)]
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Stop for a reset: complete what is in flight, drop a parked request, give back
    /// the backend.
    #[cfg(test)]
    pub(crate) fn into_backend(self) -> Box<dyn DiskBackend> {
        self.into_parts(StopMode::Reset).0
    }

    /// Stop: complete what is in flight and deal with a parked request as `mode` says
    /// (module comment); give back the backend and the queue.
    pub(crate) fn into_parts(mut self, mode: StopMode) -> (Box<dyn DiskBackend>, Queue) {
        self.drain();
        if self.aio.in_flight() > 0 {
            // Only when the kernel refused to report completions: dropping the context
            // below waits for them, but their used entries are never written.
            tracing::error!(
                "disk {}: {} request(s) in flight could not be completed",
                self.base.id,
                self.aio.in_flight()
            );
        }
        if self.parked.take().is_some() {
            match mode {
                StopMode::Reset => tracing::debug!(
                    "disk {}: dropped a throttled request at reset",
                    self.base.id
                ),
                StopMode::Quiesce => {
                    let q = &mut self.base.queue;
                    q.set_next_avail(q.next_avail().wrapping_sub(1));
                    tracing::debug!(
                        "disk {}: a throttled request goes back to the ring",
                        self.base.id
                    );
                }
            }
        }
        if mode == StopMode::Quiesce && self.unnotified {
            // `notify_now` stays quiet while stopping; a saved VM's driver must still
            // hear about what completed.
            self.base.notify();
            self.unnotified = false;
        }
        let AsyncWorker { base, aio, .. } = self;
        // Nothing is in flight; dropping the context would wait if something were.
        drop(aio);
        base.into_parts()
    }

    /// The thread body: returns when told to stop (or when waiting fails), possibly
    /// with requests in flight: [`AsyncWorker::into_parts`] completes them.
    pub(crate) fn run(&mut self, kick: &EventFd, stop_evt: &EventFd) {
        if let Err(e) = self.event_loop(kick, stop_evt) {
            tracing::error!("disk {}: worker stopped: {e}", self.base.id);
        }
    }

    fn event_loop(&mut self, kick: &EventFd, stop_evt: &EventFd) -> io::Result<()> {
        let epoll = Epoll::new()?;
        for (fd, data) in [
            (kick.as_raw_fd(), EVENT_KICK),
            (stop_evt.as_raw_fd(), EVENT_STOP),
            (self.aio.eventfd().as_raw_fd(), EVENT_AIO),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, data),
            )?;
        }
        let mut events = [EpollEvent::default(); 3];
        loop {
            if self.stopping() {
                return Ok(());
            }
            // Also serves what the driver queued before activation.
            self.pump();
            self.notify_now();
            let timeout = self.parked.as_ref().map_or(-1, |p| {
                let left = p.retry_at.saturating_duration_since(Instant::now());
                i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match ev.data() {
                    EVENT_STOP => return Ok(()),
                    // Reading can only fail with EAGAIN (already drained): either way
                    // the queue and the completions are looked at below.
                    EVENT_KICK => drop(kick.read()),
                    _ => self.aio.clear_eventfd(),
                }
            }
            self.reap(false);
        }
    }

    fn stopping(&self) -> bool {
        self.base.stop.load(Ordering::Acquire)
    }

    /// Start every request that the ring, the free AIO slots and the throttle allow.
    pub(crate) fn pump(&mut self) {
        if self.base.broken {
            // Nothing more is served until reset, and a parked request would keep
            // waking the thread for nothing.
            self.parked = None;
            return;
        }
        // Admission is in queue order: a parked request goes before anything new.
        if let Some(p) = self.parked.take() {
            if !self.start(p.head, p.req) {
                return;
            }
        }
        'outer: loop {
            if let Err(e) = self.base.queue.disable_notification(&self.base.mem) {
                self.base
                    .fail(&format!("cannot update notification suppression: {e}"));
                return;
            }
            loop {
                if self.stopping() || self.base.broken {
                    return;
                }
                // Full: completions wake the thread and free slots.
                if self.aio.in_flight() >= self.aio.depth() {
                    return;
                }
                match self.base.has_pending() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(reason) => {
                        self.base.fail(&reason);
                        return;
                    }
                }
                let Some(chain) = self.base.queue.pop_descriptor_chain(&self.base.mem) else {
                    break;
                };
                let head = chain.head_index();
                if head >= self.base.queue.size() {
                    // Such a chain is empty and cannot even be returned in the used ring.
                    self.base
                        .executor
                        .reject("available ring names a descriptor past the queue");
                    continue;
                }
                match self.base.executor.parse_chain(chain, &self.base.mem) {
                    Err(used) => self.add_used(head, used),
                    Ok(req) => {
                        if !self.start(head, req) {
                            return;
                        }
                    }
                }
            }
            match self.base.queue.enable_notification(&self.base.mem) {
                Ok(true) => continue 'outer,
                Ok(false) => break,
                Err(e) => {
                    self.base
                        .fail(&format!("cannot update notification suppression: {e}"));
                    break;
                }
            }
        }
    }

    /// Admit and start one request; false when the throttle holds it back (parked).
    fn start(&mut self, head: u16, req: Request) -> bool {
        if let Err(wait) = self.base.executor.try_admit(&req.kind) {
            self.parked = Some(Parked {
                head,
                req,
                retry_at: Instant::now() + wait,
            });
            return false;
        }
        let Request { kind, status } = req;
        let sync = match kind {
            RequestKind::In { offset, data } => self.submit(head, status, Op::Read, offset, data),
            RequestKind::Out { offset, data } if !(self.guard_offset_zero && offset == 0) => {
                self.submit(head, status, Op::Write, offset, data)
            }
            other => Some(other),
        };
        if let Some(kind) = sync {
            self.run_sync(head, status, kind);
        }
        true
    }

    /// Hand a read or write to the kernel; when it refuses, the request comes back to be
    /// served synchronously.
    fn submit(
        &mut self,
        head: u16,
        status: GuestAddress,
        op: Op,
        offset: u64,
        data: GuestBuffers,
    ) -> Option<RequestKind> {
        let segs = data.segments().to_vec();
        let user = InFlight { head, status, data };
        let refused = match self.aio.submit(op, offset, &segs, user) {
            Ok(()) => return None,
            Err(r) => r,
        };
        match &refused.reason {
            Refusal::Submit(e) if !self.warned_submit => {
                self.warned_submit = true;
                tracing::warn!(
                    "disk {}: io_submit failed, serving the request synchronously \
                     (later failures at debug level): {e}",
                    self.base.id
                );
            }
            reason => tracing::trace!("disk {}: served synchronously: {reason}", self.base.id),
        }
        let data = refused.user.data;
        Some(match op {
            Op::Read => RequestKind::In { offset, data },
            Op::Write => RequestKind::Out { offset, data },
        })
    }

    /// Serve an admitted request on this thread, as io=threads does; one that touches
    /// the disk first waits for everything in flight (module comment).
    fn run_sync(&mut self, head: u16, status: GuestAddress, kind: RequestKind) {
        if !matches!(kind, RequestKind::GetId { .. }) && self.aio.in_flight() > 0 {
            self.drain();
            // What completed is the driver's before a possibly long flush.
            self.notify_now();
        }
        let (code, written) = self.base.executor.run(kind, &self.base.mem);
        let used = self
            .base
            .executor
            .complete(status, code, written, &self.base.mem);
        self.add_used(head, used);
    }

    /// Wait until nothing is in flight, completing each request.
    fn drain(&mut self) {
        while self.aio.in_flight() > 0 {
            if !self.reap(true) {
                return;
            }
        }
    }

    /// Wait for at least one completion (if any is in flight) and complete what came.
    #[cfg(test)]
    pub(crate) fn wait_for_completions(&mut self) {
        self.reap(true);
    }

    /// Complete what the kernel finished (`wait`: at least one). False if the kernel
    /// cannot be asked (the queue is then unusable until reset).
    fn reap(&mut self, wait: bool) -> bool {
        let mut done = std::mem::take(&mut self.done);
        let ok = match self.aio.reap(wait, &mut done) {
            Ok(_) => true,
            Err(e) => {
                self.base
                    .fail(&format!("cannot collect AIO completions: {e}"));
                false
            }
        };
        for c in done.drain(..) {
            self.finish(c);
        }
        self.done = done;
        ok
    }

    /// Status, counters and used entry of one finished read or write.
    fn finish(&mut self, c: Completion<InFlight>) {
        let InFlight { head, status, data } = c.user;
        let dir = match c.op {
            Op::Read => IoDirection::Read,
            Op::Write => IoDirection::Write,
        };
        let result = match c.result {
            Ok(n) if n >= c.len => Ok(()),
            // Short read: the file ended early (it shrank); the rest reads as zeroes,
            // as in QEMU.
            Ok(n) if c.op == Op::Read => data
                .zero_from(&self.base.mem, n)
                .map_err(|e| io::Error::other(e.to_string())),
            // Short write: no space for the rest (QEMU reports it the same way).
            Ok(_) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Err(e) => Err(e),
        };
        let (code, written) = self.base.executor.io_done(dir, c.len, result);
        let used = self
            .base
            .executor
            .complete(status, code, written, &self.base.mem);
        self.add_used(head, used);
    }

    fn add_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.base.queue.add_used(&self.base.mem, head, len) {
            self.base.fail(&format!("cannot add to the used ring: {e}"));
            return;
        }
        self.unnotified = true;
        // A long run of synchronous requests still shows progress.
        if self.last_notify.elapsed() >= NOTIFY_INTERVAL {
            self.notify_now();
        }
    }

    /// Interrupt the driver for what completed since the last time, if it asks for it;
    /// never while stopping (the driver is resetting the device).
    fn notify_now(&mut self) {
        if self.unnotified && !self.stopping() {
            self.base.notify();
            self.unnotified = false;
            self.last_notify = Instant::now();
        }
    }
}
