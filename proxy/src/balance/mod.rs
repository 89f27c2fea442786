//! Load balancers: pick an endpoint of a [`Cluster`] for a request.
//!
//! [`Balancers`] lives as long as the process and is owned by whatever swaps
//! route tables. For every new [`RouteTable`] it builds one [`ClusterLb`] per
//! cluster; all the expensive work (round-robin schedules, Maglev tables) is done
//! there, so [`ClusterLb::pick`] on the request path only reads precomputed
//! tables, touches atomics and a thread-local RNG, and does not allocate (except
//! the `Set-Cookie` value when a hash cookie is issued).
//!
//! State that must survive table swaps is shared through `Arc`s:
//! ```text
//! Balancers ─┬─ endpoints: (EndpointKey, authority) ──► Arc<EndpointState>  (in-flight count)
//!            └─ clusters:  cluster name ──► round-robin cursor, last Maglev table
//! ```
//! An endpoint that appears in several clusters (two subsets of one service)
//! shares one in-flight counter. State of clusters and endpoints that are no
//! longer in the table is forgotten at the next [`Balancers::update`].
//!
//! Policies ([`LbPolicy`]):
//! - `RoundRobin`: smooth weighted round robin over a precomputed schedule.
//! - `Random`: weighted random.
//! - `LeastRequest`: power of two choices on in-flight count / weight.
//! - `ConsistentHash`: Maglev over stable endpoint identities; when the request
//!   has no key, a weighted random pick.

mod hash_key;
mod maglev;
mod schedule;
mod weights;

/// A uniform draw in `0..n` (`n > 0`) from the thread's fast RNG.
pub(crate) use weights::below as random_below;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use anymesh_core::routes::{Cluster, ClusterEndpoint, HashKey, LbPolicy, RouteTable};
use anymesh_core::EndpointKey;
use http::{HeaderMap, HeaderValue};

use maglev::{Maglev, MaglevCache};
use schedule::Schedule;
use weights::Weights;

/// Balancer state for every cluster of the current route table.
///
/// Not on the request path: call [`update`](Self::update) once per new table.
#[derive(Default)]
pub struct Balancers {
    /// Every endpoint of the current table, with the number of its clusters.
    endpoints: HashMap<(EndpointKey, String), SharedEndpoint>,
    clusters: HashMap<String, ClusterState>,
    /// The balancers of the current table, `current[i]` for `clusters[i]`.
    current: Vec<Arc<ClusterLb>>,
}

/// An endpoint's state and how many clusters of the current table hold it.
struct SharedEndpoint {
    state: Arc<EndpointState>,
    clusters: usize,
}

/// What a cluster keeps across table swaps.
struct ClusterState {
    cursor: Arc<Cursor>,
    maglev: Option<MaglevCache>,
}

impl Balancers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the balancers for a new table: one [`ClusterLb`] per
    /// `table.clusters[i]`, in the same order.
    ///
    /// A cluster that is the very same `Arc` as in the same slot of the
    /// previous table (the incremental compiler keeps unchanged clusters so)
    /// keeps its balancer as it is, so the work is proportional to what
    /// changed. For the others, round-robin positions, in-flight counters and
    /// Maglev tables (when the cluster's endpoints and weights are unchanged)
    /// carry over by cluster name and endpoint identity; state of clusters and
    /// endpoints that are gone is dropped.
    pub fn update(&mut self, table: &RouteTable) -> Vec<Arc<ClusterLb>> {
        let mut lbs = Vec::with_capacity(table.clusters.len());
        let mut kept = vec![false; self.current.len()];
        let mut rebuilt: HashSet<&str> = HashSet::new();
        for (i, cluster) in table.clusters.iter().enumerate() {
            if let Some(prev) = self.current.get(i) {
                if Arc::ptr_eq(&prev.cluster, cluster) {
                    kept[i] = true;
                    lbs.push(Arc::clone(prev));
                    continue;
                }
            }
            let states = cluster
                .endpoints
                .iter()
                .map(|e| {
                    let shared = self
                        .endpoints
                        .entry((e.key.clone(), e.authority.clone()))
                        .or_insert_with(|| SharedEndpoint {
                            state: Arc::default(),
                            clusters: 0,
                        });
                    shared.clusters += 1;
                    Arc::clone(&shared.state)
                })
                .collect();
            let previous = self.clusters.remove(&cluster.name);
            let (lb, state) = ClusterLb::build(cluster.clone(), states, previous);
            self.clusters.insert(cluster.name.clone(), state);
            rebuilt.insert(&cluster.name);
            lbs.push(Arc::new(lb));
        }
        // Retire the previous balancers that were not kept: their endpoints'
        // counts drop (state goes with the last cluster), and the state of a
        // cluster whose name is not in the new table goes.
        let previous = std::mem::replace(&mut self.current, lbs.clone());
        for (prev, _) in previous.iter().zip(&kept).filter(|(_, kept)| !**kept) {
            for e in &prev.cluster.endpoints {
                let id = (e.key.clone(), e.authority.clone());
                if let std::collections::hash_map::Entry::Occupied(mut o) = self.endpoints.entry(id)
                {
                    o.get_mut().clusters -= 1;
                    if o.get().clusters == 0 {
                        o.remove();
                    }
                }
            }
            if !rebuilt.contains(prev.cluster.name.as_str()) {
                self.clusters.remove(&prev.cluster.name);
            }
        }
        tracing::debug!(
            version = table.version,
            clusters = self.clusters.len(),
            rebuilt = rebuilt.len(),
            endpoints = self.endpoints.len(),
            "balancers updated"
        );
        lbs
    }
}

