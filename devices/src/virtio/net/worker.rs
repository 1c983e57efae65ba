//! One thread per queue pair: it owns the pair's receive and transmit queues and tap
//! queue, and sleeps in epoll on the tap fd, the two kick eventfds and a control
//! eventfd (stop / tap queue switched on or off). The first pair's thread also serves
//! the control queue. Threads are named `net-<id>-q<pair>` so `top -H` tells them apart.
//!
//! Nothing here spins: the tap is watched for reading only while the guest has
//! receive buffers (otherwise we wait for its rx kick), for writing only while a frame
//! is stuck behind a full tap, and each wake-up handles a bounded batch per queue so
//! that one busy direction cannot starve the other.
//!
//! A stopped thread gives its queues back ([`WorkerQueues`]), positioned after what
//! was completed: buffers taken for a frame that never came, and a transmit frame the
//! tap would not take yet, go back to the available rings. A received frame still
//! waiting for guest buffers is dropped, as a NIC drops what is in its FIFO.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::super::{ActiveQueue, GuestMemoryMmap, VirtioInterrupt};
use super::ctrl::CtrlQueue;
use super::metrics::NetMetrics;
use super::rx::{RxOutcome, RxQueue};
use super::tx::{TxQueue, TxStatus};
use super::MAX_FRAME_LEN;
use crate::net::{Tap, VNET_HDR_LEN};

/// Frames handled per queue and wake-up before looking at other events.
const RX_BUDGET: usize = 64;
const TX_BUDGET: usize = 64;
const CTRL_BUDGET: usize = 64;

const TOKEN_TAP: u64 = 0;
const TOKEN_RX_KICK: u64 = 1;
const TOKEN_TX_KICK: u64 = 2;
const TOKEN_CTRL_KICK: u64 = 3;
const TOKEN_CONTROL: u64 = 4;

/// How the device talks to a running worker.
#[derive(Debug)]
pub(crate) struct WorkerControl {
    evt: EventFd,
    stop: AtomicBool,
    tap_enabled: AtomicBool,
}

impl WorkerControl {
    pub fn new(tap_enabled: bool) -> io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            stop: AtomicBool::new(false),
            tap_enabled: AtomicBool::new(tap_enabled),
        })
    }

    /// Ask the worker to exit (then join it).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// The pair's tap queue was attached or detached: (stop) watching it.
    pub fn set_tap_enabled(&self, enabled: bool) {
        self.tap_enabled.store(enabled, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        if let Err(e) = self.evt.write(1) {
            tracing::error!("cannot wake a net worker: {e}");
        }
    }
}

/// The control queue and what its commands act on (first pair's worker only).
pub(crate) struct CtrlContext {
    pub queue: CtrlQueue,
    pub index: u16,
    pub kick: EventFd,
    /// Controls of all running workers, by pair.
    pub controls: Vec<Arc<WorkerControl>>,
    pub max_pairs: u16,
    /// Queue pairs the driver asked for last (kept by the device for a save).
    pub pairs_in_use: Arc<AtomicU16>,
}

/// The queues a stopped worker hands back.
pub(crate) struct WorkerQueues {
    pub rx: ActiveQueue,
    pub tx: ActiveQueue,
    pub ctrl: Option<ActiveQueue>,
}

/// Everything one queue pair's thread works with.
pub(crate) struct Worker {
    pub pair: u16,
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    pub metrics: Arc<NetMetrics>,
    pub tap: Arc<Tap>,
    pub rx: RxQueue,
    pub rx_index: u16,
    pub rx_kick: EventFd,
    pub tx: TxQueue,
    pub tx_index: u16,
    pub tx_kick: EventFd,
    pub ctrl: Option<CtrlContext>,
    pub control: Arc<WorkerControl>,
}

impl Worker {
    /// Start the thread; joining it gives the queues back.
    pub fn spawn(self, name: String) -> io::Result<JoinHandle<WorkerQueues>> {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || self.run(&name))
    }

    fn run(self, name: &str) -> WorkerQueues {
        let epoll = match Epoll::new() {
            Ok(epoll) => epoll,
            Err(e) => {
                tracing::error!("{name}: worker cannot start: {e}");
                return self.into_queues();
            }
        };
        let mut w = Running {
            w: self,
            epoll,
            tap_events: EventSet::empty(),
            rx_frame: vec![0u8; MAX_FRAME_LEN],
            rx_pending: None,
            rx_waiting: false,
            rx_more: false,
            tx_blocked: false,
            tx_more: false,
            ctrl_more: false,
            tap_error: false,
            tap_error_logged: false,
        };
        if let Err(e) = w.event_loop() {
            tracing::error!("{name}: worker stopped: {e}");
        }
        w.into_queues()
    }

    /// The queues as they stand (nothing taken from them is pending).
    fn into_queues(self) -> WorkerQueues {
        WorkerQueues {
            rx: ActiveQueue {
                index: self.rx_index,
                queue: self.rx.into_queue(),
                kick: self.rx_kick,
            },
            tx: ActiveQueue {
                index: self.tx_index,
                queue: self.tx.into_queue(),
                kick: self.tx_kick,
            },
            ctrl: self.ctrl.map(|c| ActiveQueue {
                index: c.index,
                queue: c.queue.into_queue(),
                kick: c.kick,
            }),
        }
    }
}

