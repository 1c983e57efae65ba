//! The disk's worker thread: waits on the queue's kick eventfd and a stop eventfd, serves
//! the available chains in order and interrupts the driver when the queue asks for it.
//! With io=native the thread runs `worker_async`'s loop instead, which keeps reads and
//! writes in flight; [`Worker`] picks one.
//!
//! The guest cannot stall anything but this thread: a ring that makes no sense (an
//! available index running ahead of the queue size, rings outside memory) marks the
//! queue broken until the device is reset, and the thread keeps answering the stop
//! request.
//!
//! Stopping hands the worker back to the device ([`WorkerHandle::stop`]), which
//! finishes it according to why it stopped ([`StopMode`]): a reset drops the queue,
//! quiescing (the VM is being saved) keeps it, positioned after the last request that
//! completed, so the same queue can be served again or saved.

use std::io;
use std::num::Wrapping;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::execute::Executor;
use super::worker_async::AsyncWorker;
use crate::block::{DiskBackend, WaitCanceller};
use crate::virtio::{ActiveQueue, GuestMemoryMmap, VirtioInterrupt};

const EVENT_KICK: u64 = 0;
const EVENT_STOP: u64 = 1;

/// While working through a long queue (slow disk, throttling), interrupt the driver at
/// least this often for what has completed so far.
pub(super) const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);

/// Why a worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    /// The driver resets the device (or the VM goes away): requests in flight are
    /// completed without interrupting the driver, and the queue is dropped.
    Reset,
    /// The VM is being saved: requests in flight are completed and signalled as
    /// usual, a request not started yet is put back in the available ring, and the
    /// queue is kept.
    Quiesce,
}

/// What a stopped worker leaves: the disk, and the queue with its kick eventfd.
pub(crate) struct Stopped {
    pub(crate) backend: Box<dyn DiskBackend>,
    pub(crate) queue: ActiveQueue,
}

/// Serves one queue. Also used directly (without a thread) by tests.
pub(crate) struct QueueWorker {
    pub(crate) id: String,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) queue: Queue,
    pub(crate) index: u16,
    pub(crate) interrupt: Arc<dyn VirtioInterrupt>,
    pub(crate) executor: Executor,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) broken: bool,
}

impl QueueWorker {
    /// Serve every available chain, then re-enable notifications and check again (the
    /// driver may have added chains meanwhile without kicking).
    pub(crate) fn process_queue(&mut self) {
        if self.broken {
            return;
        }
        let mut last_notify = Instant::now();
        let mut unnotified = false;
        'outer: loop {
            if let Err(e) = self.queue.disable_notification(&self.mem) {
                self.fail(&format!("cannot update notification suppression: {e}"));
                return;
            }
            loop {
                if self.stop.load(Ordering::Acquire) {
                    break 'outer;
                }
                match self.has_pending() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(reason) => {
                        self.fail(&reason);
                        break 'outer;
                    }
                }
                let Some(chain) = self.queue.pop_descriptor_chain(&self.mem) else {
                    break;
                };
                let head = chain.head_index();
                if head >= self.queue.size() {
                    // Such a chain is empty and cannot even be returned in the used ring.
                    self.executor
                        .reject("available ring names a descriptor past the queue");
                    continue;
                }
                let used_len = self.executor.serve(chain, &self.mem);
                if let Err(e) = self.queue.add_used(&self.mem, head, used_len) {
                    self.fail(&format!("cannot add to the used ring: {e}"));
                    break 'outer;
                }
                unnotified = true;
                // A throttled disk may hold the next request back for long: tell the
                // driver about each completion right away.
                if self.executor.is_throttled() || last_notify.elapsed() >= NOTIFY_INTERVAL {
                    self.notify();
                    unnotified = false;
                    last_notify = Instant::now();
                }
            }
            match self.queue.enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.fail(&format!("cannot update notification suppression: {e}"));
                    break;
                }
            }
        }
        if unnotified {
            self.notify();
        }
    }

    /// Whether chains are waiting; an error when the available index makes no sense.
    pub(super) fn has_pending(&self) -> Result<bool, String> {
        let avail = self
            .queue
            .avail_idx(&self.mem, Ordering::Acquire)
            .map_err(|e| format!("cannot read the available index: {e}"))?;
        let pending = (avail - Wrapping(self.queue.next_avail())).0;
        if pending > self.queue.size() {
            return Err(format!(
                "available index {} is {pending} entries ahead, more than the queue size {}",
                avail.0,
                self.queue.size()
            ));
        }
        Ok(pending > 0)
    }

    pub(super) fn notify(&mut self) {
        match self.queue.needs_notification(&self.mem) {
            Ok(true) => self.interrupt.notify_queue(self.index),
            Ok(false) => {}
            Err(e) => self.fail(&format!("cannot read the used event index: {e}")),
        }
    }

    /// The backend and the queue, as they stand.
    pub(crate) fn into_parts(self) -> (Box<dyn DiskBackend>, Queue) {
        (self.executor.into_backend(), self.queue)
    }

    pub(super) fn fail(&mut self, reason: &str) {
        if !self.broken {
            tracing::error!(
                "disk {}: queue {} unusable until the device is reset: {reason}",
                self.id,
                self.index
            );
        }
        self.broken = true;
    }

    /// The thread body: returns when told to stop (or when waiting fails). Requests
    /// are served one at a time, so none is in flight when it returns.
    fn run(&mut self, kick: &EventFd, stop_evt: &EventFd) {
        if let Err(e) = self.event_loop(kick, stop_evt) {
            tracing::error!("disk {}: worker stopped: {e}", self.id);
        }
    }

    fn event_loop(&mut self, kick: &EventFd, stop_evt: &EventFd) -> io::Result<()> {
        let epoll = Epoll::new()?;
        for (fd, data) in [(kick, EVENT_KICK), (stop_evt, EVENT_STOP)] {
            epoll.ctl(
                ControlOperation::Add,
                std::os::fd::AsRawFd::as_raw_fd(fd),
                EpollEvent::new(EventSet::IN, data),
            )?;
        }
        // The driver may have queued requests before the device was activated.
        self.process_queue();
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match ev.data() {
                    EVENT_STOP => return Ok(()),
                    _ => {
                        // Draining the counter can only fail with EAGAIN (a spurious
                        // wakeup): there is work to look at either way.
                        let _ = kick.read();
                        self.process_queue();
                    }
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
        }
    }
}

