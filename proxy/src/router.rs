//! The route table in force, swapped atomically.
//!
//! [`Router::install`] pairs a freshly compiled [`RouteTable`] with the
//! balancers of its clusters (state carried over from the previous table) and
//! publishes both at once. A request calls [`Router::current`] once and keeps
//! that [`Routing`] to its end, so a swap never changes a request midway.

use std::sync::Arc;

use anymesh_core::routes::{Cluster, RouteTable};
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::balance::{Balancers, ClusterLb};

/// A route table plus the balancer of each of its clusters (`lbs[i]` for `table.clusters[i]`).
pub struct Routing {
    pub table: Arc<RouteTable>,
    pub lbs: Vec<Arc<ClusterLb>>,
    /// Compiled after every registry delivered a first view. Before that an
    /// unknown host gets 503 "not ready" rather than 404.
    pub synced: bool,
}

impl Routing {
    /// The balancer for a cluster of this table.
    pub fn lb(&self, cluster: &Cluster) -> Option<&Arc<ClusterLb>> {
        self.lbs.get(cluster.index)
    }
}

pub struct Router {
    current: ArcSwap<Routing>,
    // Only touched when installing a table, never per request.
    balancers: Mutex<Balancers>,
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
            }),
            balancers: Mutex::new(Balancers::new()),
        }
    }

    /// Installs a new table; requests already running keep the one they loaded.
    /// `synced`: every registry has delivered a first view.
    pub fn install(&self, table: Arc<RouteTable>, synced: bool) {
        let mut balancers = self.balancers.lock();
        let lbs = balancers.update(&table);
        self.current.store(Arc::new(Routing { table, lbs, synced }));
    }

    /// The routing in force. Hold the `Arc` for the life of the request.
    pub fn current(&self) -> Arc<Routing> {
        self.current.load_full()
    }
}
