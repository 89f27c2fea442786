//! Which endpoints of a cluster take traffic, as Envoy decides it from
//! health: priority tiers, their loads with the overprovisioning factor, and
//! the panic threshold.
//!
//! Health changes anywhere (an ejection, its end, an active check's verdict)
//! bump one process-wide [epoch](super::epoch). A cluster remembers the epoch at which it saw
//! every endpoint available; while the epoch has not moved, a pick costs two
//! loads and looks at no endpoint's health. Otherwise the cluster recomputes
//! its [`View`] once per epoch (a scan of its endpoints) and picks check the
//! endpoints they draw.
//!
//! Tier loads follow Envoy's priority levels: a tier's health is
//! `min(100, 1.4 × 100 × healthy / total)` (so a tier with at least
//! 1/1.4 ≈ 72 % healthy takes all it is offered); tiers in order take
//! `health × 100 / Σhealth` (Σ capped at 100) of what is left. While the sum
//! is under 100, a tier whose healthy share is under the panic threshold is
//! in panic: its endpoints are used regardless of health. When every tier is
//! in panic, load follows the tiers' sizes. With a threshold of 0 (Istio's
//! default `minHealthPercent`) there is no panic, and a cluster with no
//! available endpoint gets no pick (Envoy's "no healthy upstream").

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::Guard;
use tokio::time::Instant;

use super::epoch::{changed, epoch};
use super::weights::below;
use super::{ActiveHealth, ClusterLb, NO_TIER};

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: usize = 140;

/// Envoy's default panic threshold, used when the cluster has no outlier
/// detection (Istio then leaves Envoy's default in place); it matters only
/// for endpoints that fail active health checks.
pub(super) const DEFAULT_PANIC_THRESHOLD: u32 = 50;

/// A cluster's availability at one epoch.
#[derive(Debug)]
pub(super) struct View {
    pub(super) epoch: u64,
    /// The earliest end of an ejection in the cluster: the view is stale then.
    pub(super) next_expiry: Option<Instant>,
    /// Nothing available and no panic, or no locality with weight has
    /// anything available: no endpoint may be picked.
    pub(super) none: bool,
    /// Share of picks per tier, in percent (summing to 100).
    loads: Box<[u8]>,
    /// Per tier: in panic (health is ignored).
    pub(super) panic: Box<[bool]>,
}

impl View {
    /// A view that forces a recomputation at the first pick.
    pub(super) fn stale(tiers: usize) -> Self {
        Self {
            epoch: 0,
            next_expiry: None,
            none: false,
            loads: vec![0; tiers].into(),
            panic: vec![false; tiers].into(),
        }
    }

    /// The view of tiers with `healthy[t]` of `total[t]` endpoints available
    /// (no tier is empty); with `weights`, of localities sharing the traffic
    /// by weight instead.
    pub(super) fn new(
        epoch: u64,
        next_expiry: Option<Instant>,
        healthy: &[usize],
        total: &[usize],
        panic_threshold: u32,
        weights: Option<&[u32]>,
    ) -> Self {
        let n = total.len();
        if n == 0 {
            return Self::stale(0);
        }
        if let Some(weights) = weights {
            return Self::weighted(epoch, next_expiry, healthy, total, panic_threshold, weights);
        }
        let health: Vec<usize> = healthy
            .iter()
            .zip(total)
            .map(|(&h, &t)| (OVERPROVISIONING * h / t.max(1)).min(100))
            .collect();
        let normalized = health.iter().sum::<usize>().min(100);
        let threshold = panic_threshold as usize;
        let mut view = Self {
            epoch,
            next_expiry,
            none: false,
            loads: vec![0; n].into(),
            panic: vec![false; n].into(),
        };
        if normalized == 0 && threshold == 0 {
            view.none = true;
            return view;
        }
        let mut left = 100;
        for (load, h) in view.loads.iter_mut().zip(&health) {
            let share = (h * 100).checked_div(normalized).unwrap_or(0).min(left);
            *load = share as u8;
            left -= share;
        }
        // Rounding goes to the first tier with health.
        if let Some(first) = health.iter().position(|&h| h > 0) {
            view.loads[first] += left as u8;
        }
        if normalized < 100 {
            for (t, panic) in view.panic.iter_mut().enumerate() {
                *panic = 100 * healthy[t] / total[t].max(1) < threshold;
            }
        }
        if view.panic.iter().all(|&p| p) {
            // Total panic: load by the tiers' sizes.
            let all: usize = total.iter().sum::<usize>().max(1);
            let mut left = 100;
            for (load, t) in view.loads.iter_mut().zip(total) {
                let share = 100 * t / all;
                *load = share as u8;
                left -= share;
            }
            view.loads[0] += left as u8;
        }
        view
    }