/// The body of a disk's worker thread.
pub(crate) enum Worker {
    /// io=threads: one request at a time, on this thread.
    Sync(Box<QueueWorker>),
    /// io=native: reads and writes in flight with Linux AIO.
    Native(Box<AsyncWorker>),
}

impl Worker {
    /// The io=native worker when the backend offers its O_DIRECT file and Linux AIO can
    /// be set up, else the synchronous one (with a warning in the latter case: the
    /// host's AIO limit `fs.aio-max-nr` may be reached, or AIO forbidden).
    pub(crate) fn new(base: QueueWorker) -> Self {
        let Some(native) = base.executor.native_io() else {
            return Worker::Sync(Box::new(base));
        };
        match AsyncWorker::new(base, native) {
            Ok(w) => Worker::Native(Box::new(w)),
            Err((e, base)) => {
                tracing::warn!(
                    "disk {}: io=native unavailable (cannot set up Linux AIO: {e}); \
                     serving it as io=threads",
                    base.id
                );
                Worker::Sync(base)
            }
        }
    }

    fn base(&self) -> &QueueWorker {
        match self {
            Worker::Sync(w) => w,
            Worker::Native(w) => w.base(),
        }
    }

    /// Give back the backend of a worker that never ran.
    pub(crate) fn into_backend(self) -> Box<dyn DiskBackend> {
        self.finish(StopMode::Reset).0
    }

    /// Complete what is in flight (see [`StopMode`]) and give back the backend and the
    /// queue. Called once the thread has left its loop.
    fn finish(self, mode: StopMode) -> (Box<dyn DiskBackend>, Queue) {
        match self {
            Worker::Sync(w) => w.into_parts(),
            Worker::Native(w) => w.into_parts(mode),
        }
    }

    fn run(&mut self, kick: &EventFd, stop_evt: &EventFd) {
        match self {
            Worker::Sync(w) => w.run(kick, stop_evt),
            Worker::Native(w) => w.run(kick, stop_evt),
        }
    }
}

/// A running worker thread. The thread gives the worker back when it stops, so the
/// device can finish it (and keep its queue) whatever the reason for stopping.
pub(crate) struct WorkerHandle {
    thread: JoinHandle<Option<(Worker, EventFd)>>,
    index: u16,
    stop_evt: EventFd,
    stop: Arc<AtomicBool>,
    canceller: Option<WaitCanceller>,
}

impl WorkerHandle {
    /// Start `worker` on a thread named `name`, serving kicks from `kick`. On failure the
    /// worker comes back so its backend is not lost.
    pub(crate) fn spawn(
        name: String,
        worker: Worker,
        kick: EventFd,
    ) -> Result<Self, (io::Error, Box<Worker>)> {
        let stop_evt = match EventFd::new(libc::EFD_NONBLOCK) {
            Ok(e) => e,
            Err(e) => return Err((e, Box::new(worker))),
        };
        let thread_stop = match stop_evt.try_clone() {
            Ok(e) => e,
            Err(e) => return Err((e, Box::new(worker))),
        };
        let canceller = worker.base().executor.wait_canceller();
        if let Some(c) = &canceller {
            c.reset();
        }
        let stop = worker.base().stop.clone();
        stop.store(false, Ordering::Release);
        let index = worker.base().index;
        // The worker is handed over only once the thread exists, so a failed spawn
        // leaves it (and the backend) with the caller.
        let (tx, rx) = mpsc::sync_channel::<Worker>(1);
        let thread = match thread::Builder::new().name(name).spawn(move || {
            let mut worker = rx.recv().ok()?;
            worker.run(&kick, &thread_stop);
            Some((worker, kick))
        }) {
            Ok(t) => t,
            Err(e) => return Err((e, Box::new(worker))),
        };
        if let Err(mpsc::SendError(worker)) = tx.send(worker) {
            return Err((
                io::Error::other("worker thread exited at start"),
                Box::new(worker),
            ));
        }
        Ok(WorkerHandle {
            thread,
            index,
            stop_evt,
            stop,
            canceller,
        })
    }

    /// Stop the thread (cutting short any throttling wait: a request waiting there
    /// runs unthrottled), join it, finish the worker as `mode` says and return the
    /// backend and the queue; `None` if the thread panicked.
    pub(crate) fn stop(self, mode: StopMode) -> Option<Stopped> {
        self.stop.store(true, Ordering::Release);
        if let Some(c) = &self.canceller {
            c.cancel();
        }
        if let Err(e) = self.stop_evt.write(1) {
            tracing::error!("cannot signal a block worker to stop: {e}");
        }
        let stopped = self.thread.join().ok().flatten().map(|(worker, kick)| {
            let (backend, queue) = worker.finish(mode);
            Stopped {
                backend,
                queue: ActiveQueue {
                    index: self.index,
                    queue,
                    kick,
                },
            }
        });
        if let Some(c) = &self.canceller {
            c.reset();
        }
        stopped
    }
}
