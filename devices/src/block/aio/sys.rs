//! The Linux AIO system calls (`io_setup`, `io_submit`, `io_getevents`, `io_destroy`) and
//! the kernel's structures, laid out as `include/uapi/linux/aio_abi.h` defines them.
//! libc has the syscall numbers but not these types. Every `unsafe` of the AIO engine
//! lives here; `context.rs` states the one thing the kernel cannot check (that buffers
//! stay alive while it uses them) and upholds it.

use std::io;
use std::mem::size_of;
use std::time::Duration;

/// `IOCB_CMD_PREADV` / `IOCB_CMD_PWRITEV`: vectored read/write at an offset.
pub(super) const IOCB_CMD_PREADV: u16 = 7;
pub(super) const IOCB_CMD_PWRITEV: u16 = 8;

/// `IOCB_FLAG_RESFD`: on completion, add 1 to the eventfd in `aio_resfd`.
pub(super) const IOCB_FLAG_RESFD: u32 = 1;

/// The kernel's handle of an AIO context (`aio_context_t`).
pub(super) type ContextId = libc::c_ulong;

/// `struct iocb`. On little-endian machines `aio_key` comes before `aio_rw_flags`
/// (the uapi header swaps them on big-endian ones, which oxvm does not run on).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Iocb {
    pub aio_data: u64,
    pub aio_key: u32,
    pub aio_rw_flags: i32,
    pub aio_lio_opcode: u16,
    pub aio_reqprio: i16,
    pub aio_fildes: u32,
    /// For the vectored commands: the address of an array of `struct iovec`.
    pub aio_buf: u64,
    /// For the vectored commands: the number of `struct iovec`s.
    pub aio_nbytes: u64,
    pub aio_offset: i64,
    pub aio_reserved2: u64,
    pub aio_flags: u32,
    pub aio_resfd: u32,
}

/// `struct io_event`: `data` is the submitted `aio_data`, `res` the byte count or a
/// negated errno.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IoEvent {
    pub data: u64,
    pub obj: u64,
    pub res: i64,
    pub res2: i64,
}

/// `struct iovec` with integer fields, so that holding one needs no `Send` exemption:
/// `void *` and `size_t` are both pointer-sized on Linux.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IoVec {
    pub base: usize,
    pub len: usize,
}

const _: () = assert!(cfg!(target_endian = "little"));
const _: () = assert!(size_of::<Iocb>() == 64);
const _: () = assert!(size_of::<IoEvent>() == 32);
const _: () = assert!(size_of::<IoVec>() == size_of::<libc::iovec>());

/// Turn a raw syscall return into a count or the errno.
fn check(ret: libc::c_long) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `io_setup`: a context able to hold `nr_events` requests in flight.
pub(super) fn setup(nr_events: u32) -> io::Result<ContextId> {
    let mut ctx: ContextId = 0;
    // SAFETY: io_setup writes one aio_context_t through the pointer, which points at
    // `ctx`, a live ContextId initialised to 0 as the kernel requires.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_setup,
            // Every argument as a full register: syscall(2) reads them as longs.
            libc::c_long::from(nr_events),
            &mut ctx as *mut ContextId,
        )
    };
    check(ret)?;
    Ok(ctx)
}

/// `io_destroy`: cancel what can be cancelled and block until every request of the
/// context has completed (as Linux has done since the 2013 fix "aio: block
/// io_destroy() until all context requests are completed"), then free it.
pub(super) fn destroy(ctx: ContextId) -> io::Result<()> {
    // SAFETY: io_destroy takes the context by value and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    check(ret).map(drop)
}

/// `io_submit` of the iocbs `iocbs` point to; returns how many were queued (the first
/// `n`), or the error of the first one when none was.
///
/// # Safety
///
/// Each pointer must point at a valid `Iocb` (the kernel copies it during the call).
/// The iovec array each one names and every buffer those iovecs describe must stay
/// valid (mapped, and not otherwise used in a way the I/O would race with) until the
/// request's event has been returned by [`getevents`] or [`destroy`] has returned.
pub(super) unsafe fn submit(ctx: ContextId, iocbs: &mut [*mut Iocb]) -> io::Result<usize> {
    // SAFETY: the array pointer and length describe `iocbs`, alive for the call; what
    // the iocbs point to is the caller's promise above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_submit,
            ctx,
            iocbs.len() as libc::c_long,
            iocbs.as_mut_ptr(),
        )
    };
    check(ret)
}

/// `io_getevents`: wait for at least `min_nr` completions (at most `events.len()`), or
/// until `timeout` passes (`None`: no limit). Returns how many events were filled in.
pub(super) fn getevents(
    ctx: ContextId,
    min_nr: usize,
    events: &mut [IoEvent],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the kernel writes at most `events.len()` io_events into `events`, a live
    // mutable slice of exactly that layout; `ts_ptr` is null or points at `ts`, alive
    // for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            min_nr.min(events.len()) as libc::c_long,
            events.len() as libc::c_long,
            events.as_mut_ptr(),
            ts_ptr,
        )
    };
    check(ret)
}