impl fmt::Debug for Balancers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancers")
            .field("clusters", &self.clusters.len())
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

/// Per-endpoint state shared by every cluster holding the endpoint.
///
/// A pick touches both the `Arc` counts and `in_flight`; the padding (rather
/// than an alignment, which would push `in_flight` onto the line after the
/// counts) makes the `Arc` allocation 128 bytes, so both sit on one cache line
/// and no two endpoints share one.
#[allow(dead_code)] // read by the health checker and outlier detection (being written)
pub(crate) struct EndpointState {
    in_flight: AtomicUsize,
    /// The active health check's verdict ([`ActiveHealth`] as a `u8`).
    active: AtomicU8,
    _pad: [u8; 103],
}

/// What the active health checker last concluded about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[allow(dead_code)] // read by the health checker (being written)
pub(crate) enum ActiveHealth {
    /// Not checked (no check configured, or no verdict yet).
    Unchecked = 0,
    Passing = 1,
    Failing = 2,
}

#[allow(dead_code)] // used by the health checker (being written)
impl EndpointState {
    /// The active health check's verdict.
    pub(crate) fn active_health(&self) -> ActiveHealth {
        match self.active.load(Ordering::Relaxed) {
            1 => ActiveHealth::Passing,
            2 => ActiveHealth::Failing,
            _ => ActiveHealth::Unchecked,
        }
    }

    /// Records the active health check's verdict.
    pub(crate) fn set_active_health(&self, verdict: ActiveHealth) {
        self.active.store(verdict as u8, Ordering::Relaxed);
    }
}

impl fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointState")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            active: AtomicU8::new(0),
            _pad: [0; 103],
        }
    }
}

/// A round-robin position, padded like [`EndpointState`].
#[derive(Debug, Default)]
#[repr(align(128))]
struct Cursor(AtomicUsize);

/// The balancer of one cluster in one route table.
pub struct ClusterLb {
    cluster: Arc<Cluster>,
    /// Parallel to `cluster.endpoints`.
    states: Box<[Arc<EndpointState>]>,
    weights: Weights,
    kind: Kind,
}

enum Kind {
    RoundRobin {
        cursor: Arc<Cursor>,
        schedule: Schedule,
    },
    Random,
    LeastRequest,
    ConsistentHash {
        key: HashKey,
        maglev: Maglev,
    },
}

