//! Retry budgets: a bound on a cluster's retries relative to its traffic,
//! so retries cannot turn an outage into a storm.
//!
//! Two forms ([`RetryBudget`]):
//! - **Concurrent** (Envoy's `retry_budget`, DestinationRule `retryBudget`):
//!   retries in flight at most `percent` % of the active requests, but at
//!   least `min_concurrency`. A retry is in flight from [`Budget::try_retry`]
//!   until its [`RetryGuard`] drops.
//! - **Rate** (Linkerd's `TpsBudget`): over the last `window`, retries at
//!   most `ratio` × requests plus `min_per_second` × window seconds (a reserve
//!   for quiet clusters). Requests and retries are counted in a ring of
//!   per-second buckets, so both leave the window together.
//!
//! [`Budget::request`] runs on every request: no lock, no allocation; the
//! rate form does one clock read and one compare-and-swap on the current
//! second's bucket (a stale bucket is reset by the first writer of a new
//! second), the concurrent form one counter increment and an `Arc` clone.
//! Concurrent retries may overshoot the rate form by the number racing at
//! once; the bound is a budget, not a lock.

// Called by the forwarding layer once it is wired in (issue 20); until then
// only the tests use it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::RetryBudget;
use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// A cluster's retry budget.
pub(crate) struct Budget {
    kind: Kind,
    granted: AtomicU64,
    exhausted: AtomicU64,
}

enum Kind {
    Off,
    Concurrent(Arc<Concurrent>),
    Rate(Rate),
}

/// Envoy's form: counts of active requests and retries in flight.
struct Concurrent {
    percent: f64,
    min: u64,
    active: AtomicU64,
    retries: AtomicU64,
}

/// Linkerd's form: deposits and withdrawals per second over the window.
struct Rate {
    origin: Instant,
    ratio: f64,
    /// `min_per_second` × window seconds.
    reserve: f64,
    /// One per second of the window; second `s` lives at `s % len`.
    buckets: Box<[Bucket]>,
}

