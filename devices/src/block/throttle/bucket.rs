//! One limit (e.g. write bytes per second) as QEMU/libvirt define it, expressed as token
//! buckets.
//!
//! QEMU (util/throttle.c) describes a limit by `avg` (the `*_sec` rate), `max` (the
//! `*_sec_max` burst rate) and `burst_length` (`*_sec_max_length`, seconds). Its leaky
//! bucket "level" is our "capacity - tokens":
//! - the main bucket refills at `avg` and holds `max * burst_length` (or `avg / 10` when
//!   no burst is set, so that short bursts do not throttle every other request);
//! - when `burst_length > 1`, a second bucket refilling at `max` and holding `max / 10`
//!   keeps a burst at the `max` rate.
//!
//! A request may start while a bucket is not in debt (tokens >= 0) and then takes its
//! full size, possibly going negative; the next request waits until the debt is paid. So
//! a request larger than the bucket is never stuck, and the long-run rate is `avg`.

/// A single token bucket.
#[derive(Debug, Clone)]
struct TokenBucket {
    /// Tokens per second.
    rate: f64,
    capacity: f64,
    tokens: f64,
}

impl TokenBucket {
    /// Starts full: a guest may burst right away, as with QEMU's empty leaky bucket.
    fn new(rate: f64, capacity: f64) -> Self {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
        }
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + self.rate * secs).min(self.capacity);
    }

    /// Seconds until the bucket is out of debt.
    fn wait_secs(&self) -> f64 {
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }

    fn take(&mut self, units: f64) {
        self.tokens -= units;
    }
}

/// The `*_sec`, `*_sec_max` and `*_sec_max_length` values of one limit, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LimitSpec {
    pub avg: u64,
    pub max: u64,
    pub max_length: u64,
}

/// One rate limit with its optional burst.
#[derive(Debug, Clone)]
pub(super) struct Limit {
    main: TokenBucket,
    burst: Option<TokenBucket>,
}

impl Limit {
    /// `None` when `spec.avg` is 0 (unlimited). `spec` must have passed validation.
    pub(super) fn new(spec: LimitSpec) -> Option<Self> {
        if spec.avg == 0 {
            return None;
        }
        let avg = spec.avg as f64;
        let length = spec.max_length.max(1);
        let (size, burst) = if spec.max == 0 {
            (avg / 10.0, None)
        } else {
            let max = spec.max as f64;
            let burst = (length > 1).then(|| TokenBucket::new(max, max / 10.0));
            (max * length as f64, burst)
        };
        Some(Limit {
            main: TokenBucket::new(avg, size),
            burst,
        })
    }

    pub(super) fn refill(&mut self, secs: f64) {
        self.main.refill(secs);
        if let Some(b) = &mut self.burst {
            b.refill(secs);
        }
    }

    pub(super) fn wait_secs(&self) -> f64 {
        let burst = self.burst.as_ref().map_or(0.0, TokenBucket::wait_secs);
        self.main.wait_secs().max(burst)
    }

    pub(super) fn take(&mut self, units: f64) {
        self.main.take(units);
        if let Some(b) = &mut self.burst {
            b.take(units);
        }
    }
}
