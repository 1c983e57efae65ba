//! The thread that serves the queues: it sleeps on the kick eventfds and a stop
//! eventfd, runs every available chain to completion and signals used buffers.
//!
//! A throttled disk (`iotune`) blocks this thread in `DiskBackend::admit`; stopping cuts
//! such waits short through the disks' [`WaitCanceller`]s (as virtio-blk's worker does),
//! so a reset never waits for the throttle.
//!
//! Stopping happens between two requests: the one being executed completes, the next
//! is not taken. So the queues the thread gives back when it is joined hold no
//! half-done request, and a saved VM can serve them again from where they stand.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use virtio_queue::QueueT;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::control::process_control;
use super::lun::Lun;
use super::process::{process_command, HeaderSizes};
use super::{CONTROL_QUEUE, EVENT_QUEUE};
use crate::block::WaitCanceller;
use crate::virtio::{ActiveQueue, GuestMemoryMmap, VirtioInterrupt};

/// Name of the worker thread (visible in `ps -T`, `top -H`).
pub(crate) const THREAD_NAME: &str = "scsi-req";

/// epoll token of the stop eventfd; queue tokens are their position in `queues`.
const STOP_TOKEN: u64 = u64::MAX;

/// Signal the driver at least every this many completions, so a guest that keeps the
/// queue full still sees progress without waiting for the queue to drain.
const NOTIFY_BATCH: usize = 32;

/// What the worker owns while the device is active.
pub(crate) struct Worker {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: Vec<ActiveQueue>,
    luns: Arc<[Mutex<Lun>]>,
    sizes: HeaderSizes,
    /// Bounce buffer for block data, kept across requests (grows to `IO_CHUNK` once).
    scratch: Vec<u8>,
}

/// A running worker; dropping it stops and joins the thread.
pub(crate) struct WorkerHandle {
    stop: EventFd,
    /// Also set on stop, so a worker busy with a queue the guest keeps full notices it
    /// between two requests rather than only when the queue drains.
    stopping: Arc<AtomicBool>,
    /// One per throttled disk: cancelled on stop so the worker leaves a throttling wait.
    cancellers: Vec<WaitCanceller>,
    thread: Option<JoinHandle<Vec<ActiveQueue>>>,
}

impl WorkerHandle {
    /// Start `worker`; `cancellers` are the throttled disks' wait cancellers (re-armed
    /// here, since a previous stop left them cancelled only until it returned).
    pub fn spawn(worker: Worker, cancellers: Vec<WaitCanceller>) -> io::Result<Self> {
        for c in &cancellers {
            c.reset();
        }
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let stop_rx = stop.try_clone()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping_rx = stopping.clone();
        let thread = thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || worker.run(&stop_rx, &stopping_rx))?;
        Ok(Self {
            stop,
            stopping,
            cancellers,
            thread: Some(thread),
        })
    }

    /// Stop the thread, wait for it and return the queues it served. It finishes the
    /// request it is executing (a backend call cannot be interrupted; a throttling wait
    /// is cut short, and the request then runs unthrottled) but never waits for the
    /// guest or the throttle. `None` if the thread could not be stopped or panicked.
    pub fn stop(&mut self) -> Option<Vec<ActiveQueue>> {
        let thread = self.thread.take()?;
        self.stopping.store(true, Ordering::SeqCst);
        for c in &self.cancellers {
            c.cancel();
        }
        if let Err(e) = self.stop.write(1) {
            // Without the wakeup the join below would hang; leave the thread detached.
            tracing::error!(error = %e, "cannot signal the scsi worker to stop");
            return None;
        }
        let queues = thread.join();
        if queues.is_err() {
            tracing::error!("scsi worker thread panicked");
        }
        // Allow waiting again, for a later activation (spawn re-arms them too).
        for c in &self.cancellers {
            c.reset();
        }
        queues.ok()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        drop(self.stop());
    }
}

