//! Passive health: the per-endpoint outlier detection state machine, with
//! Envoy's semantics for consecutive errors (as Istio configures it).
//!
//! ```text
//!            threshold crossed and the cluster may eject one more
//!   Serving ───────────────────────────────────────────────────► Ejected
//!      ▲      (backoff += 1; until = now + base × backoff, ≤ max)    │
//!      │                                                             │
//!      └───────────── `until` passed (noticed lazily) ───────────────┘
//!         counters reset; backoff −1 per `interval` spent serving
//! ```
//!
//! Counters (all reset by a success of their kind):
//! - consecutive 5xx: 5xx responses, and without `split_external_local_origin`
//!   connect failures and resets (as 503) and timeouts (as 504);
//! - consecutive gateway errors: 502, 503, 504, and without the split the
//!   same local-origin failures;
//! - consecutive local-origin failures: connect failures, resets and
//!   timeouts, counted only with the split (any response resets it).
//!
//! Reaching a threshold ejects at once when fewer than
//! `max_ejection_percent` of the cluster would then be ejected, or when none
//! is ejected yet (at least one may be: Envoy's rule before 1.27, and its
//! `always_eject_one_host` since). Envoy decays the backoff in its interval
//! sweep; here it is computed from the time of the un-ejection when the
//! next ejection happens, which gives the same multiplier without a timer.
//!
//! The request path touches only atomics; the lock is taken when a counter
//! reaches its threshold and when an ejection ends.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anymesh_core::routes::{OutlierDetection, MAX_EJECTION_TIME};
use parking_lot::Mutex;
use tokio::time::Instant;

/// What happened to one attempt sent to an endpoint, as the request path
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    /// The upstream answered (its response head arrived).
    Response { status: u16, latency: Duration },
    /// No response: the proxy's own side failed.
    LocalOrigin(LocalFailure),
}

/// A failure of local origin (Envoy's `LocalOriginConnectFailed` and
/// `LocalOriginTimeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalFailure {
    /// The connection could not be established.
    Connect,
    /// The connection or stream was reset before a response.
    Reset,
    /// The attempt timed out.
    Timeout,
}

impl LocalFailure {
    /// The status Envoy counts this failure as without the split.
    fn as_status(self) -> u16 {
        match self {
            LocalFailure::Connect | LocalFailure::Reset => 503,
            LocalFailure::Timeout => 504,
        }
    }
}

/// Which counter reached its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

impl fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EjectionReason::Consecutive5xx => "5xx",
            EjectionReason::ConsecutiveGateway => "gateway errors",
            EjectionReason::ConsecutiveLocalOrigin => "local-origin failures",
        })
    }
}

/// A threshold crossed by one report: the counter and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tripped {
    pub(crate) reason: EjectionReason,
    pub(crate) failures: u32,
}

/// One endpoint's outlier state, shared by every cluster holding it and kept
/// across route-table swaps.
#[derive(Debug)]
pub(crate) struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected until `base + ejected_until` ns; 0: not ejected.
    ejected_until: AtomicU64,
    /// The origin of the times above (the endpoint's creation).
    base: Instant,
    book: Mutex<Book>,
}

/// What only ejections and un-ejections read and write.
#[derive(Debug, Default, Clone, Copy)]
struct Book {
    /// Ejections so far.
    ejections: u32,
    /// The ejection time multiplier (Envoy's `ejectTimeBackoff`), as of
    /// `unejected_at` (decay after it is applied lazily).
    backoff: u32,
    /// When the last ejection ended, while not ejected again.
    unejected_at: Option<Instant>,
    /// Why the current (or last) ejection happened.
    last: Option<Tripped>,
}

/// An endpoint's ejection, for `anymesh explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejection {
    pub(crate) until: Instant,
    pub(crate) reason: EjectionReason,
    /// The consecutive failures that triggered it.
    pub(crate) failures: u32,
    /// 1 for the endpoint's first ejection, 2 for the second, ...
    pub(crate) nth: u32,
}

