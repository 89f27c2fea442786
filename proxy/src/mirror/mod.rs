//! Request mirroring (VirtualService `mirror`, `mirrorPercentage`,
//! `mirrors[]`): a copy of a routed request goes to each mirror cluster
//! whose percentage draw fires, fire and forget, and its response is read
//! and discarded — or, with the route's comparison set (an anymesh
//! extension), compared with the primary's ([`compare`]).
//!
//! ```text
//! primary path                         mirror task (one per mirror, spawned)
//! ─────────────────────────────        ─────────────────────────────────────
//! Mirroring::mirror(routing, hit, ..)  pick already done; send the copy,
//!   draw %, check body, take a slot,     read the head and the whole body
//!   pick, build the head, spawn ──────►  (hashed when comparing), all within
//!   returns Option<PrimaryTap>           the mirror timeout
//! tap.head / tap.body / tap.end ─────► oneshot: the primary's digest, then
//!   (only when comparing)                match / mismatch, counted and logged
//! ```
//!
//! The primary never waits for a mirror and never fails because of one:
//! [`Mirroring::mirror`] does no I/O and never waits, and a mirror that is
//! down or hangs only holds its own task (bounded by the timeout) and one
//! of the proxy's mirror slots (bounded by [`MirrorSettings::max_in_flight`]).
//! Bodies are mirrored only when read in full before forwarding and no
//! larger than [`MirrorSettings::max_body`]; other requests are not
//! mirrored, and that is counted (`anymesh_mirror_skipped_total`).

mod compare;
mod head;
mod send;
pub(crate) mod tap;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{Mirror, MirrorCompare, Route, RouteHit};
use bytes::Bytes;
use http::request::Parts;
use parking_lot::Mutex;

pub(crate) use tap::PrimaryTap;

use crate::balance::PickContext;
use crate::metrics::{Metrics, MirrorLabels, MirrorResult, MirrorSkip, MirrorSkipLabels};
use crate::router::Routing;
use crate::upstream::pool::Pool;

