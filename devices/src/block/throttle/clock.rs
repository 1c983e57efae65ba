//! Time for the throttle: a clock that can be replaced in tests, and waits that a device
//! reset can cut short.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Monotonic time and sleeping. Tests use a fake clock whose `sleep` only advances time,
/// so minutes of throttling are checked in microseconds.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;

    /// Wait for `d`, or less if `cancel` fires first.
    fn sleep(&self, d: Duration, cancel: &WaitCanceller);
}

/// The real clock.
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, d: Duration, cancel: &WaitCanceller) {
        cancel.wait_timeout(d);
    }
}

/// Cuts short throttling waits: a device sets it before stopping its worker, so a reset
/// never waits for a throttled request; and clears it before starting a worker again.
/// Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct WaitCanceller(Arc<(Mutex<bool>, Condvar)>);

impl WaitCanceller {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wake every current wait and make later waits return at once, until `reset`.
    pub fn cancel(&self) {
        *self.flag() = true;
        self.0 .1.notify_all();
    }

    /// Allow waiting again.
    pub fn reset(&self) {
        *self.flag() = false;
    }

    pub fn is_cancelled(&self) -> bool {
        *self.flag()
    }

    /// Sleep for `d` unless cancelled. Returns whether it was cancelled.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut cancelled = self.flag();
        while !*cancelled {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            cancelled = match self.0 .1.wait_timeout(cancelled, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *cancelled
    }

    fn flag(&self) -> MutexGuard<'_, bool> {
        // A poisoned flag is still a valid bool.
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A clock for tests: `sleep` advances the time and adds to the total slept.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeClock {
    state: Mutex<(Duration, Duration)>,
}

#[cfg(test)]
impl FakeClock {
    /// Total time spent in `sleep`.
    pub(crate) fn slept(&self) -> Duration {
        self.state.lock().unwrap().1
    }

    /// Let time pass without sleeping (idle guest).
    pub(crate) fn advance(&self, d: Duration) {
        self.state.lock().unwrap().0 += d;
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> Duration {
        self.state.lock().unwrap().0
    }

    fn sleep(&self, d: Duration, _cancel: &WaitCanceller) {
        let mut s = self.state.lock().unwrap();
        s.0 += d;
        s.1 += d;
    }
}