impl Ejection {
    /// Time left until the endpoint serves again.
    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }

    /// `ejected until <until> after 5 consecutive 5xx, 2nd ejection`, with
    /// `until` rendered by the caller (a wall-clock time, typically).
    #[allow(dead_code)] // for callers with a wall clock; `explain` renders its own
    pub(crate) fn describe<'a>(&'a self, until: &'a dyn fmt::Display) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Ejection, &'a dyn fmt::Display);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "ejected until {} after ", self.1)?;
                self.0.cause(f)
            }
        }
        D(self, until)
    }

    fn cause(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} consecutive {}, {}{} ejection",
            self.failures,
            self.reason,
            self.nth,
            ordinal_suffix(self.nth)
        )
    }
}

impl fmt::Display for Ejection {
    /// `ejected for 25s more after 5 consecutive 5xx, 2nd ejection`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = self.remaining(Instant::now());
        write!(f, "ejected for {}s more after ", left.as_secs())?;
        self.cause(f)
    }
}

fn ordinal_suffix(n: u32) -> &'static str {
    match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

/// Outlier detection's verdict on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutlierVerdict {
    /// The cluster has no outlier detection.
    NotConfigured,
    /// Serving; `ejections` so far and the multiplier the next one would get.
    Serving {
        ejections: u32,
        backoff: u32,
    },
    Ejected(Ejection),
}

impl fmt::Display for OutlierVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutlierVerdict::NotConfigured => f.write_str("not configured"),
            OutlierVerdict::Serving { ejections: 0, .. } => f.write_str("serving"),
            OutlierVerdict::Serving { ejections, .. } => {
                write!(f, "serving ({ejections} ejections so far)")
            }
            OutlierVerdict::Ejected(e) => e.fmt(f),
        }
    }
}

/// The longest ejection: Envoy's `max_ejection_time` default, or the base
/// time when that is longer (as Envoy and Istio do).
fn max_ejection(config: &OutlierDetection) -> Duration {
    MAX_EJECTION_TIME.max(config.base_ejection_time)
}

impl OutlierState {
    pub(crate) fn new(base: Instant) -> Self {
        Self {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            base,
            book: Mutex::new(Book::default()),
        }
    }

    /// Counts an attempt's outcome; returns the thresholds it made counters
    /// reach (a gateway error can reach both of its counters at once, and
    /// Envoy then considers both), for the caller to decide on ejection.
    pub(crate) fn record(
        &self,
        outcome: &AttemptOutcome,
        config: &OutlierDetection,
    ) -> [Option<Tripped>; 2] {
        let status = match *outcome {
            AttemptOutcome::Response { status, .. } => {
                if config.split_external_local_origin {
                    reset(&self.consecutive_local);
                }
                status
            }
            AttemptOutcome::LocalOrigin(_) if config.split_external_local_origin => {
                let local = bump(
                    &self.consecutive_local,
                    config.consecutive_local_origin,
                    EjectionReason::ConsecutiveLocalOrigin,
                );
                return [local, None];
            }
            AttemptOutcome::LocalOrigin(failure) => failure.as_status(),
        };
        if !(500..600).contains(&status) {
            reset(&self.consecutive_5xx);
            reset(&self.consecutive_gateway);
            return [None, None];
        }
        let gateway = if matches!(status, 502..=504) {
            bump(
                &self.consecutive_gateway,
                config.consecutive_gateway,
                EjectionReason::ConsecutiveGateway,
            )
        } else {
            reset(&self.consecutive_gateway);
            None
        };
        let five = bump(
            &self.consecutive_5xx,
            config.consecutive_5xx,
            EjectionReason::Consecutive5xx,
        );
        [gateway, five]
    }

