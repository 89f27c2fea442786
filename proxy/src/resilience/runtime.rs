//! Per-cluster resilience state that outlives a route table: the retry
//! budget, the connection-pool limits and their counters.
//!
//! [`ClusterRuntimes`] lives beside the balancers, owned by whatever swaps
//! route tables; for every new [`RouteTable`] it hands out one
//! [`ClusterRuntime`] per cluster:
//! ```text
//! ClusterRuntimes ── cluster name ──► (what it was built from, Arc<ClusterRuntime>)
//! ```
//! A cluster keeps its runtime — counters, requests and retries in flight,
//! budget window — across table swaps while its name and everything the
//! runtime is built from stay the same: the limits of the DestinationRule's
//! `connectionPool`, its `retryBudget` (or the proxy's default budget when
//! it sets none), and whether its upstreams speak HTTP/2. Anything else in
//! the cluster (endpoints, timeouts, outlier detection, locality) may
//! change freely.
//! When one of those changes the runtime is rebuilt from zero (requests in
//! flight finish against the old one); a cluster that is gone is forgotten.
//!
//! Which budget applies: the DestinationRule's `retryBudget` replaces the
//! default budget for its cluster. An Envoy-style (concurrent) budget from
//! the DestinationRule also replaces `maxRetries`, as in Envoy, where a
//! retry budget overrides the retry circuit breaker.

// Called by the forwarding layer once it is wired in (issue 20); until then
// only the tests use it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
#[cfg(test)]
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use anymesh_core::routes::{Cluster, ConnectionPool, RetryBudget, RouteTable};
#[cfg(test)]
use tokio::time::Instant;

#[cfg(test)]
use super::breaker::{Admission, Admitted};
use super::breaker::{Limits, Overflow, RetryPermit};
#[cfg(test)]
use super::budget::RequestGuard;
use super::budget::{Budget, RetryGuard};

#[cfg(test)]
mod tests;

/// One cluster's resilience state.
///
/// Per request: a place in the budget ([`Budget::request`]) when it is
/// routed, then admission under the limits ([`Limits::admit`]), both held
/// until the response ends. Per retry: [`try_retry`](Self::try_retry), its
/// ticket held until the retried attempt's outcome is known.
pub(crate) struct ClusterRuntime {
    /// The retry budget in force for the cluster.
    pub(crate) budget: Budget,
    /// The connection-pool limits (circuit breakers).
    pub(crate) limits: Limits,
    /// Retry counters.
    pub(crate) stats: RetryStats,
}

/// Retry counters of a cluster, beside those the budget and limits keep.
#[derive(Debug, Default)]
pub(crate) struct RetryStats {
    retries: AtomicU64,
    limit_exceeded: AtomicU64,
}

impl RetryStats {
    /// Retries sent (Envoy's `upstream_rq_retry`).
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// Requests that stayed failed because their attempts ran out while
    /// the last outcome was retriable (Envoy's `upstream_rq_retry_limit_exceeded`).
    pub(crate) fn limit_exceeded(&self) -> u64 {
        self.limit_exceeded.load(Relaxed)
    }

    /// Counts a request whose attempts ran out.
    pub(crate) fn record_limit_exceeded(&self) {
        self.limit_exceeded.fetch_add(1, Relaxed);
    }
}

/// Why a retry was not allowed. The failed attempt's outcome is then what
/// the client gets (as Envoy: a refused retry is not an overflow reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryRefused {
    /// `maxRetries` retries are in flight.
    Overflow(Overflow),
    /// The retry budget is spent.
    Budget,
}

/// A retry the cluster allowed; hold it until the retried attempt's
/// outcome is known.
#[derive(Debug)]
pub(crate) struct RetryTicket {
    _permit: RetryPermit,
    _budget: RetryGuard,
}

/// The guards of an admitted request; hold them until the response ends.
/// (The forwarding layer counts the budget when it routes and admits
/// later, holding both in `upstream::held::Held`; this pair is the tests'.)
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct RequestTicket {
    _admitted: Admitted,
    _budget: RequestGuard,
}

/// A request's admission ([`ClusterRuntime::admit`]); it counts in the
/// budget from the start, waiting included (as Envoy counts pending
/// requests in a retry budget).
#[cfg(test)]
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub(crate) struct TicketAdmission {
    budget: RequestGuard,
    admission: Admission,
}