impl ClusterLb {
    fn build(
        cluster: Arc<Cluster>,
        states: Box<[Arc<EndpointState>]>,
        previous: Option<ClusterState>,
    ) -> (Self, ClusterState) {
        let (cursor, cache) = match previous {
            Some(p) => (p.cursor, p.maglev),
            None => (Arc::default(), None),
        };
        let endpoints = &cluster.endpoints;
        let weights = Weights::new(endpoints);
        let (kind, cache) = match &cluster.lb {
            LbPolicy::RoundRobin => (
                Kind::RoundRobin {
                    cursor: cursor.clone(),
                    schedule: Schedule::new(endpoints),
                },
                None,
            ),
            LbPolicy::Random => (Kind::Random, None),
            LbPolicy::LeastRequest | LbPolicy::PeakEwma => (Kind::LeastRequest, None),
            LbPolicy::ConsistentHash(policy) => {
                let cache = MaglevCache::build(endpoints, policy.table_size, cache);
                let kind = Kind::ConsistentHash {
                    key: policy.key.clone(),
                    maglev: cache.maglev.clone(),
                };
                (kind, Some(cache))
            }
        };
        let lb = Self {
            cluster,
            states,
            weights,
            kind,
        };
        let state = ClusterState {
            cursor,
            maglev: cache,
        };
        (lb, state)
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    #[allow(dead_code)] // used by the health checker (being written)
    /// The state of `cluster().endpoints[index]`, shared by every cluster
    /// holding that endpoint and kept across table swaps.
    pub(crate) fn endpoint_state(&self, index: usize) -> Option<&Arc<EndpointState>> {
        self.states.get(index)
    }

    /// Requests in flight to `cluster().endpoints[index]`, counted over every
    /// cluster holding that endpoint.
    pub fn in_flight(&self, index: usize) -> Option<usize> {
        self.states
            .get(index)
            .map(|s| s.in_flight.load(Ordering::Relaxed))
    }

    /// Picks an endpoint for a request; `None` when the cluster has no endpoints.
    ///
    /// Hot path: lock-free, no allocation (but for an issued hash cookie).
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Picked<'_>> {
        let n = self.states.len();
        let (index, set_cookie) = match &self.kind {
            _ if n == 0 => return None,
            Kind::ConsistentHash { key, maglev } => {
                let (hash, set_cookie) = hash_key::hash(key, ctx);
                let index = match hash {
                    _ if n == 1 => 0,
                    Some(h) => maglev.lookup(h),
                    None => self.weights.sample(),
                };
                (index, set_cookie)
            }
            _ if n == 1 => (0, None),
            Kind::RoundRobin { cursor, schedule } => {
                (schedule.at(cursor.0.fetch_add(1, Ordering::Relaxed)), None)
            }
            Kind::Random => (self.weights.sample(), None),
            Kind::LeastRequest => (self.least_request(), None),
        };
        let endpoint = self.cluster.endpoints.get(index)?;
        let state = self.states.get(index)?;
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            endpoint,
            guard: InFlight(state.clone()),
            set_cookie,
        })
    }

    /// Power of two choices: two distinct endpoints drawn by weight; the one
    /// with fewer in-flight requests per unit of weight wins, the first on a tie
    /// (so an idle cluster is balanced exactly by weight).
    fn least_request(&self) -> usize {
        let (a, b) = self.weights.sample_two();
        let load = |i: usize| {
            let in_flight = self
                .states
                .get(i)
                .map_or(0, |s| s.in_flight.load(Ordering::Relaxed));
            (in_flight as u128, u128::from(self.weights.weight(i)))
        };
        let ((ia, wa), (ib, wb)) = (load(a), load(b));
        if ia * wb <= ib * wa {
            a
        } else {
            b
        }
    }
}

impl fmt::Debug for ClusterLb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = match &self.kind {
            Kind::RoundRobin { .. } => "round_robin",
            Kind::Random => "random",
            Kind::LeastRequest => "least_request",
            Kind::ConsistentHash { .. } => "consistent_hash",
        };
        f.debug_struct("ClusterLb")
            .field("cluster", &self.cluster.name)
            .field("policy", &policy)
            .field("endpoints", &self.states.len())
            .finish()
    }
}

/// What a pick may look at in the request.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    pub headers: &'a HeaderMap,
    /// The query string without `?`.
    pub query: Option<&'a str>,
    /// The downstream peer address.
    pub source_ip: Option<IpAddr>,
}

impl<'a> PickContext<'a> {
    /// A context with only headers (no query, no source address).
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            query: None,
            source_ip: None,
        }
    }
}

/// The chosen endpoint.
#[derive(Debug)]
pub struct Picked<'a> {
    pub endpoint: &'a ClusterEndpoint,
    /// Decrements the endpoint's in-flight count when dropped (hold it until
    /// the response body ends).
    pub guard: InFlight,
    /// For cookie hashing with a ttl when the request had no cookie: a
    /// `Set-Cookie` value to add to the response.
    pub set_cookie: Option<HeaderValue>,
}

/// One request in flight to an endpoint; decrements the count on drop.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
