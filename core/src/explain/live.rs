//! What only a running proxy knows about a service: each endpoint's verdict
//! from every health source, how they fuse, and each cluster's resilience
//! counters. The proxy's admin listener fills these in
//! ([`ClusterSummary::live`](super::ClusterSummary::live),
//! [`ClusterVerdict::health`](super::ClusterVerdict::health)); an offline
//! explanation leaves them out.
//!
//! Fusion, as the balancer picks: an endpoint the registry marks unhealthy
//! is not in the cluster at all; one failing its active check or ejected by
//! outlier detection is skipped — unless the cluster is in panic mode
//! (Envoy's panic threshold: fewer than `minHealthPercent`, 50 % without
//! outlier detection, of its endpoints routable), where health is ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::routes::RetryBudget;

/// The retry budget in force for a cluster and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetInForce {
    pub budget: RetryBudget,
    pub from: BudgetSource,
}

/// Which retry budget applies: the DestinationRule's `retryBudget`
/// replaces the proxy's default (anymesh.yaml `retry_budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    DestinationRule,
    ProxyDefault,
}

/// A cluster as the running proxy sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterLive {
    pub counters: ClusterCounters,
    pub health: ClusterHealth,
}

/// A cluster's resilience counters since its state was built (they start
/// from zero again when its connection pool or retry budget changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterCounters {
    /// Retries sent.
    pub retries: u64,
    /// Retries refused because the retry budget was spent.
    pub retry_budget_exhausted: u64,
    /// Requests that stayed failed because their attempts ran out while the
    /// last outcome was retriable.
    pub retry_limit_exceeded: u64,
    /// Requests and retries refused by a connection-pool limit (503 with
    /// `x-envoy-overloaded`), by limit (`max_connections`, `pending`,
    /// `http2_max_requests`, `max_retries`).
    pub overflows: BTreeMap<String, u64>,
    /// Requests that found every connection busy and waited.
    pub waited: u64,
    /// Requests waiting for a connection now.
    pub pending: u64,
    /// Retries in flight now (counted under `maxRetries` or a concurrent budget).
    pub retries_in_flight: u64,
}

/// How many of a cluster's endpoints take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClusterHealth {
    /// Endpoints in the cluster (registry-eligible).
    pub endpoints: usize,
    /// Those no health source takes out.
    pub routable: usize,
    /// The panic threshold in percent.
    pub panic_threshold: u32,
    pub mode: HealthMode,
}

/// Whether health decides which endpoints take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMode {
    /// Endpoints taken out by a health source get no traffic.
    Normal,
    /// Too few endpoints are routable: every endpoint takes traffic,
    /// health ignored.
    Panic,
    /// No endpoint is routable and the panic threshold is 0: requests get
    /// 503 `no healthy upstream` (`UH`).
    NoneRoutable,
}

impl ClusterHealth {
    /// The cluster's mode with `routable` of `endpoints` endpoints taking
    /// traffic by health, as the balancer decides it for one priority tier:
    /// panic when the overprovisioned health (1.4 × routable share) is under
    /// 100 % and the routable share under `panic_threshold`.
    pub fn assess(endpoints: usize, routable: usize, panic_threshold: u32) -> Self {
        let total = endpoints.max(1);
        let share = 100 * routable / total;
        let overprovisioned = (140 * routable / total).min(100);
        let mode = if endpoints == 0 {
            HealthMode::Normal
        } else if routable == 0 && panic_threshold == 0 {
            HealthMode::NoneRoutable
        } else if overprovisioned < 100 && share < panic_threshold as usize {
            HealthMode::Panic
        } else {
            HealthMode::Normal
        };
        Self {
            endpoints,
            routable,
            panic_threshold,
            mode,
        }
    }
}

/// Each health source's verdict on one endpoint of one cluster, and the
/// fused one. (The registry's is the endpoint's `health` and the cluster
/// verdict beside this.)
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSources {
    pub active: ActiveCheck,
    pub outlier: OutlierStatus,
    pub fused: Fused,
}

/// The active health check's view of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveCheck {
    pub verdict: ActiveVerdict,
    /// The check probing it (`http reviews/v2:9080`); `None`: no check
    /// covers the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// When the last probe ended (Unix seconds in JSON).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_unix_secs")]
    pub last_probe: Option<SystemTime>,
    /// Why the last probe failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
    /// Probes finished since the endpoint was first checked.
    pub probes: u64,
}

impl ActiveCheck {
    /// The view of an endpoint no check covers.
    pub fn none(verdict: ActiveVerdict) -> Self {
        Self {
            verdict,
            check: None,
            last_probe: None,
            last_failure: None,
            consecutive_passes: 0,
            consecutive_failures: 0,
            probes: 0,
        }
    }
}

/// The active check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveVerdict {
    /// No check, or no verdict yet (routable).
    Unchecked,
    Passing,
    Failing,
}

