//! An eventfd that devices "fire" to notify the VMM or KVM.
//!
//! The same type serves two purposes: interrupt lines (the eventfd is registered with
//! KVM as an irqfd, so firing it injects the interrupt without a VMM round trip) and VM
//! events such as reset or power-off (the VMM's event loop polls the eventfd).

use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::eventfd::EventFd;

/// An [`EventFd`] usable as a `vm_superio::Trigger`.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// A fresh non-blocking eventfd: a device must never block a vCPU thread, even if
    /// nobody drains the counter.
    pub fn new() -> io::Result<Self> {
        EventFd::new(libc::EFD_NONBLOCK).map(Self)
    }

    /// Another handle on the same eventfd (e.g. one for the device, one for KVM).
    pub fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(Self)
    }
}

impl From<EventFd> for EventFdTrigger {
    fn from(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Deref for EventFdTrigger {
    type Target = EventFd;

    fn deref(&self) -> &EventFd {
        &self.0
    }
}

impl AsRawFd for EventFdTrigger {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_superio::Trigger;

    #[test]
    fn trigger_is_visible_through_clones() {
        let evt = EventFdTrigger::new().unwrap();
        let clone = evt.try_clone().unwrap();
        clone.trigger().unwrap();
        clone.trigger().unwrap();
        assert_eq!(evt.read().unwrap(), 2);
        // Non-blocking: an empty counter is an error, not a hang.
        assert_eq!(evt.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