impl Worker {
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
        luns: Arc<[Mutex<Lun>]>,
        sizes: HeaderSizes,
    ) -> Self {
        Self {
            mem,
            interrupt,
            queues,
            luns,
            sizes,
            scratch: Vec::new(),
        }
    }

    /// The thread body: serve until told to stop, then give the queues back.
    fn run(mut self, stop: &EventFd, stopping: &AtomicBool) -> Vec<ActiveQueue> {
        self.serve(stop, stopping);
        self.queues
    }

    fn serve(&mut self, stop: &EventFd, stopping: &AtomicBool) {
        let epoll = match self.epoll(stop) {
            Ok(epoll) => epoll,
            Err(e) => {
                tracing::error!(error = %e, "scsi worker cannot wait for kicks; device stalled");
                return;
            }
        };
        // The driver may have queued requests (and kicked) before we were listening.
        for i in 0..self.queues.len() {
            self.process_queue(i, stopping);
        }
        let mut events = [EpollEvent::default(); 8];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "scsi worker epoll failed; device stalled");
                    return;
                }
            };
            for ev in &events[..n] {
                if ev.data() == STOP_TOKEN {
                    return;
                }
                let Ok(i) = usize::try_from(ev.data()) else {
                    continue;
                };
                let Some(q) = self.queues.get(i) else {
                    continue;
                };
                // Drain the counter; EAGAIN just means another wakeup already did.
                let _ = q.kick.read();
                self.process_queue(i, stopping);
            }
        }
    }

    fn epoll(&self, stop: &EventFd) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let add = |fd, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(std::os::fd::AsRawFd::as_raw_fd(stop), STOP_TOKEN)?;
        for (i, q) in self.queues.iter().enumerate() {
            add(std::os::fd::AsRawFd::as_raw_fd(&q.kick), i as u64)?;
        }
        Ok(epoll)
    }

    fn process_queue(&mut self, i: usize, stopping: &AtomicBool) {
        let Worker {
            mem,
            interrupt,
            queues,
            luns,
            sizes,
            scratch,
        } = self;
        let q = &mut queues[i];
        serve_queue(mem, interrupt.as_ref(), q, luns, *sizes, scratch, stopping);
    }
}

/// Complete every available chain of `aq`, then signal if the driver wants it. Whatever
/// the guest put in the rings, this returns once the available ring is drained, found
/// unusable, or `stopping` is set.
pub(crate) fn serve_queue(
    mem: &GuestMemoryMmap,
    interrupt: &dyn VirtioInterrupt,
    aq: &mut ActiveQueue,
    luns: &[Mutex<Lun>],
    sizes: HeaderSizes,
    scratch: &mut Vec<u8>,
    stopping: &AtomicBool,
) {
    if aq.index == EVENT_QUEUE {
        // Event buffers are kept for events we never generate (no hotplug).
        return;
    }
    let mut completed = 0usize;
    let mut empty_passes = 0;
    'drain: loop {
        if let Err(e) = aq.queue.disable_notification(mem) {
            tracing::error!(queue = aq.index, error = %e, "scsi queue unusable");
            break;
        }
        let before = completed;
        loop {
            // Checked before taking a chain, never after: a chain taken is completed,
            // so a stop (for a reset or a save) leaves no request half done.
            if stopping.load(Ordering::Relaxed) {
                break 'drain;
            }
            let Some(chain) = aq.queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let used = if aq.index == CONTROL_QUEUE {
                process_control(mem, chain, luns)
            } else {
                process_command(mem, chain, luns, sizes, scratch)
            };
            if let Err(e) = aq.queue.add_used(mem, head, used) {
                tracing::error!(queue = aq.index, error = %e, "scsi used ring unusable");
                break 'drain;
            }
            completed += 1;
            if completed % NOTIFY_BATCH == 0 {
                notify(mem, interrupt, aq);
            }
        }
        empty_passes = if completed == before {
            empty_passes + 1
        } else {
            0
        };
        match aq.queue.enable_notification(mem) {
            // More chains arrived while notifications were off: one empty pass can be
            // that race, a second means an avail index no chain can be popped for (a
            // corrupt ring), which must not keep this thread spinning.
            Ok(true) if empty_passes < 2 => continue,
            Ok(true) => {
                tracing::warn!(queue = aq.index, "scsi avail ring is corrupt; ignoring it");
                break;
            }
            Ok(false) => break,
            Err(e) => {
                tracing::error!(queue = aq.index, error = %e, "scsi queue unusable");
                break;
            }
        }
    }
    notify(mem, interrupt, aq);
}

fn notify(mem: &GuestMemoryMmap, interrupt: &dyn VirtioInterrupt, aq: &mut ActiveQueue) {
    match aq.queue.needs_notification(mem) {
        Ok(false) => {}
        Ok(true) => interrupt.notify_queue(aq.index),
        Err(e) => {
            // Better a spurious interrupt than a guest waiting forever.
            tracing::debug!(queue = aq.index, error = %e, "cannot read used_event");
            interrupt.notify_queue(aq.index);
        }
    }
}
