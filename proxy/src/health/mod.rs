//! Active health checks: the proxy probes the endpoints it routes to.
//!
//! Istio never shipped them (istio#10537); on VM fleets without an
//! orchestrator the proxy has to find out itself that an endpoint's
//! application is sick while its registry entry still says healthy.
//!
//! ```text
//!  HealthCheck (anymesh.yaml)      Router::current()
//!          │                              │  clusters matching a check
//!          ▼                              ▼
//!  driver ── one Entry per endpoint address (first matching check wins)
//!    │  probes due ──► JoinSet (≤ max_concurrent_probes at once, each with its timeout)
//!    │  ◄── outcome ── Tally (consecutive passes / failures, thresholds)
//!    ├──► EndpointState::set_active_health  (every cluster holding the address)
//!    └──► HealthBoard                       (explain, metrics)
//! ```
//!
//! Only clusters of the route table in force are looked at, so only
//! endpoints this proxy routes to are probed; an address in several
//! clusters is probed once. New endpoints are spread evenly over their
//! check's interval, and every probe after that waits the interval plus a
//! random jitter (`0..=jitter`, as Envoy's `interval_jitter`), so probes do
//! not bunch up. Verdicts are kept by address, so they survive route-table
//! swaps; an address no longer routed to is forgotten.
//!
//! The verdict fuses with the others at pick time (the balancer): a
//! registry-unhealthy endpoint is never in a cluster; an actively failing
//! one is skipped unless every endpoint of the cluster is out (panic mode).

mod board;
mod driver;
mod probe;
mod tally;

#[cfg(test)]
mod tests;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::Cluster;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::router::Router;

pub use board::{EndpointHealth, HealthBoard, ProbeOutcome, Verdict};

/// Probes at most this many endpoints at once unless told otherwise.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 32;

/// One active health check: which clusters it applies to, how to probe
/// their endpoints, how often, and how many results make a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// The service's hostname, exact, or leading labels of it (`reviews`
    /// matches `reviews.shop.svc.cluster.local`).
    pub service: String,
    /// Only the cluster of this DestinationRule subset.
    pub subset: Option<String>,
    /// Only the clusters of this service port.
    pub port: Option<u16>,
    pub kind: CheckKind,
    /// Time between two probes of one endpoint (before jitter).
    pub interval: Duration,
    /// A probe not finished by then fails.
    pub timeout: Duration,
    /// Consecutive failures that make an endpoint failing.
    pub unhealthy_threshold: u32,
    /// Consecutive passes that make a failing endpoint pass again.
    pub healthy_threshold: u32,
    /// Up to this much is added at random to each interval.
    pub jitter: Duration,
}

/// How an endpoint is probed.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// An HTTP/1.1 `GET` on a fresh connection, `Connection: close`.
    Http(HttpCheck),
    /// A TCP connection is accepted.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2 (prior knowledge) answers
    /// `SERVING` for `service` (empty: the server as a whole).
    Grpc { service: String },
}

/// An HTTP probe.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    /// Path and query of the `GET`.
    pub path: String,
    /// Statuses that pass.
    pub expected_statuses: Vec<RangeInclusive<u16>>,
    /// The `Host` header; `None`: the cluster's service hostname.
    pub host: Option<String>,
}

impl HttpCheck {
    /// A `GET path` that passes on 200..=399.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            expected_statuses: vec![200..=399],
            host: None,
        }
    }
}

impl HealthCheck {
    /// A check of `service` with the defaults: every 10 s, 1 s timeout,
    /// failing after 3 failures, passing again after 2 passes, 1 s jitter.
    pub fn new(service: impl Into<String>, kind: CheckKind) -> Self {
        Self {
            service: service.into(),
            subset: None,
            port: None,
            kind,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            jitter: Duration::from_secs(1),
        }
    }

    /// Whether this check applies to `cluster`.
    pub fn applies_to(&self, cluster: &Cluster) -> bool {
        let host = cluster.service.as_str();
        let named = host == self.service
            || host
                .strip_prefix(self.service.as_str())
                .is_some_and(|rest| rest.starts_with('.'));
        named
            && self
                .subset
                .as_ref()
                .is_none_or(|s| cluster.subset.as_ref() == Some(s))
            && self.port.is_none_or(|p| cluster.port.number == p)
    }

    /// What the board and logs call this check: `http reviews/v2:9080`.
    fn label(&self) -> String {
        let kind = match self.kind {
            CheckKind::Http(_) => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Grpc { .. } => "grpc",
        };
        let mut s = format!("{kind} {}", self.service);
        if let Some(subset) = &self.subset {
            s.push('/');
            s.push_str(subset);
        }
        if let Some(port) = self.port {
            s.push_str(&format!(":{port}"));
        }
        s
    }
}

/// The active health checker of one proxy: build it, keep its
/// [`board`](Self::board) for explain and metrics, then [`spawn`](Self::spawn) it.
#[derive(Debug)]
pub struct HealthChecker {
    checks: Vec<HealthCheck>,
    max_concurrent_probes: usize,
    board: Arc<HealthBoard>,
}

impl HealthChecker {
    /// A checker running `checks`, at most `max_concurrent_probes` (at
    /// least 1) probes at once.
    pub fn new(checks: Vec<HealthCheck>, max_concurrent_probes: usize) -> Self {
        Self {
            checks,
            max_concurrent_probes: max_concurrent_probes.max(1),
            board: Arc::default(),
        }
    }

    /// Every probed endpoint's state, updated as probes finish.
    pub fn board(&self) -> Arc<HealthBoard> {
        self.board.clone()
    }

    /// Runs the checks against `router`'s routing until `stop` turns true
    /// (or its sender is gone).
    pub fn spawn(self, router: Arc<Router>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let driver = driver::Driver::new(
            self.checks,
            self.max_concurrent_probes,
            router,
            self.board,
            Arc::new(probe::NetProber),
        );
        tokio::spawn(driver.run(stop))
    }
}

/// Runs `checks` against `router` with the default concurrency bound until
/// `stop` turns true.
pub fn spawn(
    router: Arc<Router>,
    checks: Vec<HealthCheck>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    HealthChecker::new(checks, DEFAULT_MAX_CONCURRENT_PROBES).spawn(router, stop)
}
