//! One Linux AIO context, bound to one file and one guest memory. Requests name their
//! buffers as guest-memory pieces, never as host pointers: the iovecs are built here,
//! from the memory this context holds, which is how the one promise the kernel cannot
//! check is kept:
//!
//! - every iovec comes from vm-memory's bounds-checked translation of `self.mem`;
//! - the iovec array stays in the request's slot until its event is reaped;
//! - `self.mem` (a handle that keeps the guest mappings alive) is dropped only after
//!   `Drop` has reaped every request and `io_destroy` (which waits for stragglers) has
//!   returned. Should both fail, the mappings are leaked rather than unmapped under the
//!   kernel's feet.
//!
//! The kernel writes a read's data through raw iovecs, which vm-memory's dirty bitmap
//! cannot see: `reap` marks a read's guest pieces dirty once its event arrives (after
//! the kernel wrote them), so live migration resends those pages.
//!
//! Requests are bounded by the depth given at creation: `submit` refuses more, so the
//! caller (the virtio-blk worker) never has more in flight than its queue can hold.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryError};
use vmm_sys_util::eventfd::EventFd;

use super::sys::{self, ContextId, IoEvent, IoVec, Iocb};
use super::{ALIGN, MAX_BYTES, MAX_SEGMENTS};
use crate::virtio::GuestMemoryMmap;

/// What a request does with its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// File → guest memory.
    Read,
    /// Guest memory → file.
    Write,
}

