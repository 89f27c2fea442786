//! What the running proxy adds to an explanation: per endpoint of each
//! cluster, the active check's and outlier detection's verdicts and the
//! fused one; per cluster, the resilience counters and whether health is
//! in force or the cluster is in panic mode.
//!
//! Read from the balancers and runtimes of the routing in force (atomics,
//! and one short lock per endpoint for its outlier book), never from the
//! request path.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anymesh_core::explain::live::{
    ActiveCheck, ActiveVerdict, ClusterCounters, ClusterHealth, EjectionCause, Fused, HealthMode,
    OutlierStatus,
};
use anymesh_core::explain::{ClusterLive, Explanation, HealthSources, Verdict};
use anymesh_core::routes::Cluster;
use tokio::time::Instant;

use crate::balance::{ActiveHealth, ClusterLb};
use crate::health::{HealthBoard, ProbeOutcome};
use crate::resilience::breaker::Overflow;
use crate::resilience::outlier::{EjectionReason, OutlierVerdict};
use crate::resilience::runtime::ClusterRuntime;
use crate::router::Routing;

/// The balancer's panic threshold for a cluster without outlier detection
/// (Envoy's default, as `balance::health::DEFAULT_PANIC_THRESHOLD`).
const DEFAULT_PANIC_THRESHOLD: u32 = 50;

/// One endpoint's verdicts in one cluster, by its index there.
struct EndpointView {
    active: ActiveVerdict,
    outlier: OutlierStatus,
}

/// Fills in `x`'s live parts from `routing` (the routing `x` was explained
/// against) and the health checker's board; `now` and `wall` are the same
/// moment on the monotonic and the wall clock.
pub(super) fn add_live(
    x: &mut Explanation,
    routing: &Routing,
    board: Option<&HealthBoard>,
    now: Instant,
    wall: SystemTime,
) {
    x.live = true;
    for (ci, summary) in x.clusters.iter_mut().enumerate() {
        let Some(cluster) = routing
            .table
            .clusters
            .iter()
            .find(|c| c.name == summary.name)
        else {
            continue;
        };
        let Some(lb) = routing.lb(cluster) else {
            continue;
        };
        let views: Vec<Option<EndpointView>> = (0..cluster.endpoints.len())
            .map(|i| endpoint_view(lb, i, now, wall))
            .collect();
        let routable = views
            .iter()
            .flatten()
            .filter(|v| Fused::of(v.active, &v.outlier, HealthMode::Normal).routable())
            .count();
        let health =
            ClusterHealth::assess(cluster.endpoints.len(), routable, panic_threshold(cluster));
        summary.live = Some(ClusterLive {
            counters: routing
                .runtime(cluster)
                .map(|r| counters(r))
                .unwrap_or_default(),
            health,
        });
        for e in &mut x.endpoints {
            let Some(verdict) = e.clusters.get_mut(ci) else {
                continue;
            };
            let Verdict::Eligible { authority, .. } = &verdict.verdict else {
                continue;
            };
            let Some(i) = cluster
                .endpoints
                .iter()
                .position(|c| &c.authority == authority)
            else {
                continue;
            };
            let Some(Some(view)) = views.get(i) else {
                continue;
            };
            let active = active_check(view.active, board.and_then(|b| b.get(authority)));
            verdict.health = Some(HealthSources {
                fused: Fused::of(view.active, &view.outlier, health.mode),
                active,
                outlier: view.outlier.clone(),
            });
        }
    }
}

/// The panic threshold the balancer applies to `cluster`.
fn panic_threshold(cluster: &Cluster) -> u32 {
    cluster
        .policy
        .outlier
        .as_ref()
        .map_or(DEFAULT_PANIC_THRESHOLD, |o| o.min_health_percent)
}

fn endpoint_view(lb: &ClusterLb, i: usize, now: Instant, wall: SystemTime) -> Option<EndpointView> {
    let v = lb.verdicts(i)?;
    let active = match v.active {
        ActiveHealth::Unchecked => ActiveVerdict::Unchecked,
        ActiveHealth::Passing => ActiveVerdict::Passing,
        ActiveHealth::Failing => ActiveVerdict::Failing,
    };
    Some(EndpointView {
        active,
        outlier: outlier_status(&v.outlier, now, wall),
    })
}

/// Outlier detection's verdict with the ejection's end on the wall clock.
pub(crate) fn outlier_status(v: &OutlierVerdict, now: Instant, wall: SystemTime) -> OutlierStatus {
    match v {
        OutlierVerdict::NotConfigured => OutlierStatus::NotConfigured,
        OutlierVerdict::Serving { ejections, .. } => OutlierStatus::Healthy {
            ejections: *ejections,
        },
        OutlierVerdict::Ejected(e) => {
            let remaining = e.remaining(now);
            OutlierStatus::Ejected {
                until: wall + remaining,
                remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                cause: match e.reason {
                    EjectionReason::Consecutive5xx => EjectionCause::Consecutive5xx,
                    EjectionReason::ConsecutiveGateway => EjectionCause::ConsecutiveGatewayErrors,
                    EjectionReason::ConsecutiveLocalOrigin => {
                        EjectionCause::ConsecutiveLocalOriginFailures
                    }
                },
                failures: e.failures,
                nth: e.nth,
            }
        }
    }
}

/// The balancer's active verdict with the checker's details, when a check
/// probes the endpoint.
fn active_check(
    verdict: ActiveVerdict,
    probed: Option<crate::health::EndpointHealth>,
) -> ActiveCheck {
    let Some(p) = probed else {
        return ActiveCheck::none(verdict);
    };
    ActiveCheck {
        verdict,
        check: Some(p.check),
        last_probe: p.last_probe,
        last_failure: match p.last {
            Some(ProbeOutcome::Fail(why)) => Some(why),
            _ => None,
        },
        consecutive_passes: p.consecutive_passes,
        consecutive_failures: p.consecutive_failures,
        probes: p.probes,
    }
}

/// A cluster's counters from its runtime.
pub(crate) fn counters(r: &ClusterRuntime) -> ClusterCounters {
    let overflows: BTreeMap<String, u64> = if r.limits.is_unlimited() {
        BTreeMap::new()
    } else {
        Overflow::ALL
            .iter()
            .map(|&limit| (limit.reason().to_string(), r.limits.overflows(limit)))
            .collect()
    };
    ClusterCounters {
        retries: r.stats.retries(),
        retry_budget_exhausted: r.budget.exhausted(),
        retry_limit_exceeded: r.stats.limit_exceeded(),
        overflows,
        waited: r.limits.waited(),
        pending: r.limits.pending(),
        retries_in_flight: r
            .limits
            .retries_in_flight()
            .max(r.budget.retries_in_flight()),
    }
}