    /// Localities of one priority sharing the traffic by weight times
    /// health (Envoy's locality-weighted balancing, `min(1, 1.4 × healthy /
    /// total)` per locality); panic looks at the whole priority.
    fn weighted(
        epoch: u64,
        next_expiry: Option<Instant>,
        healthy: &[usize],
        total: &[usize],
        panic_threshold: u32,
        weights: &[u32],
    ) -> Self {
        let n = total.len();
        let (all_healthy, all) = (healthy.iter().sum::<usize>(), total.iter().sum::<usize>());
        let availability = (OVERPROVISIONING * all_healthy / all.max(1)).min(100);
        let panic = availability < 100 && 100 * all_healthy / all.max(1) < panic_threshold as usize;
        let mut view = Self {
            epoch,
            next_expiry,
            none: all_healthy == 0 && panic_threshold == 0,
            loads: vec![0; n].into(),
            panic: vec![panic; n].into(),
        };
        let effective: Vec<u64> = (0..n)
            .map(|t| {
                let w = u64::from(weights.get(t).copied().unwrap_or(0));
                if panic {
                    return w;
                }
                let health = (OVERPROVISIONING * healthy[t] / total[t].max(1)).min(100);
                w * health as u64
            })
            .collect();
        let sum: u64 = effective.iter().sum();
        if sum == 0 {
            // No locality with weight has anything to give (Envoy picks no
            // locality, then no host).
            view.none = true;
            return view;
        }
        let mut left = 100u64;
        for (load, e) in view.loads.iter_mut().zip(&effective) {
            let share = (e * 100).checked_div(sum).unwrap_or(0).min(left);
            *load = share as u8;
            left -= share;
        }
        if let Some(first) = effective.iter().position(|&e| e > 0) {
            view.loads[first] += left as u8;
        }
        view
    }

    /// Draws a tier by load.
    pub(super) fn draw_tier(&self) -> usize {
        if self.loads.len() <= 1 || self.loads.first() == Some(&100) {
            return 0;
        }
        let mut point = below(100) as u8;
        for (t, &load) in self.loads.iter().enumerate() {
            if point < load {
                return t;
            }
            point -= load;
        }
        0
    }

    #[cfg(test)]
    pub(super) fn loads(&self) -> &[u8] {
        &self.loads
    }
}

impl ClusterLb {
    /// Some endpoint is (or was, at the last look) unavailable: draw a tier
    /// by the health view, then an eligible endpoint in it.
    #[cold]
    pub(super) fn pick_degraded(&self, hash: Option<u64>, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let view = self.current_view(now);
        if view.none {
            return None;
        }
        let t = view.draw_tier();
        let tier = self.tiers.get(t)?;
        if view.panic.get(t).copied().unwrap_or(false) {
            return self.choose_untried(tier, hash, tried, |_| true);
        }
        let available = |i: usize| self.available(i, now);
        self.choose_untried(tier, hash, tried, available)
            .or_else(|| {
                // The view was stale: any available endpoint, best tier first.
                self.tiers
                    .iter()
                    .find_map(|tier| self.choose(tier, hash, available))
            })
    }

    /// Whether endpoint `i` may take requests at `now` (as far as health
    /// goes): not failing its active check, and not ejected when this
    /// cluster has outlier detection.
    pub(super) fn available(&self, i: usize, now: Instant) -> bool {
        self.states.get(i).is_some_and(|s| {
            s.active_health() != ActiveHealth::Failing
                && !(self.cluster.policy.outlier.is_some() && s.outlier.is_ejected(now))
        })
    }

    /// The health view for now, recomputed when the epoch moved or an
    /// ejection's time is up. A guard, not an `Arc` clone: picks on every
    /// core read it without writing a shared count.
    fn current_view(&self, now: Instant) -> Guard<Arc<View>> {
        let view = self.view.load();
        let due = view.next_expiry.is_some_and(|t| t <= now);
        if view.epoch == epoch() && !due {
            return view;
        }
        Guard::from_inner(self.refresh(now))
    }

    /// Ends the ejections whose time is up, counts the available endpoints
    /// per tier, and stores the new view (marking the cluster clean when
    /// every endpoint is available).
    pub(super) fn refresh(&self, now: Instant) -> Arc<View> {
        if self.cluster.policy.outlier.is_some() {
            for s in self.states.iter() {
                if s.outlier.end_if_due(now) {
                    changed();
                }
            }
        }
        // Read before the scan: a change during it moves the epoch past this.
        let epoch = epoch();
        let mut healthy = vec![0usize; self.tiers.len()];
        let mut total = vec![0usize; self.tiers.len()];
        let mut next_expiry: Option<Instant> = None;
        for (i, s) in self.states.iter().enumerate() {
            let t = self.tier_of.get(i).map_or(NO_TIER, |&t| t);
            let Some(slot) = total.get_mut(usize::from(t)) else {
                continue; // in no tier
            };
            *slot += 1;
            if self.available(i, now) {
                if let Some(slot) = healthy.get_mut(usize::from(t)) {
                    *slot += 1;
                }
            } else if let Some(until) = s.outlier.ejected_until().filter(|&u| u > now) {
                next_expiry = Some(next_expiry.map_or(until, |n| n.min(until)));
            }
        }
        let view = Arc::new(View::new(
            epoch,
            next_expiry,
            &healthy,
            &total,
            self.panic_threshold,
            self.tier_weights.as_deref(),
        ));
        self.view.store(view.clone());
        if healthy == total {
            self.clean.store(epoch, Ordering::Relaxed);
        }
        view
    }
}
