//! Serving one request: parse the chain, admit it (iotune), run it against the backend,
//! write the status. The io=native worker uses the same steps one by one, and `io_done`
//! for the reads and writes it sends to Linux AIO, so both modes count alike.
//!
//! Data moves through a bounded bounce buffer in pieces, so a guest's request size never
//! decides how much host memory is allocated. Requests run one after another in queue
//! order: by the time a FLUSH runs, every earlier write has completed, and the FLUSH
//! completes only after `DiskBackend::flush` returned Ok.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::buffers::{BufferError, GuestBuffers};
use super::metrics::BlkMetrics;
use super::request::{
    parse, Request, RequestKind, RequestLimits, ID_BYTES, S_IOERR, S_OK, S_UNSUPP,
};
use crate::block::{DiskBackend, IoDirection, NativeIo, WaitCanceller};
use crate::virtio::GuestMemoryMmap;

/// Bytes moved per backend call at most.
const BOUNCE_SIZE: usize = 1 << 20;

/// Why an admitted request failed.
#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("disk I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("guest buffer: {0}")]
    Guest(#[from] BufferError),
}

/// The throttling admission a request needs (direction, bytes), counted once per guest
/// request; write-zeroes counts as a write operation of no bytes.
pub(crate) fn admission(kind: &RequestKind) -> Option<(IoDirection, u64)> {
    match kind {
        RequestKind::In { data, .. } => Some((IoDirection::Read, data.len())),
        RequestKind::Out { data, .. } => Some((IoDirection::Write, data.len())),
        RequestKind::WriteZeroes { .. } => Some((IoDirection::Write, 0)),
        RequestKind::Flush | RequestKind::GetId { .. } | RequestKind::Discard { .. } => None,
    }
}

pub(crate) struct Executor {
    id: String,
    backend: Box<dyn DiskBackend>,
    limits: RequestLimits,
    serial: [u8; ID_BYTES],
    bounce: Vec<u8>,
    metrics: Arc<BlkMetrics>,
    throttled: bool,
    /// Guest and host errors are logged at warn level once, then at debug level, so a
    /// misbehaving guest or a failing disk cannot flood the log.
    warned_guest: bool,
    warned_io: bool,
}

impl Executor {
    pub(crate) fn new(
        id: String,
        backend: Box<dyn DiskBackend>,
        limits: RequestLimits,
        serial: [u8; ID_BYTES],
        metrics: Arc<BlkMetrics>,
    ) -> Self {
        Executor {
            id,
            throttled: backend.wait_canceller().is_some(),
            backend,
            limits,
            serial,
            bounce: vec![0; BOUNCE_SIZE],
            metrics,
            warned_guest: false,
            warned_io: false,
        }
    }

    pub(crate) fn into_backend(self) -> Box<dyn DiskBackend> {
        self.backend
    }

    pub(crate) fn wait_canceller(&self) -> Option<WaitCanceller> {
        self.backend.wait_canceller()
    }

    /// Whether requests may wait in the backend's throttle.
    pub(crate) fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// The backend's io=native file, if it has one.
    pub(crate) fn native_io(&self) -> Option<NativeIo> {
        self.backend.native_io()
    }

    /// Serve the request in `descs` to the end, waiting in the throttle if needed.
    /// Returns the used length: the bytes written into the chain's device-writable
    /// buffers including the status byte; 0 when the chain has no usable status byte
    /// and is returned unanswered.
    pub(crate) fn serve(
        &mut self,
        descs: impl Iterator<Item = Descriptor>,
        mem: &GuestMemoryMmap,
    ) -> u32 {
        let req = match self.parse_chain(descs, mem) {
            Ok(req) => req,
            Err(used) => return used,
        };
        if let Some((dir, bytes)) = admission(&req.kind) {
            self.backend.admit(dir, bytes);
        }
        let (code, written) = self.run(req.kind, mem);
        self.complete(req.status, code, written, mem)
    }

    /// Parse and check a chain. A refused one is counted, logged and answered here
    /// (status byte written when there is one): `Err` carries its used length.
    pub(crate) fn parse_chain(
        &mut self,
        descs: impl Iterator<Item = Descriptor>,
        mem: &GuestMemoryMmap,
    ) -> Result<Request, u32> {
        match parse(descs, mem, &self.limits) {
            Ok(req) => Ok(req),
            Err(e) => {
                if e.code == S_UNSUPP {
                    self.metrics.unsupported();
                } else {
                    self.metrics.invalid();
                }
                self.log_guest_error(e.reason);
                Err(match e.status {
                    Some(status) => self.complete(status, e.code, 0, mem),
                    None => 0,
                })
            }
        }
    }

    /// Admission without blocking (io=native): Ok when `kind` may run now.
    pub(crate) fn try_admit(&mut self, kind: &RequestKind) -> Result<(), Duration> {
        match admission(kind) {
            Some((dir, bytes)) => self.backend.try_admit(dir, bytes),
            None => Ok(()),
        }
    }