/// Outlier detection's view of an endpoint in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutlierStatus {
    /// The cluster's DestinationRule has no `outlierDetection`.
    NotConfigured,
    /// Serving; `ejections` so far.
    Healthy { ejections: u32 },
    Ejected {
        /// Wall-clock end of the ejection (Unix seconds in JSON).
        #[serde(with = "unix_secs")]
        until: SystemTime,
        /// Milliseconds left when explained.
        remaining_ms: u64,
        cause: EjectionCause,
        /// The consecutive failures that triggered it.
        failures: u32,
        /// 1 for the endpoint's first ejection, 2 for the second, ...
        nth: u32,
    },
}

/// Which consecutive-error counter ejected an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EjectionCause {
    /// `consecutive5xxErrors`.
    #[serde(rename = "consecutive_5xx")]
    Consecutive5xx,
    /// `consecutiveGatewayErrors`.
    ConsecutiveGatewayErrors,
    /// `consecutiveLocalOriginFailures`.
    ConsecutiveLocalOriginFailures,
}

impl fmt::Display for EjectionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EjectionCause::Consecutive5xx => "5xx",
            EjectionCause::ConsecutiveGatewayErrors => "gateway errors",
            EjectionCause::ConsecutiveLocalOriginFailures => "local-origin failures",
        })
    }
}

/// Why a health source takes an endpoint out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutReason {
    ActiveCheckFailing,
    Ejected,
}

impl fmt::Display for OutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutReason::ActiveCheckFailing => "failing its active health check",
            OutReason::Ejected => "ejected by outlier detection",
        })
    }
}

/// The fused verdict: does the endpoint take traffic in this cluster?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Fused {
    /// No health source takes it out.
    Routable,
    /// Taken out by `out`, yet routable: the cluster is in panic mode.
    PanicRoutable { out: Vec<OutReason> },
    /// Gets no traffic because of `out`.
    Out { out: Vec<OutReason> },
}

impl Fused {
    /// Fuses the active and passive verdicts under the cluster's mode.
    pub fn of(active: ActiveVerdict, outlier: &OutlierStatus, mode: HealthMode) -> Self {
        let mut out = Vec::new();
        if active == ActiveVerdict::Failing {
            out.push(OutReason::ActiveCheckFailing);
        }
        if matches!(outlier, OutlierStatus::Ejected { .. }) {
            out.push(OutReason::Ejected);
        }
        match (out.is_empty(), mode) {
            (true, _) => Fused::Routable,
            (false, HealthMode::Panic) => Fused::PanicRoutable { out },
            (false, _) => Fused::Out { out },
        }
    }

    /// Whether the endpoint takes traffic.
    pub fn routable(&self) -> bool {
        !matches!(self, Fused::Out { .. })
    }
}

/// A time as Unix seconds, as the catalog's source times are written.
pub(super) mod unix_secs {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::Serializer;

    pub(in crate::explain) fn serialize<S: Serializer>(
        t: &SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        s.serialize_f64(secs)
    }
}

/// An optional time as Unix seconds.
mod opt_unix_secs {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::unix_secs::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_mode_follows_envoys_threshold() {
        // 3 of 4 routable: 1.4 × 75 % ≥ 100 %, no panic whatever the threshold.
        assert_eq!(ClusterHealth::assess(4, 3, 100).mode, HealthMode::Normal);
        // 1 of 3 routable: under the default 50 %.
        assert_eq!(ClusterHealth::assess(3, 1, 50).mode, HealthMode::Panic);
        // Istio's outlier default: threshold 0, never panic; none left: UH.
        assert_eq!(ClusterHealth::assess(3, 1, 0).mode, HealthMode::Normal);
        assert_eq!(
            ClusterHealth::assess(3, 0, 0).mode,
            HealthMode::NoneRoutable
        );
        assert_eq!(ClusterHealth::assess(3, 0, 50).mode, HealthMode::Panic);
        assert_eq!(ClusterHealth::assess(0, 0, 0).mode, HealthMode::Normal);
    }

    #[test]
    fn fusion_names_every_source_that_takes_an_endpoint_out() {
        let ejected = OutlierStatus::Ejected {
            until: SystemTime::UNIX_EPOCH,
            remaining_ms: 0,
            cause: EjectionCause::Consecutive5xx,
            failures: 5,
            nth: 1,
        };
        let healthy = OutlierStatus::Healthy { ejections: 0 };
        assert_eq!(
            Fused::of(ActiveVerdict::Passing, &healthy, HealthMode::Normal),
            Fused::Routable
        );
        let both = Fused::of(ActiveVerdict::Failing, &ejected, HealthMode::Normal);
        assert_eq!(
            both,
            Fused::Out {
                out: vec![OutReason::ActiveCheckFailing, OutReason::Ejected]
            }
        );
        assert!(!both.routable());
        let panic = Fused::of(ActiveVerdict::Unchecked, &ejected, HealthMode::Panic);
        assert!(panic.routable());
        assert_eq!(
            Fused::of(ActiveVerdict::Failing, &healthy, HealthMode::NoneRoutable),
            Fused::Out {
                out: vec![OutReason::ActiveCheckFailing]
            }
        );
    }
}