/// Why `submit` did not queue a request. All but `Submit` are known before the kernel
/// is asked; the caller can then serve the request another way.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0} requests are already in flight")]
    Full(usize),
    #[error("offset, length or a buffer is not {ALIGN}-byte aligned (O_DIRECT)")]
    Unaligned,
    #[error("empty, or larger than {MAX_BYTES} bytes")]
    Size,
    #[error("more than {MAX_SEGMENTS} memory pieces")]
    TooManySegments,
    #[error("guest memory: {0}")]
    Memory(#[from] GuestMemoryError),
    #[error("io_submit: {0}")]
    Submit(#[source] io::Error),
}

/// A refused request, handed back with its refusal.
#[derive(Debug)]
pub struct Refused<T> {
    pub reason: Refusal,
    pub user: T,
}

/// A finished request: its caller data, and the bytes moved (a short count is possible,
/// e.g. a read at the end of a file that shrank) or the error.
#[derive(Debug)]
pub struct Completion<T> {
    pub user: T,
    pub op: Op,
    /// Bytes asked for.
    pub len: u64,
    pub result: io::Result<u64>,
}

/// A request in flight: the iovec array the kernel was given, and the caller's data.
struct Slot<T> {
    iovecs: Vec<IoVec>,
    /// For a read, the guest pieces the kernel writes into (marked dirty when it is
    /// done); empty for a write.
    written: Vec<(GuestAddress, u32)>,
    op: Op,
    len: u64,
    user: T,
}

pub struct AioContext<T> {
    id: ContextId,
    /// Signalled once per completion (IOCB_FLAG_RESFD); the worker polls it.
    eventfd: EventFd,
    file: Arc<File>,
    mem: GuestMemoryMmap,
    /// Indexed by `aio_data`; `None` is free.
    slots: Vec<Option<Slot<T>>>,
    free: Vec<usize>,
    events: Vec<IoEvent>,
}

impl<T> std::fmt::Debug for AioContext<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AioContext")
            .field("id", &self.id)
            .field("depth", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<T> AioContext<T> {
    /// A context for up to `depth` requests on `file` (opened with O_DIRECT), with
    /// buffers in `mem`.
    pub fn new(file: Arc<File>, mem: GuestMemoryMmap, depth: u16) -> io::Result<Self> {
        let depth = usize::from(depth.max(1));
        let eventfd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let id = sys::setup(depth as u32)?;
        Ok(AioContext {
            id,
            eventfd,
            file,
            mem,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            events: vec![IoEvent::default(); depth],
        })
    }

    /// The eventfd that becomes readable when requests complete.
    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// Reset the eventfd's counter after a wakeup (completions are found by `reap`).
    pub fn clear_eventfd(&self) {
        // EAGAIN: already zero, which is what we want.
        let _ = self.eventfd.read();
    }

    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Queue `op` of the guest pieces `segs` (in order) at file `offset`. Refused when
    /// the context is full, when O_DIRECT's alignment (offset, length, and every
    /// piece's host address and length) does not hold, or when the kernel refuses.
    pub fn submit(
        &mut self,
        op: Op,
        offset: u64,
        segs: &[(GuestAddress, u32)],
        user: T,
    ) -> Result<(), Refused<T>> {
        let refuse = |reason, user| Err(Refused { reason, user });
        let Some(&index) = self.free.last() else {
            return refuse(Refusal::Full(self.depth()), user);
        };
        let iovecs = match self.iovecs(offset, segs) {
            Ok(v) => v,
            Err(reason) => return refuse(reason, user),
        };
        let len = iovecs.iter().map(|v| v.len as u64).sum();
        let written = match op {
            Op::Read => segs.to_vec(),
            Op::Write => Vec::new(),
        };
        let slot = self.slots[index].insert(Slot {
            iovecs,
            written,
            op,
            len,
            user,
        });
        let mut iocb = Iocb {
            aio_data: index as u64,
            aio_lio_opcode: match op {
                Op::Read => sys::IOCB_CMD_PREADV,
                Op::Write => sys::IOCB_CMD_PWRITEV,
            },
            aio_fildes: self.file.as_raw_fd() as u32,
            aio_buf: slot.iovecs.as_ptr() as u64,
            aio_nbytes: slot.iovecs.len() as u64,
            aio_offset: offset as i64,
            aio_flags: sys::IOCB_FLAG_RESFD,
            aio_resfd: self.eventfd.as_raw_fd() as u32,
            ..Default::default()
        };
        let mut iocbs = [&mut iocb as *mut Iocb];
        // SAFETY: `iocb` is alive for the call. Its iovec array is the slot's vector,
        // which stays in `self.slots` (its heap buffer does not move) until `reap`
        // takes the slot after the kernel reported this request done. Each iovec was
        // made by `iovecs()` from `self.mem`'s own translation of checked guest
        // ranges, and `self.mem` keeps those mappings alive until `Drop` has waited for
        // every request (module comment). Guest memory is the guest's to race on.
        match unsafe { sys::submit(self.id, &mut iocbs) } {
            Ok(1) => {
                self.free.pop();
                Ok(())
            }
            other => {
                let reason = match other {
                    Err(e) => e,
                    Ok(_) => io::Error::other("io_submit queued nothing"),
                };
                let slot = self.slots[index].take().expect("slot filled above");
                refuse(Refusal::Submit(reason), slot.user)
            }
        }
    }

    /// Host iovecs for the guest pieces `segs`, checked for O_DIRECT.
    fn iovecs(&self, offset: u64, segs: &[(GuestAddress, u32)]) -> Result<Vec<IoVec>, Refusal> {
        let aligned = |x: u64| x % ALIGN == 0;
        let total: u64 = segs.iter().map(|&(_, l)| u64::from(l)).sum();
        if total == 0 || total > MAX_BYTES {
            return Err(Refusal::Size);
        }
        if !aligned(offset) || !aligned(total) {
            return Err(Refusal::Unaligned);
        }
        let mut iovecs = Vec::with_capacity(segs.len());
        for &(addr, len) in segs {
            // A piece may span guest memory regions: one iovec per region.
            for slice in self.mem.get_slices(addr, len as usize) {
                let slice = slice?;
                let base = slice.ptr_guard_mut().as_ptr() as usize;
                if !aligned(base as u64) || !aligned(slice.len() as u64) {
                    return Err(Refusal::Unaligned);
                }
                if iovecs.len() == MAX_SEGMENTS {
                    return Err(Refusal::TooManySegments);
                }
                iovecs.push(IoVec {
                    base,
                    len: slice.len(),
                });
            }
        }
        Ok(iovecs)
    }

    /// Move finished requests to `out`. `wait`: block until at least one finishes
    /// (returns at once when none is in flight); otherwise take only what is ready.
    /// Returns how many were added.
    pub fn reap(&mut self, wait: bool, out: &mut Vec<Completion<T>>) -> io::Result<usize> {
        let in_flight = self.in_flight();
        if in_flight == 0 {
            return Ok(0);
        }
        let (min, timeout) = if wait {
            (1, None)
        } else {
            (0, Some(Duration::ZERO))
        };
        let n = loop {
            match sys::getevents(self.id, min, &mut self.events[..in_flight], timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        let mut added = 0;
        for ev in &self.events[..n] {
            let index = ev.data as usize;
            let Some(slot) = self.slots.get_mut(index).and_then(Option::take) else {
                // Only requests we submitted carry our indices.
                tracing::error!("AIO event for unknown request {}", ev.data);
                continue;
            };
            self.free.push(index);
            // Even a failed read may have written part of its buffers.
            mark_dirty(&self.mem, &slot.written);
            let result = if ev.res < 0 {
                Err(io::Error::from_raw_os_error((-ev.res) as i32))
            } else {
                Ok(ev.res as u64)
            };
            out.push(Completion {
                user: slot.user,
                op: slot.op,
                len: slot.len,
                result,
            });
            added += 1;
        }
        Ok(added)
    }
}

/// Record in `mem`'s dirty bitmap that the kernel wrote the guest pieces `segs`.
fn mark_dirty(mem: &GuestMemoryMmap, segs: &[(GuestAddress, u32)]) {
    for &(addr, len) in segs {
        // Each piece was translated when the request was submitted, and `mem`'s
        // regions never change, so none fails here.
        for slice in mem.get_slices(addr, len as usize).flatten() {
            slice.bitmap().mark_dirty(0, slice.len());
        }
    }
}

impl<T> Drop for AioContext<T> {
    fn drop(&mut self) {
        // The kernel may still read from or write to guest memory for requests in
        // flight: wait for them before the memory handle and the iovecs go.
        let mut done = Vec::new();
        while self.in_flight() > 0 {
            if let Err(e) = self.reap(true, &mut done) {
                tracing::error!("cannot wait for AIO requests in flight: {e}");
                break;
            }
            done.clear();
        }
        let stragglers = self.in_flight();
        if let Err(e) = sys::destroy(self.id) {
            tracing::error!("io_destroy: {e}");
            if stragglers > 0 {
                // Nobody can say when the kernel is done with these buffers: keep the
                // guest memory mapped for the life of the process.
                std::mem::forget(self.mem.clone());
                std::mem::forget(std::mem::take(&mut self.slots));
            }
        }
    }
}
