//! Pausing vCPU threads: a paused vCPU waits outside KVM_RUN, between two exits, so no
//! guest instruction runs and no device access is half done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    paused: bool,
    /// vCPU threads currently parked.
    parked: usize,
    /// vCPU threads that have ended (a parked count never reaches them).
    gone: usize,
    /// Set when the threads are being stopped: nobody parks any more.
    stopping: bool,
    /// Bumped to wake parked threads for work they do while parked (saving state).
    pokes: u64,
}

/// Shared by the control thread and the vCPU threads of one boot.
#[derive(Default)]
pub struct PauseControl {
    state: Mutex<State>,
    cv: Condvar,
    /// Mirrors `State::paused`, so a vCPU thread checks it on every exit without
    /// taking the lock (the exit path is the hot path).
    requested: AtomicBool,
}

impl PauseControl {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask the vCPUs to park; the caller kicks them out of KVM_RUN and then calls
    /// [`wait_parked`](Self::wait_parked).
    pub fn request_pause(&self) {
        let mut s = self.lock();
        s.paused = true;
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Wait until each of `total` vCPU threads has parked or ended.
    pub fn wait_parked(&self, total: usize) {
        let mut s = self.lock();
        while s.paused && s.parked + s.gone < total {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Let parked vCPUs run again.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.requested.store(false, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// The threads are about to be stopped: release any parked one for good.
    pub fn release_for_stop(&self) {
        let mut s = self.lock();
        s.stopping = true;
        s.paused = false;
        self.requested.store(false, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// Wake parked threads so they look for work (see `park_if_paused`).
    pub fn poke(&self) {
        self.lock().pokes += 1;
        self.cv.notify_all();
    }

    /// Called by a vCPU thread between exits: park while a pause is requested. While
    /// parked, `on_poke` runs (without the lock) each time the thread is poked.
    pub(super) fn park_if_paused(&self, mut on_poke: impl FnMut()) {
        // A pause sets the flag before it kicks the vCPU, so the check after the kick
        // sees it.
        if !self.requested.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.lock();
        if !s.paused || s.stopping {
            return;
        }
        s.parked += 1;
        self.cv.notify_all();
        let mut seen = s.pokes;
        while s.paused && !s.stopping {
            if s.pokes != seen {
                seen = s.pokes;
                drop(s);
                on_poke();
                s = self.lock();
                continue;
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.parked -= 1;
    }

    /// Called by a vCPU thread when it ends, so a pause does not wait for it.
    pub(super) fn thread_gone(&self) {
        self.lock().gone += 1;
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pause_waits_for_every_thread_to_park_or_end() {
        let pc = Arc::new(PauseControl::default());
        pc.request_pause();
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let pc = pc.clone();
                std::thread::spawn(move || {
                    if i == 2 {
                        pc.thread_gone();
                    } else {
                        pc.park_if_paused(|| {});
                    }
                })
            })
            .collect();
        pc.wait_parked(3);
        assert_eq!(pc.lock().parked, 2);
        assert!(pc.lock().paused);
        pc.resume();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(pc.lock().parked, 0);
    }

    #[test]
    fn a_parked_thread_does_poked_work_and_stays_parked() {
        let pc = Arc::new(PauseControl::default());
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        pc.request_pause();
        let t = {
            let (pc, done) = (pc.clone(), done.clone());
            std::thread::spawn(move || {
                pc.park_if_paused(|| {
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
        };
        pc.wait_parked(1);
        pc.poke();
        while done.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(pc.lock().parked, 1);
        pc.resume();
        t.join().unwrap();
    }

    #[test]
    fn stopping_releases_parked_threads_and_stops_parking() {
        let pc = Arc::new(PauseControl::default());
        pc.request_pause();
        let t = {
            let pc = pc.clone();
            std::thread::spawn(move || pc.park_if_paused(|| {}))
        };
        pc.wait_parked(1);
        pc.release_for_stop();
        t.join().unwrap();
        pc.request_pause();
        pc.park_if_paused(|| {}); // returns at once: stopping
    }
}