#[cfg(test)]
impl Future for TicketAdmission {
    type Output = Result<RequestTicket, Overflow>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let admitted = std::task::ready!(Pin::new(&mut self.admission).poll(cx));
        Poll::Ready(admitted.map(|admitted| RequestTicket {
            _admitted: admitted,
            _budget: std::mem::take(&mut self.budget),
        }))
    }
}

impl ClusterRuntime {
    /// The runtime for a cluster's connection pool, effective budget and
    /// upstream protocol.
    pub(crate) fn new(pool: &ConnectionPool, budget: &RetryBudget, h2: bool) -> Self {
        Self {
            budget: Budget::new(budget),
            limits: Limits::new(pool, h2),
            stats: RetryStats::default(),
        }
    }

    /// Counts a request that arrived at `now` in the budget and admits it
    /// under the limits; the future is ready at once unless the request
    /// waits for a connection.
    #[cfg(test)]
    pub(crate) fn admit(&self, now: Instant) -> TicketAdmission {
        TicketAdmission {
            budget: self.budget.request_at(now),
            admission: self.limits.admit(),
        }
    }

    /// Allows one retry when `maxRetries` and the budget both have room;
    /// counts it when allowed.
    pub(crate) fn try_retry(&self) -> Result<RetryTicket, RetryRefused> {
        let permit = self.limits.admit_retry().map_err(RetryRefused::Overflow)?;
        let budget = self.budget.try_retry().ok_or(RetryRefused::Budget)?;
        self.stats.retries.fetch_add(1, Relaxed);
        Ok(RetryTicket {
            _permit: permit,
            _budget: budget,
        })
    }
}

impl fmt::Debug for ClusterRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRuntime")
            .field("budget", &self.budget)
            .field("limits", &self.limits)
            .field("stats", &self.stats)
            .finish()
    }
}

/// What a cluster's runtime was built from; an equal key keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    pool: ConnectionPool,
    budget: RetryBudget,
    h2: bool,
}

impl Key {
    fn of(cluster: &Cluster, default_budget: &RetryBudget) -> Self {
        let policy = &cluster.policy;
        let given = &policy.connection_pool;
        // Only the limits: timeouts and keep-alive belong to the pool.
        let mut pool = ConnectionPool {
            max_connections: given.max_connections,
            http1_max_pending_requests: given.http1_max_pending_requests,
            http2_max_requests: given.http2_max_requests,
            max_retries: given.max_retries,
            ..ConnectionPool::default()
        };
        if let Some(RetryBudget::Concurrent { .. }) = policy.retry_budget {
            pool.max_retries = None;
        }
        Self {
            pool,
            budget: policy
                .retry_budget
                .clone()
                .unwrap_or_else(|| default_budget.clone()),
            h2: cluster.port.protocol.is_h2(),
        }
    }
}

/// The runtimes of every cluster of the current table, by cluster name.
///
/// Not on the request path: call [`update`](Self::update) once per table.
#[derive(Debug, Default)]
pub(crate) struct ClusterRuntimes {
    by_name: HashMap<String, (Key, Arc<ClusterRuntime>)>,
}

impl ClusterRuntimes {
    /// No clusters yet.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The runtimes for a new table, `runtimes[i]` for `table.clusters[i]`:
    /// kept by name when what they are built from is unchanged, rebuilt
    /// otherwise; those of clusters no longer in the table are dropped.
    pub(crate) fn update(
        &mut self,
        table: &RouteTable,
        default_budget: &RetryBudget,
    ) -> Vec<Arc<ClusterRuntime>> {
        let mut previous = std::mem::take(&mut self.by_name);
        let mut kept = 0usize;
        let runtimes = table
            .clusters
            .iter()
            .map(|cluster| {
                if let Some((_, runtime)) = self.by_name.get(&cluster.name) {
                    // The same name twice in one table: one runtime.
                    return Arc::clone(runtime);
                }
                let key = Key::of(cluster, default_budget);
                let runtime = match previous.remove(&cluster.name) {
                    Some((old, runtime)) if old == key => {
                        kept += 1;
                        runtime
                    }
                    _ => Arc::new(ClusterRuntime::new(&key.pool, &key.budget, key.h2)),
                };
                self.by_name
                    .insert(cluster.name.clone(), (key, Arc::clone(&runtime)));
                runtime
            })
            .collect();
        tracing::debug!(
            version = table.version,
            clusters = self.by_name.len(),
            kept,
            dropped = previous.len(),
            "cluster runtimes updated"
        );
        runtimes
    }
}
