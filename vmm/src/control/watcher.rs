//! The control loop's eyes: every fd that can change the VM's course, turned into
//! [`ControlEvent`]s in the order epoll reported them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::events::VmEvents;
use crate::signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// The guest powered off (ACPI S5, KVM shutdown event).
    PowerOff,
    /// The guest reset itself.
    GuestReset,
    /// A vCPU stopped on an error.
    Failed,
    /// A stop signal arrived.
    Signal(i32),
    /// SIGUSR1: dump every vCPU's registers.
    Dump,
    /// API requests are waiting in the bridge's channel.
    Api,
    /// The graceful-shutdown timer expired.
    ShutdownTimeout,
    /// A migration thread has news.
    Migration,
}

impl ControlEvent {
    /// Raised by the guest (a vCPU thread), so tied to the machine that raised it.
    pub fn raised_by_guest(self) -> bool {
        matches!(
            self,
            ControlEvent::PowerOff | ControlEvent::GuestReset | ControlEvent::Failed
        )
    }
}

pub struct Watcher {
    events: VmEvents,
    signal_fd: OwnedFd,
    api_wake: EventFd,
    migration_wake: EventFd,
    timer: Arc<Mutex<TimerFd>>,
    pending: Vec<ControlEvent>,
}

impl Watcher {
    pub fn new(
        events: VmEvents,
        signal_fd: OwnedFd,
        api_wake: EventFd,
        migration_wake: EventFd,
        timer: Arc<Mutex<TimerFd>>,
    ) -> Self {
        Watcher {
            events,
            signal_fd,
            api_wake,
            migration_wake,
            timer,
            pending: Vec::new(),
        }
    }

    /// The events seen since the last call, oldest first.
    pub fn take(&mut self) -> Vec<ControlEvent> {
        std::mem::take(&mut self.pending)
    }

    fn fds(&self) -> [i32; 7] {
        [
            self.migration_wake.as_raw_fd(),
            self.events.power_off.as_raw_fd(),
            self.events.reset.as_raw_fd(),
            self.events.error.as_raw_fd(),
            self.signal_fd.as_raw_fd(),
            self.api_wake.as_raw_fd(),
            self.timer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_raw_fd(),
        ]
    }
}

impl MutEventSubscriber for Watcher {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in self.fds() {
            if let Err(e) = ops.add(Events::with_data_raw(fd, 0, EventSet::IN)) {
                tracing::error!("control loop cannot watch fd {fd}: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        // Each fd is read here, when epoll says it is readable, so the level-triggered
        // loop does not spin and a later disarm cannot make the read block.
        let event = if fd == self.events.power_off.as_raw_fd() {
            let _ = self.events.power_off.read();
            ControlEvent::PowerOff
        } else if fd == self.events.reset.as_raw_fd() {
            let _ = self.events.reset.read();
            ControlEvent::GuestReset
        } else if fd == self.events.error.as_raw_fd() {
            let _ = self.events.error.read();
            ControlEvent::Failed
        } else if fd == self.api_wake.as_raw_fd() {
            let _ = self.api_wake.read();
            ControlEvent::Api
        } else if fd == self.migration_wake.as_raw_fd() {
            let _ = self.migration_wake.read();
            ControlEvent::Migration
        } else if fd == self.signal_fd.as_raw_fd() {
            match signals::read_signal(fd) {
                Some(signals::DUMP_SIGNAL) => ControlEvent::Dump,
                Some(s) => ControlEvent::Signal(s),
                None => return,
            }
        } else {
            let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = timer.wait() {
                tracing::warn!("shutdown timer: {e}");
            }
            ControlEvent::ShutdownTimeout
        };
        self.pending.push(event);
    }
}