    /// Whether the endpoint is ejected at `now` (an ejection whose time has
    /// passed counts as ended, even before [`Self::end_if_due`] ran).
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && until > self.nanos(now)
    }

    /// The end of the current ejection (possibly past), if one is recorded.
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        match self.ejected_until.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns)),
        }
    }

    /// Ejects the endpoint for `tripped` unless it is ejected already;
    /// `may_eject` is asked (under the endpoint's lock) whether the cluster
    /// allows one more ejection. Returns whether it was ejected.
    pub(crate) fn eject(
        &self,
        tripped: Tripped,
        config: &OutlierDetection,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        let mut book = self.book.lock();
        if self.is_ejected(now) {
            return false;
        }
        // Envoy resets the counter that fired whether or not the ejection
        // is allowed, so the next attempt needs a full run of failures.
        match tripped.reason {
            EjectionReason::Consecutive5xx => reset(&self.consecutive_5xx),
            EjectionReason::ConsecutiveGateway => reset(&self.consecutive_gateway),
            EjectionReason::ConsecutiveLocalOrigin => reset(&self.consecutive_local),
        }
        if self.ejected_until.load(Ordering::Acquire) != 0 {
            // An ejection that ended but was not noticed yet.
            self.end(&mut book);
        }
        if !may_eject() {
            return false;
        }
        book.backoff = decayed(&book, config, now);
        book.unejected_at = None;
        let base = config.base_ejection_time;
        let max = max_ejection(config);
        // As Envoy: the multiplier stops growing one step past the cap, so
        // a capped endpoint needs more healthy intervals to come back down.
        if base.saturating_mul(book.backoff) < max.saturating_add(base) {
            book.backoff += 1;
        }
        book.ejections += 1;
        book.last = Some(tripped);
        let time = base.saturating_mul(book.backoff).min(max);
        let until = self.nanos(now + time).max(1);
        self.ejected_until.store(until, Ordering::Release);
        true
    }

    /// Ends an ejection whose time has passed; returns whether one ended.
    pub(crate) fn end_if_due(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 || until > self.nanos(now) {
            return false;
        }
        let mut book = self.book.lock();
        if self.ejected_until.load(Ordering::Acquire) != until {
            return false; // someone else ended it (or ejected it again)
        }
        self.end(&mut book);
        true
    }

    /// Ends the recorded ejection (its time has passed): counters reset, as
    /// Envoy does, so a few errors do not eject it again at once.
    fn end(&self, book: &mut Book) {
        if let Some(until) = self.ejected_until() {
            book.unejected_at = Some(until);
        }
        self.ejected_until.store(0, Ordering::Release);
        reset(&self.consecutive_5xx);
        reset(&self.consecutive_gateway);
        reset(&self.consecutive_local);
    }

    /// The verdict at `now`.
    pub(crate) fn verdict(&self, config: &OutlierDetection, now: Instant) -> OutlierVerdict {
        let book = self.book.lock();
        match (self.is_ejected(now), self.ejected_until(), book.last) {
            (true, Some(until), Some(last)) => OutlierVerdict::Ejected(Ejection {
                until,
                reason: last.reason,
                failures: last.failures,
                nth: book.ejections,
            }),
            _ => {
                // An ended but unnoticed ejection decays from its end.
                let mut view = Book {
                    unejected_at: book.unejected_at.or(self.ejected_until()),
                    ..*book
                };
                view.backoff = decayed(&view, config, now);
                OutlierVerdict::Serving {
                    ejections: book.ejections,
                    backoff: view.backoff,
                }
            }
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The multiplier after the intervals spent serving since the last
/// un-ejection: one less per whole interval (Envoy's sweep).
fn decayed(book: &Book, config: &OutlierDetection, now: Instant) -> u32 {
    let Some(since) = book.unejected_at else {
        return book.backoff;
    };
    let interval = config.interval.as_nanos().max(1);
    let steps = now.saturating_duration_since(since).as_nanos() / interval;
    book.backoff
        .saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX))
}

/// Resets a counter, writing only when it is not 0 already (a success must
/// not dirty a cache line other threads read).
fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

/// Counts one more failure; `Some` exactly when it reaches the threshold
/// (`None` threshold: that detection is off).
fn bump(counter: &AtomicU32, threshold: Option<u32>, reason: EjectionReason) -> Option<Tripped> {
    let threshold = threshold.filter(|&t| t > 0)?;
    let failures = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
    (failures == threshold).then_some(Tripped { reason, failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_is_described_with_the_callers_clock() {
        let e = Ejection {
            until: Instant::now(),
            reason: EjectionReason::Consecutive5xx,
            failures: 5,
            nth: 2,
        };
        let until = "12:03:41";
        assert_eq!(
            e.describe(&until).to_string(),
            "ejected until 12:03:41 after 5 consecutive 5xx, 2nd ejection"
        );
        let suffixes: Vec<_> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .into_iter()
            .map(|n| format!("{n}{}", ordinal_suffix(n)))
            .collect();
        assert_eq!(
            suffixes,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }
}
