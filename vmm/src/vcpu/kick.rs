//! Getting a vCPU thread out of KVM_RUN.
//!
//! With an in-kernel irqchip a halted vCPU sleeps inside KVM_RUN and never exits by
//! itself. The control thread sets the vCPU's stop flag and sends it `SIGRTMIN`; the
//! handler sets `kvm_run.immediate_exit`, so KVM_RUN returns EINTR whether the signal
//! lands while the thread is inside the ioctl or just before it enters.

use std::cell::Cell;
use std::sync::Once;

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// This thread's `kvm_run.immediate_exit` byte, or null when no vCPU runs here.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    IMMEDIATE_EXIT.with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer was set by this thread from its live kvm_run mapping
            // and is cleared before that mapping goes away; a byte store is
            // async-signal-safe.
            unsafe { p.write_volatile(1) };
        }
    });
}

/// Install the kick handler once per process.
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// Point the kick handler at this thread's `immediate_exit` byte (null to detach).
pub fn bind_immediate_exit(p: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(p));
}
