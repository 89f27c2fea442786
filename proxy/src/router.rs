//! The route table in force, swapped atomically.
//!
//! [`Router::install`] pairs a freshly compiled [`RouteTable`] with the
//! balancers of its clusters (state carried over from the previous table) and
//! publishes both at once. A request calls [`Router::current`] once and keeps
//! that [`Routing`] to its end, so a swap never changes a request midway.

use std::sync::Arc;

use anymesh_core::model::Locality;
use anymesh_core::routes::{Cluster, RetryBudget, RouteTable};
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::balance::{Balancers, ClusterLb};
use crate::resilience::runtime::{ClusterRuntime, ClusterRuntimes};

/// A route table plus the balancer of each of its clusters (`lbs[i]` for
/// `table.clusters[i]`) and its resilience state (retry budget,
/// connection-pool limits).
pub struct Routing {
    pub table: Arc<RouteTable>,
    pub lbs: Vec<Arc<ClusterLb>>,
    /// Compiled after every registry delivered a first view. Before that an
    /// unknown host gets 503 "not ready" rather than 404.
    pub synced: bool,
    runtimes: Vec<Arc<ClusterRuntime>>,
}

impl Routing {
    /// The balancer for a cluster of this table.
    pub fn lb(&self, cluster: &Cluster) -> Option<&Arc<ClusterLb>> {
        self.lbs.get(cluster.index)
    }

    /// The retry budget and limits of a cluster of this table.
    pub(crate) fn runtime(&self, cluster: &Cluster) -> Option<&Arc<ClusterRuntime>> {
        self.runtimes.get(cluster.index)
    }
}

/// The default retry budget of every cluster whose DestinationRule sets
/// none: Linkerd's (retries at most 20 % of requests over 10 s, plus 10
/// per second).
pub fn default_retry_budget() -> RetryBudget {
    RetryBudget::Rate {
        ratio: 0.2,
        window: std::time::Duration::from_secs(10),
        min_per_second: 10,
    }
}

pub struct Router {
    current: ArcSwap<Routing>,
    // Only touched when installing a table, never per request.
    balancers: Mutex<Balancers>,
    runtimes: Mutex<Runtimes>,
}

/// What installing a table needs to carry clusters' resilience state over.
struct Runtimes {
    clusters: ClusterRuntimes,
    default_budget: RetryBudget,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// Starts with an empty table (every request gets 404 until the first install).
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Routing {
                table: Arc::new(RouteTable::default()),
                lbs: Vec::new(),
                synced: false,
                runtimes: Vec::new(),
            }),
            balancers: Mutex::new(Balancers::new()),
            runtimes: Mutex::new(Runtimes {
                clusters: ClusterRuntimes::default(),
                default_budget: default_retry_budget(),
            }),
        }
    }

    /// Sets the retry budget of clusters whose DestinationRule sets none
    /// (anymesh.yaml `retry_budget`); applies from the next table installed.
    pub fn set_default_retry_budget(&self, budget: RetryBudget) {
        self.runtimes.lock().default_budget = budget;
    }

    /// The retry budget of clusters whose DestinationRule sets none (for
    /// `explain`).
    pub fn default_retry_budget_in_force(&self) -> RetryBudget {
        self.runtimes.lock().default_budget.clone()
    }

    /// Sets the proxy's own locality, for locality-aware balancing; applies
    /// from the next table installed.
    pub fn set_locality(&self, locality: Locality) {
        self.balancers.lock().set_local_locality(locality);
    }

    /// Installs a new table; requests already running keep the one they loaded.
    /// `synced`: every registry has delivered a first view.
    pub fn install(&self, table: Arc<RouteTable>, synced: bool) {
        let mut balancers = self.balancers.lock();
        let lbs = balancers.update(&table);
        let runtimes = {
            let mut r = self.runtimes.lock();
            let Runtimes {
                clusters,
                default_budget,
            } = &mut *r;
            clusters.update(&table, default_budget)
        };
        self.current.store(Arc::new(Routing {
            table,
            lbs,
            synced,
            runtimes,
        }));
    }

    /// The routing in force. Hold the `Arc` for the life of the request.
    pub fn current(&self) -> Arc<Routing> {
        self.current.load_full()
    }
}
