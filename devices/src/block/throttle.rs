//! IO throttling (`iotune`): bytes and operations per second, total or per direction,
//! with bursts, as token buckets (see `bucket.rs` for how QEMU's semantics map onto
//! them).
//!
//! The throttle blocks the disk's own worker thread until a request fits: only that disk
//! slows down, and its guest sees the requests complete later. The wait can be cut short
//! (a device reset must never hang on a throttled request).

mod bucket;
mod clock;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use oxvm_api::IoTune;

use super::aio::NativeIo;
use super::backend::{DiskBackend, IoDirection};
use bucket::{Limit, LimitSpec};
#[cfg(test)]
pub(crate) use clock::FakeClock;
pub use clock::{Clock, MonotonicClock, WaitCanceller};

/// QEMU's THROTTLE_VALUE_MAX: larger values are refused (and would lose precision).
const MAX_VALUE: u64 = 1_000_000_000_000_000;

/// Waits shorter than this count as none (and keep float rounding from looping).
const MIN_WAIT_SECS: f64 = 1e-6;

/// Longest single sleep; the throttle re-checks its buckets after it.
const MAX_SLEEP_SECS: f64 = 60.0;

/// An `iotune` the throttle refuses (QEMU and libvirt refuse the same).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    #[error("iotune.{total} cannot be combined with iotune.{read} or iotune.{write}")]
    TotalWithReadWrite {
        total: String,
        read: String,
        write: String,
    },
    #[error("iotune.{max} requires iotune.{avg}")]
    MaxWithoutRate { max: String, avg: String },
    #[error("iotune.{max} ({max_value}) must not be lower than iotune.{avg} ({avg_value})")]
    MaxBelowRate {
        max: String,
        max_value: u64,
        avg: String,
        avg_value: u64,
    },
    #[error("iotune.{length} requires iotune.{max}")]
    LengthWithoutMax { length: String, max: String },
    #[error("iotune.{field} is too large (at most {MAX_VALUE})")]
    TooLarge { field: String },
}

/// The limits of one unit (bytes or operations): total, read, write.
#[derive(Debug, Clone, Default)]
struct Group {
    total: Option<Limit>,
    read: Option<Limit>,
    write: Option<Limit>,
}

impl Group {
    fn limits_mut(&mut self) -> impl Iterator<Item = &mut Limit> {
        [&mut self.total, &mut self.read, &mut self.write]
            .into_iter()
            .flatten()
    }

    /// The limits a request in direction `dir` is subject to.
    fn for_dir(&mut self, dir: IoDirection) -> impl Iterator<Item = &mut Limit> {
        let own = match dir {
            IoDirection::Read => &mut self.read,
            IoDirection::Write => &mut self.write,
        };
        [&mut self.total, own].into_iter().flatten()
    }

    fn is_empty(&self) -> bool {
        self.total.is_none() && self.read.is_none() && self.write.is_none()
    }
}

/// The rate limiter of one disk.
pub struct Throttle {
    clock: Arc<dyn Clock>,
    cancel: WaitCanceller,
    last: Duration,
    bytes: Group,
    ops: Group,
    /// `size_iops_sec`: a request this large counts as one operation (0: every request).
    op_size: u64,
    waited: Duration,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("bytes", &self.bytes)
            .field("ops", &self.ops)
            .field("op_size", &self.op_size)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Throttle {
    /// A throttle for `tune` on the real clock; `None` when nothing is limited.
    pub fn new(tune: &IoTune) -> Result<Option<Self>, ThrottleError> {
        Self::with_clock(tune, Arc::new(MonotonicClock::new()))
    }

    /// As [`Throttle::new`], on the given clock.
    pub fn with_clock(tune: &IoTune, clock: Arc<dyn Clock>) -> Result<Option<Self>, ThrottleError> {
        let bytes = group(
            "bytes_sec",
            [
                spec3(
                    tune.total_bytes_sec,
                    tune.total_bytes_sec_max,
                    tune.total_bytes_sec_max_length,
                ),
                spec3(
                    tune.read_bytes_sec,
                    tune.read_bytes_sec_max,
                    tune.read_bytes_sec_max_length,
                ),
                spec3(
                    tune.write_bytes_sec,
                    tune.write_bytes_sec_max,
                    tune.write_bytes_sec_max_length,
                ),
            ],
        )?;
        let ops = group(
            "iops_sec",
            [
                spec3(
                    tune.total_iops_sec,
                    tune.total_iops_sec_max,
                    tune.total_iops_sec_max_length,
                ),
                spec3(
                    tune.read_iops_sec,
                    tune.read_iops_sec_max,
                    tune.read_iops_sec_max_length,
                ),
                spec3(
                    tune.write_iops_sec,
                    tune.write_iops_sec_max,
                    tune.write_iops_sec_max_length,
                ),
            ],
        )?;
        if tune.size_iops_sec > MAX_VALUE {
            return Err(ThrottleError::TooLarge {
                field: "size_iops_sec".into(),
            });
        }
        if bytes.is_empty() && ops.is_empty() {
            return Ok(None);
        }
        Ok(Some(Throttle {
            last: clock.now(),
            clock,
            cancel: WaitCanceller::new(),
            bytes,
            ops,
            op_size: tune.size_iops_sec,
            waited: Duration::ZERO,
        }))
    }

    /// Wait until a request of `bytes` in direction `dir` fits the limits (or the wait
    /// is cancelled), then account it.
    pub fn admit(&mut self, dir: IoDirection, bytes: u64) {
        loop {
            self.refill();
            let wait = self.wait_secs(dir);
            if wait < MIN_WAIT_SECS || self.cancel.is_cancelled() {
                break;
            }
            let d = Duration::from_secs_f64(wait.min(MAX_SLEEP_SECS));
            self.clock.sleep(d, &self.cancel);
            self.waited += d;
        }
        self.take(dir, bytes);
    }

    /// [`Throttle::admit`] without sleeping: account the request and return Ok if it
    /// fits now (or waits are cancelled), else return how long until it may, leaving
    /// the buckets untouched. For a worker that keeps serving completions meanwhile.
    pub fn try_admit(&mut self, dir: IoDirection, bytes: u64) -> Result<(), Duration> {
        self.refill();
        let wait = self.wait_secs(dir);
        if wait >= MIN_WAIT_SECS && !self.cancel.is_cancelled() {
            return Err(Duration::from_secs_f64(wait.min(MAX_SLEEP_SECS)));
        }
        self.take(dir, bytes);
        Ok(())
    }

    fn take(&mut self, dir: IoDirection, bytes: u64) {
        let units = self.op_units(bytes);
        for l in self.bytes.for_dir(dir) {
            l.take(bytes as f64);
        }
        for l in self.ops.for_dir(dir) {
            l.take(units);
        }
    }

    /// The handle that cuts short this throttle's waits.
    pub fn canceller(&self) -> WaitCanceller {
        self.cancel.clone()
    }

    /// Total time spent waiting in [`Throttle::admit`] so far.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    fn refill(&mut self) {
        let now = self.clock.now();
        let secs = now.saturating_sub(self.last).as_secs_f64();
        self.last = now;
        for l in self.bytes.limits_mut().chain(self.ops.limits_mut()) {
            l.refill(secs);
        }
    }

