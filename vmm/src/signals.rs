//! Process signals: SIGTERM/SIGINT/SIGHUP are read from a signalfd by the control loop
//! (blocked in every thread, so no vCPU thread is ever interrupted by them), and a
//! real-time signal kicks vCPU threads out of KVM_RUN.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Signals that stop the VM.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// Signal that dumps every vCPU's registers to stderr, the VM keeps running.
pub const DUMP_SIGNAL: libc::c_int = libc::SIGUSR1;

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the local set we pass them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS.into_iter().chain([DUMP_SIGNAL]) {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the stop and dump signals in the calling thread (and so in every thread it spawns
/// afterwards) and return a signalfd that reports them. Call before spawning threads.
pub fn block_stop_signals() -> std::io::Result<OwnedFd> {
    let set = stop_sigset();
    // SAFETY: `set` is a valid sigset; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `set` is valid; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Read one pending signal number from a signalfd, if any.
pub fn read_signal(fd: RawFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data; zeroed is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: we read at most `size` bytes into `info`, which is that large.
    let n = unsafe { libc::read(fd, &mut info as *mut _ as *mut libc::c_void, size) };
    (n == size as isize).then_some(info.ssi_signo as i32)
}

pub fn signal_name(signo: i32) -> &'static str {
    match signo {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}
