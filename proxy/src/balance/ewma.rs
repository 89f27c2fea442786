//! Peak EWMA of an endpoint's response latency (Finagle's and Linkerd's
//! balancer load; tower's `PeakEwma`).
//!
//! A sample above the estimate replaces it at once (the peak); a sample
//! below pulls it down by `1 − e^(−Δt/τ)`, Δt being the time since the last
//! sample, so the estimate follows a slow endpoint at once and trusts a fast
//! one only over time. Between samples the estimate decays toward 0 with the
//! same time constant, so an endpoint that stopped being picked for being
//! slow is tried again after a while. A new endpoint starts at
//! [`DEFAULT_RTT`]. The cost a balancer compares is the estimate times the
//! requests in flight plus one.
//!
//! Lock-free: the estimate is an `f64` stored as bits next to the time of its
//! last sample; concurrent samples may each store theirs (the last wins),
//! which only loses a sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The estimate of an endpoint with no sample yet (Linkerd's default).
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// The time constant τ of the decay (Linkerd's default).
pub(crate) const DECAY: Duration = Duration::from_secs(10);

/// One endpoint's latency estimate.
#[derive(Debug)]
pub(crate) struct Ewma {
    /// Nanoseconds, as `f64` bits.
    rtt: AtomicU64,
    /// When the last sample was taken, in ns since the endpoint's base.
    at: AtomicU64,
}

impl Ewma {
    pub(super) fn new() -> Self {
        Self {
            rtt: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            at: AtomicU64::new(0),
        }
    }

    /// Folds in one latency sample taken at `now`.
    pub(super) fn observe(&self, base: Instant, now: Instant, latency: Duration) {
        let now = nanos(base, now);
        let sample = latency.as_nanos() as f64;
        let estimate = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let next = if sample > estimate {
            sample
        } else {
            let elapsed = now.saturating_sub(self.at.load(Ordering::Relaxed));
            let keep = decay(elapsed);
            estimate * keep + sample * (1.0 - keep)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
        self.at.store(now, Ordering::Relaxed);
    }

    /// The estimate at `now` in nanoseconds, decayed since the last sample.
    #[cfg(test)]
    pub(super) fn estimate(&self, base: Instant, now: Instant) -> f64 {
        let estimate = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let elapsed = nanos(base, now).saturating_sub(self.at.load(Ordering::Relaxed));
        estimate * decay(elapsed)
    }

    /// The estimate as of its last sample (ns), and that sample's time.
    pub(super) fn sample(&self, base: Instant) -> (f64, Instant) {
        let estimate = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let at = base + Duration::from_nanos(self.at.load(Ordering::Relaxed));
        (estimate, at)
    }
}

/// The weight `e^(−Δt/τ)` the old estimate keeps after `elapsed` ns.
fn decay(elapsed: u64) -> f64 {
    (-(elapsed as f64) / DECAY.as_nanos() as f64).exp()
}

fn nanos(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}