impl Running {
    /// Serve events until told to stop.
    fn event_loop(&mut self) -> io::Result<()> {
        let w = self;
        w.add(w.w.rx_kick.as_raw_fd(), TOKEN_RX_KICK)?;
        w.add(w.w.tx_kick.as_raw_fd(), TOKEN_TX_KICK)?;
        w.add(w.w.control.evt.as_raw_fd(), TOKEN_CONTROL)?;
        if let Some(ctrl) = &w.w.ctrl {
            w.add(ctrl.kick.as_raw_fd(), TOKEN_CTRL_KICK)?;
        }
        // Receive buffers are taken when frames arrive; the guest need only kick when
        // we ran out (see process_rx).
        w.w.rx.disable_notification(&w.w.mem);
        // The driver may have queued buffers and kicked before we started.
        w.process_ctrl();
        w.process_tx();
        w.process_rx();
        w.sync_tap_interest();

        let mut events = [EpollEvent::default(); 8];
        loop {
            let timeout = if w.rx_more || w.tx_more || w.ctrl_more {
                0
            } else {
                -1
            };
            let n = match w.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (mut do_rx, mut do_tx, mut do_ctrl) = (w.rx_more, w.tx_more, w.ctrl_more);
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_CONTROL => {
                        let _ = w.w.control.evt.read();
                        if w.w.control.stop.load(Ordering::Acquire) {
                            return Ok(());
                        }
                        // The tap queue may have been attached: try it afresh.
                        w.tap_error = false;
                        do_rx = true;
                    }
                    TOKEN_RX_KICK => {
                        let _ = w.w.rx_kick.read();
                        if w.rx_waiting {
                            w.rx_waiting = false;
                            w.w.rx.disable_notification(&w.w.mem);
                        }
                        w.tap_error = false;
                        do_rx = true;
                    }
                    TOKEN_TX_KICK => {
                        let _ = w.w.tx_kick.read();
                        do_tx = true;
                    }
                    TOKEN_CTRL_KICK => {
                        if let Some(ctrl) = &w.w.ctrl {
                            let _ = ctrl.kick.read();
                        }
                        do_ctrl = true;
                    }
                    TOKEN_TAP => {
                        let set = ev.event_set();
                        if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                            // Reported whatever we ask for: stop watching the tap until
                            // something changes, or this loop would spin.
                            if !std::mem::replace(&mut w.tap_error_logged, true) {
                                tracing::warn!(
                                    "net worker q{}: tap {} reports an error/hang-up",
                                    w.w.pair,
                                    w.w.tap.name()
                                );
                            }
                            w.tap_error = true;
                        }
                        do_rx |= set.contains(EventSet::IN);
                        do_tx |= set.contains(EventSet::OUT);
                    }
                    _ => {}
                }
            }
            if do_ctrl {
                w.process_ctrl();
            }
            if do_tx {
                w.process_tx();
            }
            if do_rx {
                w.process_rx();
            }
            w.sync_tap_interest();
        }
    }
}

/// A worker's loop state.
struct Running {
    w: Worker,
    epoll: Epoll,
    /// What the tap fd is registered for (empty: not registered).
    tap_events: EventSet,
    rx_frame: Vec<u8>,
    /// Length of a frame in `rx_frame` still waiting for guest buffers.
    rx_pending: Option<usize>,
    /// Out of guest buffers: tap not read until the guest kicks rx.
    rx_waiting: bool,
    rx_more: bool,
    /// A frame is waiting for the tap to become writable.
    tx_blocked: bool,
    tx_more: bool,
    ctrl_more: bool,
    /// The tap reported an error or hang-up (e.g. deleted under us): not watched until
    /// a kick or control event suggests trying again.
    tap_error: bool,
    tap_error_logged: bool,
}

impl Running {
    /// Stop with the queues kept: unfilled receive buffers go back to the ring (see
    /// `RxQueue::release_stash`) and the driver hears about anything returned.
    fn into_queues(mut self) -> WorkerQueues {
        let w = &mut self.w;
        if self.rx_pending.is_some() {
            tracing::debug!(
                "net worker q{}: dropping a frame waiting for buffers",
                w.pair
            );
        }
        w.rx.release_stash(&w.mem);
        if w.rx.needs_notification(&w.mem) {
            w.interrupt.notify_queue(w.rx_index);
        }
        self.w.into_queues()
    }

    fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    }

    fn tap_enabled(&self) -> bool {
        self.w.control.tap_enabled.load(Ordering::Acquire)
    }

    fn process_rx(&mut self) {
        self.rx_more = false;
        let mut budget = RX_BUDGET;
        let mut rechecked = false;
        loop {
            if budget == 0 {
                // More may be queued: come back after the other events, so a flood
                // from the host cannot starve transmit.
                self.rx_more = true;
                break;
            }
            budget -= 1;
            let len = match self.rx_pending {
                Some(len) => len,
                None => {
                    if !self.tap_enabled() || self.tap_error {
                        break;
                    }
                    let queue = &self.w.tap.queues()[usize::from(self.w.pair)];
                    match queue.read_frame(&mut self.rx_frame) {
                        Ok(n) if n >= VNET_HDR_LEN => n,
                        Ok(n) => {
                            tracing::debug!("rx: {n}-byte read from the tap");
                            self.w.metrics.add_rx_errors(1);
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::debug!("rx: tap read failed: {e}");
                            self.w.metrics.add_rx_errors(1);
                            break;
                        }
                    }
                }
            };
            let frame = &mut self.rx_frame[..len];
            match self.w.rx.deliver(&self.w.mem, frame, &self.w.metrics) {
                RxOutcome::Delivered { .. } | RxOutcome::Dropped => {
                    self.rx_pending = None;
                    rechecked = false;
                }
                RxOutcome::Retry => {
                    self.rx_pending = Some(len);
                    self.rx_more = true;
                    break;
                }
                RxOutcome::NeedBuffers => {
                    self.rx_pending = Some(len);
                    // Kicks on: from now on the guest tells us when it adds buffers.
                    if self.w.rx.enable_notification(&self.w.mem) {
                        if !rechecked {
                            // Buffers arrived meanwhile; no kick will announce them.
                            rechecked = true;
                            self.w.rx.disable_notification(&self.w.mem);
                            continue;
                        }
                        // Still none although the index says so: a bogus index (more
                        // than a ring ahead). Wait for a kick rather than spin.
                        tracing::debug!("rx: available ring index is invalid");
                    }
                    if !self.rx_waiting {
                        self.w.metrics.add_rx_no_buffers(1);
                    }
                    self.rx_waiting = true;
                    break;
                }
            }
        }
        if self.w.rx.needs_notification(&self.w.mem) {
            self.w.interrupt.notify_queue(self.w.rx_index);
        }
    }

    fn process_tx(&mut self) {
        let w = &mut self.w;
        let queue = &w.tap.queues()[usize::from(w.pair)];
        let status = w.tx.process(&w.mem, &w.metrics, TX_BUDGET, &mut |frame| {
            queue.write_frame(frame)
        });
        self.tx_blocked = status == TxStatus::Blocked;
        self.tx_more = status == TxStatus::More;
        if w.tx.needs_notification(&w.mem) {
            w.interrupt.notify_queue(w.tx_index);
        }
    }

    fn process_ctrl(&mut self) {
        let w = &mut self.w;
        let Some(ctrl) = &mut w.ctrl else {
            return;
        };
        let tap = &w.tap;
        let controls = &ctrl.controls;
        let in_use = &ctrl.pairs_in_use;
        let mut set_pairs = |pairs: u16| {
            let ok = set_queue_pairs(tap, controls, pairs);
            if ok {
                in_use.store(pairs, Ordering::Release);
            }
            ok
        };
        self.ctrl_more = ctrl.queue.process(
            &w.mem,
            &w.metrics,
            CTRL_BUDGET,
            ctrl.max_pairs,
            &mut set_pairs,
        );
        if ctrl.queue.needs_notification(&w.mem) {
            w.interrupt.notify_queue(ctrl.index);
        }
    }

    /// Register the tap for what we currently want from it: readable while we can
    /// take frames, writable while a frame waits. Nothing wanted: unregistered, since
    /// epoll reports errors on a registered fd whatever we ask for.
    fn sync_tap_interest(&mut self) {
        let usable = self.tap_enabled() && !self.tap_error;
        let mut want = EventSet::empty();
        if usable && !self.rx_waiting {
            want |= EventSet::IN;
        }
        if usable && self.tx_blocked {
            want |= EventSet::OUT;
        }
        if want == self.tap_events {
            return;
        }
        let fd = self.w.tap.queues()[usize::from(self.w.pair)].as_raw_fd();
        let op = if want.is_empty() {
            ControlOperation::Delete
        } else if self.tap_events.is_empty() {
            ControlOperation::Add
        } else {
            ControlOperation::Modify
        };
        match self.epoll.ctl(op, fd, EpollEvent::new(want, TOKEN_TAP)) {
            Ok(()) => self.tap_events = want,
            Err(e) => tracing::error!("net worker q{}: epoll_ctl on the tap: {e}", self.w.pair),
        }
    }
}

/// Use the first `pairs` queue pairs: attach their tap queues, detach the others (so
/// the kernel steers no flow to a queue nobody reads), and tell the workers.
fn set_queue_pairs(tap: &Tap, controls: &[Arc<WorkerControl>], pairs: u16) -> bool {
    for index in 0..tap.queues().len() {
        let enabled = index < usize::from(pairs) && index < controls.len();
        if let Err(e) = tap.set_queue_enabled(index, enabled) {
            tracing::warn!("cannot switch to {pairs} queue pairs: {e}");
            return false;
        }
        if let Some(control) = controls.get(index) {
            control.set_tap_enabled(enabled);
        }
    }
    tracing::debug!(tap = tap.name(), pairs, "queue pairs in use");
    true
}