/// One second's counts, each word holding the second (high half) and the
/// count (low half) so a stale bucket is reset in the same atomic step.
#[derive(Default)]
struct Bucket {
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The longest window the rate form keeps (Linkerd's and Finagle's bound).
const MAX_WINDOW_SECS: u64 = 60;

impl Budget {
    /// A budget of the given form. A rate window is taken in whole seconds
    /// between 1 and 60.
    pub(crate) fn new(config: &RetryBudget) -> Self {
        let kind = match *config {
            RetryBudget::Off => Kind::Off,
            RetryBudget::Concurrent {
                percent,
                min_concurrency,
            } => Kind::Concurrent(Arc::new(Concurrent {
                percent: percent.max(0.0),
                min: u64::from(min_concurrency),
                active: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            })),
            RetryBudget::Rate {
                ratio,
                window,
                min_per_second,
            } => {
                let secs = window_secs(window);
                Kind::Rate(Rate {
                    origin: Instant::now(),
                    ratio: ratio.max(0.0),
                    reserve: f64::from(min_per_second) * secs as f64,
                    buckets: (0..secs).map(|_| Bucket::default()).collect(),
                })
            }
        };
        Self {
            kind,
            granted: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Counts a request (the rate form's deposit; the concurrent form's
    /// active request, until the guard drops). Call it once per request,
    /// not per attempt.
    pub(crate) fn request(&self) -> RequestGuard {
        self.count_request(Instant::now)
    }

    /// [`request`](Self::request) for a request that arrived at `now`
    /// (saves a clock read when the caller has one).
    #[cfg(test)]
    pub(crate) fn request_at(&self, now: Instant) -> RequestGuard {
        self.count_request(|| now)
    }

    /// Reads the clock only for the rate form.
    #[inline]
    fn count_request(&self, now: impl FnOnce() -> Instant) -> RequestGuard {
        match &self.kind {
            Kind::Off => RequestGuard(None),
            Kind::Concurrent(c) => {
                c.active.fetch_add(1, Relaxed);
                RequestGuard(Some(Arc::clone(c)))
            }
            Kind::Rate(r) => {
                r.count(now(), |b| &b.requests);
                RequestGuard(None)
            }
        }
    }

    /// Takes one retry from the budget; `None` (counted) when it is spent.
    /// Hold the guard until the retried attempt's outcome is known.
    pub(crate) fn try_retry(&self) -> Option<RetryGuard> {
        let guard = match &self.kind {
            Kind::Off => Some(RetryGuard(None)),
            Kind::Concurrent(c) => c.try_retry().then(|| RetryGuard(Some(Arc::clone(c)))),
            Kind::Rate(r) => r.try_retry(Instant::now()).then_some(RetryGuard(None)),
        };
        let counter = match guard {
            Some(_) => &self.granted,
            None => &self.exhausted,
        };
        counter.fetch_add(1, Relaxed);
        guard
    }

    /// Retries the budget granted so far.
    pub(crate) fn granted(&self) -> u64 {
        self.granted.load(Relaxed)
    }

    /// Retries refused because the budget was spent.
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Relaxed)
    }

    /// Requests active now (the concurrent form; 0 for the others).
    #[cfg(test)]
    pub(crate) fn active(&self) -> u64 {
        match &self.kind {
            Kind::Concurrent(c) => c.active.load(Relaxed),
            _ => 0,
        }
    }

    /// Retries in flight now (the concurrent form; 0 for the others).
    pub(crate) fn retries_in_flight(&self) -> u64 {
        match &self.kind {
            Kind::Concurrent(c) => c.retries.load(Relaxed),
            _ => 0,
        }
    }
}

fn window_secs(window: Duration) -> u64 {
    let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    secs.clamp(1, MAX_WINDOW_SECS)
}

impl Concurrent {
    /// Envoy: retries in flight below max(min, percent % of active requests).
    fn try_retry(&self) -> bool {
        let active = self.active.load(Relaxed) as f64;
        let max = ((self.percent / 100.0 * active) as u64).max(self.min);
        if self.retries.fetch_add(1, Relaxed) < max {
            return true;
        }
        self.retries.fetch_sub(1, Relaxed);
        false
    }
}

impl Rate {
    /// Seconds since the budget was made.
    fn second(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.origin).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// Adds one to a counter of the bucket for `now`, resetting the bucket
    /// first when it holds an older second.
    fn count(&self, now: Instant, counter: impl Fn(&Bucket) -> &AtomicU64) {
        let second = self.second(now);
        let len = self.buckets.len() as u64;
        let Some(bucket) = self.buckets.get((u64::from(second) % len) as usize) else {
            return;
        };
        let cell = counter(bucket);
        let mut current = cell.load(Relaxed);
        loop {
            let (stamp, n) = unpack(current);
            // A later second's count (from a thread that read the clock
            // after this one) takes this event too.
            let next = if stamp >= second {
                pack(stamp, n.saturating_add(1))
            } else {
                pack(second, 1)
            };
            match cell.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Sums a counter over the buckets of the window ending at `second`.
    fn sum(&self, second: u32, counter: impl Fn(&Bucket) -> &AtomicU64) -> u64 {
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .map(|b| unpack(counter(b).load(Relaxed)))
            .filter(|&(stamp, _)| u64::from(second.saturating_sub(stamp)) < len)
            .map(|(_, n)| u64::from(n))
            .sum()
    }

    /// Linkerd: a retry fits when retries over the window, this one
    /// included, stay within ratio × requests plus the reserve.
    fn try_retry(&self, now: Instant) -> bool {
        let second = self.second(now);
        let requests = self.sum(second, |b| &b.requests) as f64;
        let retries = self.sum(second, |b| &b.retries) as f64;
        if retries + 1.0 > self.ratio * requests + self.reserve {
            return false;
        }
        self.count(now, |b| &b.retries);
        true
    }
}

fn pack(second: u32, n: u32) -> u64 {
    (u64::from(second) << 32) | u64::from(n)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = match &self.kind {
            Kind::Off => "off",
            Kind::Concurrent(_) => "concurrent",
            Kind::Rate(_) => "rate",
        };
        f.debug_struct("Budget")
            .field("form", &form)
            .field("granted", &self.granted())
            .field("exhausted", &self.exhausted())
            .finish()
    }
}

/// A counted request; for the concurrent form, an active request until it
/// drops (hold it until the exchange ends). The default counts nothing.
#[derive(Debug, Default)]
#[must_use = "the request stops counting as active when this drops"]
pub(crate) struct RequestGuard(Option<Arc<Concurrent>>);

/// A retry taken from the budget; for the concurrent form, in flight until
/// it drops.
#[derive(Debug)]
#[must_use = "the retry stops counting as in flight when this drops"]
pub(crate) struct RetryGuard(Option<Arc<Concurrent>>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.active.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.retries.fetch_sub(1, Relaxed);
        }
    }
}

impl fmt::Debug for Concurrent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Concurrent")
            .field("active", &self.active.load(Relaxed))
            .field("retries", &self.retries.load(Relaxed))
            .finish()
    }
}
