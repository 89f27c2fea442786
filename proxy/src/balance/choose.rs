//! Drawing an endpoint of a tier by the cluster's policy, among those a
//! predicate accepts (available ones, not tried ones): the policy's own
//! draw first, a few more draws when it lands on an ineligible endpoint,
//! then a scan, so a pick always finds an eligible endpoint when there is
//! one and costs the plain draw when every endpoint is eligible.

use std::sync::atomic::Ordering;

use super::ewma::DECAY;
use super::{weights, ClusterLb, EndpointState, Kind, Tier};

/// Weighted draws tried before scanning for an eligible endpoint.
const DRAWS: usize = 8;
/// Maglev slots walked from a key's slot before scanning.
const HASH_WALK: usize = 1024;

impl ClusterLb {
    /// [`choose`](Self::choose) preferring endpoints not in `tried`.
    pub(super) fn choose_untried(
        &self,
        tier: &Tier,
        hash: Option<u64>,
        tried: &[usize],
        ok: impl Fn(usize) -> bool + Copy,
    ) -> Option<usize> {
        if tried.is_empty() {
            return self.choose(tier, hash, ok);
        }
        self.choose(tier, hash, |i| ok(i) && !tried.contains(&i))
            .or_else(|| self.choose(tier, hash, ok))
    }

    /// An endpoint of `tier` for which `ok` holds, by the cluster's policy;
    /// `None` when there is none.
    pub(super) fn choose(
        &self,
        tier: &Tier,
        hash: Option<u64>,
        ok: impl Fn(usize) -> bool + Copy,
    ) -> Option<usize> {
        let n = tier.len();
        if n <= 1 {
            let i = tier.index(0);
            return (n == 1 && ok(i)).then_some(i);
        }
        let found = match &tier.kind {
            Kind::ConsistentHash { maglev } => match hash {
                Some(h) => {
                    let walk = maglev.len().min(HASH_WALK);
                    let found = (0..walk)
                        .map(|step| tier.index(maglev.lookup_step(h, step)))
                        .find(|&i| ok(i));
                    // Deterministic for the key: scan from a place it picks.
                    return found.or_else(|| scan(tier, (h % n as u64) as usize, ok));
                }
                None => self.draw(tier, ok),
            },
            Kind::RoundRobin { cursor, schedule } => (0..schedule.len().max(1))
                .map(|_| tier.index(schedule.at(cursor.0.fetch_add(1, Ordering::Relaxed))))
                .find(|&i| ok(i)),
            Kind::Random => self.draw(tier, ok),
            Kind::LeastRequest => self.two_choices(tier, ok, |a, b| {
                let (ia, ib) = (self.load(a) as u128, self.load(b) as u128);
                ia * self.weight(b) as u128 <= ib * self.weight(a) as u128
            }),
            Kind::PeakEwma => self.two_choices(tier, ok, |a, b| self.ewma_first_wins(a, b)),
        };
        found.or_else(|| scan(tier, below(n), ok))
    }

    /// A weighted random eligible endpoint (a few draws, then `None`).
    fn draw(&self, tier: &Tier, ok: impl Fn(usize) -> bool) -> Option<usize> {
        (0..DRAWS)
            .map(|_| tier.index(tier.weights.sample()))
            .find(|&i| ok(i))
    }

    /// Power of two choices: two distinct endpoints drawn by weight (an
    /// ineligible one replaced by another draw); `first_wins(a, b)` decides,
    /// the first winning ties (so an idle cluster is balanced by weight).
    fn two_choices(
        &self,
        tier: &Tier,
        ok: impl Fn(usize) -> bool + Copy,
        first_wins: impl Fn(usize, usize) -> bool,
    ) -> Option<usize> {
        let (a, b) = tier.weights.sample_two();
        let (a, b) = (tier.index(a), tier.index(b));
        let a = if ok(a) { Some(a) } else { self.draw(tier, ok) };
        let b = if ok(b) { Some(b) } else { self.draw(tier, ok) };
        match (a, b) {
            (Some(a), Some(b)) => Some(if first_wins(a, b) { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    fn load(&self, i: usize) -> usize {
        self.states
            .get(i)
            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }

    fn weight(&self, i: usize) -> u32 {
        self.cluster.endpoints.get(i).map_or(1, weights::weight)
    }

    /// Peak EWMA: whether `a` costs no more than `b` per unit of weight, the
    /// cost being the estimate decayed to now times the requests in flight
    /// plus one. Both estimates decay by the same factor from now back, so
    /// only the time between their samples matters: no clock read.
    pub(super) fn ewma_first_wins(&self, a: usize, b: usize) -> bool {
        let (Some(sa), Some(sb)) = (self.states.get(a), self.states.get(b)) else {
            return true;
        };
        let (ra, ta) = sa.ewma.sample(sa.base);
        let (rb, tb) = sb.ewma.sample(sb.base);
        let apart = match ta.checked_duration_since(tb) {
            Some(d) => d.as_secs_f64(),
            None => -tb.saturating_duration_since(ta).as_secs_f64(),
        };
        // e^±700 stays finite.
        let scale = (apart / DECAY.as_secs_f64()).clamp(-700.0, 700.0).exp();
        let pending = |s: &EndpointState| s.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
        let cost_a = ra * scale * pending(sa) * f64::from(self.weight(b));
        let cost_b = rb * pending(sb) * f64::from(self.weight(a));
        cost_a <= cost_b
    }
}

/// A uniform draw in `0..n` as an index.
fn below(n: usize) -> usize {
    weights::below(n as u64) as usize
}

/// The first endpoint of `tier` from position `start` on (wrapping) that is
/// eligible.
fn scan(tier: &Tier, start: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    let n = tier.len();
    (0..n).map(|k| tier.index((start + k) % n)).find(|&i| ok(i))
}