    fn wait_secs(&mut self, dir: IoDirection) -> f64 {
        self.bytes
            .for_dir(dir)
            .chain(self.ops.for_dir(dir))
            .map(|l| l.wait_secs())
            .fold(0.0, f64::max)
    }

    /// How many operations a request counts as: with `size_iops_sec`, a large request
    /// counts as several (fractionally, as in QEMU).
    fn op_units(&self, bytes: u64) -> f64 {
        if self.op_size > 0 && bytes > self.op_size {
            bytes as f64 / self.op_size as f64
        } else {
            1.0
        }
    }
}

fn spec3(avg: u64, max: u64, max_length: u64) -> LimitSpec {
    LimitSpec {
        avg,
        max,
        max_length,
    }
}

/// Validate and build the total/read/write limits of one unit (`suffix`: "bytes_sec" or
/// "iops_sec"; field names as in `IoTune`).
fn group(suffix: &str, [total, read, write]: [LimitSpec; 3]) -> Result<Group, ThrottleError> {
    let name = |kind: &str| format!("{kind}_{suffix}");
    for (kind, s) in [("total", total), ("read", read), ("write", write)] {
        validate(&name(kind), s)?;
    }
    let uses = |s: LimitSpec| s.avg != 0 || s.max != 0;
    if uses(total) && (uses(read) || uses(write)) {
        return Err(ThrottleError::TotalWithReadWrite {
            total: name("total"),
            read: name("read"),
            write: name("write"),
        });
    }
    Ok(Group {
        total: Limit::new(total),
        read: Limit::new(read),
        write: Limit::new(write),
    })
}

fn validate(avg_name: &str, s: LimitSpec) -> Result<(), ThrottleError> {
    let max_name = format!("{avg_name}_max");
    let length_name = format!("{avg_name}_max_length");
    for (field, v) in [
        (avg_name, s.avg),
        (&max_name, s.max),
        (&length_name, s.max_length),
    ] {
        if v > MAX_VALUE {
            return Err(ThrottleError::TooLarge {
                field: field.to_string(),
            });
        }
    }
    if s.max != 0 && s.avg == 0 {
        return Err(ThrottleError::MaxWithoutRate {
            max: max_name,
            avg: avg_name.to_string(),
        });
    }
    if s.max != 0 && s.max < s.avg {
        return Err(ThrottleError::MaxBelowRate {
            max: max_name,
            max_value: s.max,
            avg: avg_name.to_string(),
            avg_value: s.avg,
        });
    }
    if s.max_length > 1 && s.max == 0 {
        return Err(ThrottleError::LengthWithoutMax {
            length: length_name,
            max: max_name,
        });
    }
    Ok(())
}

/// A backend whose guest requests pass through a [`Throttle`] (in [`DiskBackend::admit`]).
#[derive(Debug)]
pub struct Throttled<B> {
    inner: B,
    throttle: Throttle,
}

impl<B: DiskBackend> Throttled<B> {
    pub fn new(inner: B, throttle: Throttle) -> Self {
        Throttled { inner, throttle }
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: DiskBackend> DiskBackend for Throttled<B> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.inner.write_zeroes(offset, len, unmap)
    }
    fn has_volatile_cache(&self) -> bool {
        self.inner.has_volatile_cache()
    }
    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
    fn admit(&mut self, dir: IoDirection, bytes: u64) {
        self.inner.admit(dir, bytes);
        self.throttle.admit(dir, bytes);
    }
    fn try_admit(&mut self, dir: IoDirection, bytes: u64) -> Result<(), Duration> {
        self.throttle.try_admit(dir, bytes)?;
        // Only once admitted, so a retried request is not counted twice below.
        self.inner.try_admit(dir, bytes)
    }
    fn wait_canceller(&self) -> Option<WaitCanceller> {
        Some(self.throttle.canceller())
    }
    fn native_io(&self) -> Option<NativeIo> {
        self.inner.native_io()
    }
    fn discard_enabled(&self) -> bool {
        self.inner.discard_enabled()
    }
    fn discard_granularity(&self) -> u64 {
        self.inner.discard_granularity()
    }
}