    /// Write the status byte; returns the used length (`written` data bytes plus the
    /// status), or 0 if the status byte cannot be written.
    pub(crate) fn complete(
        &mut self,
        status: GuestAddress,
        code: u8,
        written: u32,
        mem: &GuestMemoryMmap,
    ) -> u32 {
        if let Err(e) = mem.write_obj(code, status) {
            // Checked during parsing; only a memory layout change could get here.
            self.log_guest_error("cannot write the status byte");
            tracing::debug!("disk {}: status byte: {e}", self.id);
            return 0;
        }
        written.saturating_add(1)
    }

    /// Account a read or write that moved its data elsewhere (Linux AIO), as `run`
    /// would have: (status code, data bytes written to the guest).
    pub(crate) fn io_done(
        &mut self,
        dir: IoDirection,
        len: u64,
        result: io::Result<()>,
    ) -> (u8, u32) {
        self.outcome(result.map_err(ExecError::from).map(|()| match dir {
            IoDirection::Read => {
                self.metrics.read(len);
                len as u32
            }
            IoDirection::Write => {
                self.metrics.write(len);
                0
            }
        }))
    }

    /// Run a checked and admitted request: (status code, data bytes written to the
    /// guest).
    pub(crate) fn run(&mut self, kind: RequestKind, mem: &GuestMemoryMmap) -> (u8, u32) {
        let result = match kind {
            RequestKind::In { offset, data } => self.read_into(offset, &data, mem).map(|()| {
                self.metrics.read(data.len());
                data.len() as u32
            }),
            RequestKind::Out { offset, data } => self.write_from(offset, &data, mem).map(|()| {
                self.metrics.write(data.len());
                0
            }),
            RequestKind::Flush => self.backend.flush().map_err(ExecError::from).map(|()| {
                self.metrics.flush();
                0
            }),
            RequestKind::GetId { data } => {
                let n = (data.len() as usize).min(ID_BYTES);
                data.write(mem, 0, &self.serial[..n])
                    .map_err(ExecError::from)
                    .map(|()| n as u32)
            }
            RequestKind::Discard { offset, len } => self
                .backend
                .discard(offset, len)
                .map_err(ExecError::from)
                .map(|()| {
                    self.metrics.discard();
                    0
                }),
            RequestKind::WriteZeroes { offset, len, unmap } => self
                .backend
                .write_zeroes(offset, len, unmap)
                .map_err(ExecError::from)
                .map(|()| {
                    self.metrics.write_zeroes();
                    0
                }),
        };
        self.outcome(result)
    }

    /// Count and log a request's result: (status code, data bytes written).
    fn outcome(&mut self, result: Result<u32, ExecError>) -> (u8, u32) {
        match result {
            Ok(written) => (S_OK, written),
            Err(ExecError::Io(e)) => {
                self.metrics.io_error();
                if self.warned_io {
                    tracing::debug!("disk {}: request failed: {e}", self.id);
                } else {
                    self.warned_io = true;
                    tracing::warn!(
                        "disk {}: request failed (later failures at debug level): {e}",
                        self.id
                    );
                }
                (S_IOERR, 0)
            }
            Err(e @ ExecError::Guest(_)) => {
                self.metrics.invalid();
                self.log_guest_error("guest buffer unusable");
                tracing::debug!("disk {}: {e}", self.id);
                (S_IOERR, 0)
            }
        }
    }

    fn read_into(
        &mut self,
        offset: u64,
        data: &GuestBuffers,
        mem: &GuestMemoryMmap,
    ) -> Result<(), ExecError> {
        let mut pos = 0;
        while pos < data.len() {
            let n = (data.len() - pos).min(self.bounce.len() as u64) as usize;
            self.backend.read_at(offset + pos, &mut self.bounce[..n])?;
            data.write(mem, pos, &self.bounce[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    fn write_from(
        &mut self,
        offset: u64,
        data: &GuestBuffers,
        mem: &GuestMemoryMmap,
    ) -> Result<(), ExecError> {
        let mut pos = 0;
        while pos < data.len() {
            let n = (data.len() - pos).min(self.bounce.len() as u64) as usize;
            data.read(mem, pos, &mut self.bounce[..n])?;
            self.backend.write_at(offset + pos, &self.bounce[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Count and log a chain refused before parsing.
    pub(crate) fn reject(&mut self, reason: &'static str) {
        self.metrics.invalid();
        self.log_guest_error(reason);
    }

    fn log_guest_error(&mut self, reason: &str) {
        if self.warned_guest {
            tracing::debug!("disk {}: bad request from the guest: {reason}", self.id);
        } else {
            self.warned_guest = true;
            tracing::warn!(
                "disk {}: bad request from the guest: {reason} (later ones at debug level)",
                self.id
            );
        }
    }
}