/// How the proxy mirrors.
#[derive(Debug, Clone)]
pub(crate) struct MirrorSettings {
    /// Append `-shadow` to the host part of the mirrored request's
    /// authority, as Istio did before 1.28 (now it keeps the original).
    pub shadow_suffix: bool,
    /// Largest request body mirrored; a request with a larger body, or one
    /// whose body streams, is not mirrored.
    pub max_body: usize,
    /// Mirrors in flight at once, per proxy; beyond it a mirror is skipped.
    pub max_in_flight: usize,
    /// Bounds one mirror (exchange and response body) when the route sets
    /// no timeout, and the wait for the primary's response to compare.
    pub timeout: Duration,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            shadow_suffix: false,
            max_body: 64 * 1024,
            max_in_flight: 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The request body as the mirror sees it.
#[derive(Debug, Clone)]
pub(crate) enum MirrorBody {
    /// The request has no body.
    Empty,
    /// The whole body, read before forwarding.
    Full(Bytes),
    /// The body streams to the primary as it arrives; its declared length,
    /// if any. Not mirrored.
    Streaming(Option<u64>),
}

/// Mirroring for one proxy: owned by the forwarding layer.
pub(crate) struct Mirroring {
    shared: Arc<Shared>,
}

/// What every mirror task of a proxy shares.
struct Shared {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    settings: MirrorSettings,
    /// Mirrors in flight (tasks alive).
    in_flight: AtomicUsize,
    /// When a mismatch was last logged, per route (touched by mirror tasks
    /// on a mismatch only, never on the primary's path).
    logged: Mutex<compare::LogSampler>,
}

impl Mirroring {
    /// Mirrors through `pool` (the proxy's upstream connections).
    pub(crate) fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, settings: MirrorSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                metrics,
                settings,
                in_flight: AtomicUsize::new(0),
                logged: Mutex::new(compare::LogSampler::default()),
            }),
        }
    }

    /// Mirrors in flight now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Sends a copy of a routed request to each of the route's mirrors whose
    /// percentage draw fires, and returns at once. `head` is the client's
    /// request head as received (before the primary's `prepare`); `body`
    /// says whether the body can be copied.
    ///
    /// With the route's `mirror_compare`, returns the tap the primary's
    /// response must be fed through ([`PrimaryTap`]); `None` otherwise, or
    /// when no mirror was sent.
    pub(crate) fn mirror(
        &self,
        routing: &Routing,
        hit: RouteHit<'_>,
        head: &Parts,
        body: &MirrorBody,
    ) -> Option<PrimaryTap> {
        let route = hit.route;
        let mut tap: Option<PrimaryTap> = None;
        // Shared by the tap and every mirror task of this request.
        let mut compare: Option<Arc<MirrorCompare>> = None;
        for mirror in &route.mirrors {
            if !draw(mirror.percentage) {
                continue;
            }
            let skip = |reason| self.skipped(route, mirror, reason);
            let body = match body {
                MirrorBody::Empty => None,
                MirrorBody::Full(b) if b.len() <= self.shared.settings.max_body => Some(b),
                MirrorBody::Full(_) => {
                    skip(MirrorSkip::BodyTooLarge);
                    continue;
                }
                MirrorBody::Streaming(Some(n)) if *n > self.shared.settings.max_body as u64 => {
                    skip(MirrorSkip::BodyTooLarge);
                    continue;
                }
                MirrorBody::Streaming(_) => {
                    skip(MirrorSkip::BodyStreaming);
                    continue;
                }
            };
            let Some(slot) = Slot::take(&self.shared) else {
                skip(MirrorSkip::InFlightLimit);
                continue;
            };
            let cluster = &mirror.cluster;
            // The mirror's cluster is one of this table's (the compiler
            // lists it); a stale `Arc` from another table finds no balancer.
            let lb = routing.lb(cluster).filter(|lb| {
                Arc::ptr_eq(lb.cluster(), cluster) || lb.cluster().name == cluster.name
            });
            let ctx = PickContext {
                headers: &head.headers,
                query: head.uri.query(),
                source_ip: None,
            };
            let Some(picked) = lb.and_then(|lb| lb.pick(&ctx)) else {
                skip(MirrorSkip::NoEndpoint);
                continue;
            };
            let h2 = cluster.port.protocol.is_h2();
            let shadow = self.shared.settings.shadow_suffix;
            let request = match head::build(head, hit, h2, shadow, body) {
                Ok(r) => r,
                Err(why) => {
                    tracing::debug!(route = %route.name, cluster = %cluster.name, error = %why, "request not mirrored");
                    skip(MirrorSkip::BadRequest);
                    continue;
                }
            };
            let primary = route.mirror_compare.as_ref().map(|c| {
                let c = compare.get_or_insert_with(|| Arc::new(c.clone()));
                let tap = tap.get_or_insert_with(|| PrimaryTap::new(c.clone()));
                (c.clone(), tap.subscribe())
            });
            let job = send::Job {
                shared: slot,
                endpoint: picked.endpoint.clone(),
                guard: picked.guard,
                request,
                route: route.name.clone(),
                cluster: Arc::from(cluster.name.as_str()),
                timeout: route.timeout.unwrap_or(self.shared.settings.timeout),
                primary,
            };
            tokio::spawn(job.run());
        }
        tap
    }

    fn skipped(&self, route: &Route, mirror: &Mirror, reason: MirrorSkip) {
        tracing::trace!(route = %route.name, cluster = %mirror.cluster.name, reason = reason.as_str(), "mirror skipped");
        self.shared
            .metrics
            .mirror_skipped
            .get_or_create(&MirrorSkipLabels {
                route: route.name.clone(),
                cluster: Arc::from(mirror.cluster.name.as_str()),
                reason,
            })
            .inc();
    }
}

impl Shared {
    /// Counts how a mirror ended.
    fn count(&self, route: &Arc<str>, cluster: &Arc<str>, result: MirrorResult) {
        self.metrics
            .mirror_responses
            .get_or_create(&MirrorLabels {
                route: route.clone(),
                cluster: cluster.clone(),
                result,
            })
            .inc();
    }
}

/// Whether a request with this percentage (0 < p <= 100) is mirrored: a
/// draw in millionths, as Envoy's runtime fractions; 100 % draws nothing.
fn draw(percentage: f64) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    if percentage.is_nan() || percentage <= 0.0 {
        return false;
    }
    let threshold = (percentage * 10_000.0).round() as u64;
    crate::balance::random_below(1_000_000) < threshold
}

/// One of the proxy's mirror slots, held by a mirror task to its end.
struct Slot(Arc<Shared>);

impl Slot {
    /// A slot, unless the proxy has as many mirrors in flight as it allows.
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.settings.max_in_flight;
        let taken = shared
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        taken.is_ok().then(|| Slot(shared.clone()))
    }
}

impl std::ops::Deref for Slot {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
