//! Naming the process's threads so `ps`, `top -H` and `/proc/<pid>/task/*/comm` show
//! which VM and which vCPU a thread is.

/// Linux keeps 15 bytes of a thread name.
const COMM_MAX: usize = 15;

pub fn comm_name(name: &str) -> String {
    name.chars().take(COMM_MAX).collect()
}

/// Name the calling thread (for the main thread: the process's `comm`).
pub fn set_current(name: &str) {
    if let Err(e) = std::fs::write("/proc/thread-self/comm", comm_name(name)) {
        tracing::warn!("cannot name thread {name}: {e}");
    }
}

/// The calling thread's kernel thread id (what `top -H` and cgroup `tasks` show).
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}
