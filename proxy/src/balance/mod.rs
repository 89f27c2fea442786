//! Load balancers: pick an endpoint of a [`Cluster`] for a request.
//!
//! [`Balancers`] lives as long as the process and is owned by whatever swaps
//! route tables. For every new [`RouteTable`] it builds one [`ClusterLb`] per
//! cluster; all the expensive work (round-robin schedules, Maglev tables,
//! locality tiers) is done there, so [`ClusterLb::pick`] on the request path
//! only reads precomputed tables, touches atomics and a thread-local RNG, and
//! does not allocate (except the `Set-Cookie` value when a hash cookie is
//! issued, and a cluster's health view once per health change).
//!
//! State that must survive table swaps is shared through `Arc`s:
//! ```text
//! Balancers ─┬─ endpoints: (EndpointKey, authority) ──► Arc<EndpointState>
//!            │     (in-flight count, active health, outlier state, latency EWMA)
//!            └─ clusters:  cluster name ──► round-robin cursor, last Maglev tables
//! ```
//! An endpoint that appears in several clusters (two subsets of one service)
//! shares one state. State of clusters and endpoints that are no longer in
//! the table is forgotten at the next [`Balancers::update`].
//!
//! Policies ([`LbPolicy`]):
//! - `RoundRobin`: smooth weighted round robin over a precomputed schedule.
//! - `Random`: weighted random.
//! - `LeastRequest`: power of two choices on in-flight count / weight.
//! - `PeakEwma`: power of two choices on latency EWMA × (in flight + 1) / weight.
//! - `ConsistentHash`: Maglev over stable endpoint identities; when the request
//!   has no key, a weighted random pick. A key whose endpoint is unavailable
//!   goes to the endpoint of the next slot that is available.
//!
//! Health (`health`): endpoints ejected by outlier detection or failing
//! their active check are skipped, within Envoy's priority tiers (locality)
//! and panic threshold. A retry can ask for an endpoint not tried yet
//! ([`ClusterLb::pick_excluding`]).

mod choose;
mod endpoint;
mod epoch;
mod ewma;
mod hash_key;
mod health;
mod locality;
mod maglev;
mod report;
mod schedule;
mod weights;

/// A uniform draw in `0..n` (`n > 0`) from the thread's fast RNG.
pub(crate) use weights::below as random_below;

pub use endpoint::InFlight;
pub(crate) use endpoint::{ActiveHealth, EndpointState};

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anymesh_core::routes::{Cluster, ClusterEndpoint, HashKey, LbPolicy, RouteTable};
use anymesh_core::{EndpointKey, Labels, Locality};
use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use tokio::time::Instant;

use health::View;
use locality::Local;
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
    /// Where this proxy runs, for locality tiers.
    local: Local,
    /// The next update rebuilds every balancer (the locality changed).
    rebuild_all: bool,
}

/// An endpoint's state and how many clusters of the current table hold it.
struct SharedEndpoint {
    state: Arc<EndpointState>,
    clusters: usize,
}

/// What a cluster keeps across table swaps.
struct ClusterState {
    cursor: Arc<Cursor>,
    /// One per tier.
    maglev: Vec<MaglevCache>,
}

impl Balancers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the proxy's own locality (locality tiers are computed from it).
    /// Takes effect for every cluster at the next [`update`](Self::update).
    pub fn set_local_locality(&mut self, locality: Locality) {
        if self.local.locality != locality {
            self.local.locality = locality;
            self.rebuild_all = true;
        }
    }

    /// Sets the proxy's own labels (for `failoverPriority` labels other
    /// than the topology ones). Takes effect at the next update.
    pub fn set_local_labels(&mut self, labels: Labels) {
        if self.local.labels != labels {
            self.local.labels = labels;
            self.rebuild_all = true;
        }
    }

    /// Builds the balancers for a new table: one [`ClusterLb`] per
    /// `table.clusters[i]`, in the same order.
    ///
    /// A cluster that is the very same `Arc` as in the same slot of the
    /// previous table (the incremental compiler keeps unchanged clusters so)
    /// keeps its balancer as it is, so the work is proportional to what
    /// changed. For the others, round-robin positions, endpoint state
    /// (in-flight counters, health, latency) and Maglev tables (when the
    /// cluster's endpoints and weights are unchanged) carry over by cluster
    /// name and endpoint identity; state of clusters and endpoints that are
    /// gone is dropped.
    pub fn update(&mut self, table: &RouteTable) -> Vec<Arc<ClusterLb>> {
        let mut lbs = Vec::with_capacity(table.clusters.len());
        let mut kept = vec![false; self.current.len()];
        let mut rebuilt: HashSet<&str> = HashSet::new();
        for (i, cluster) in table.clusters.iter().enumerate() {
            if let Some(prev) = self.current.get(i).filter(|_| !self.rebuild_all) {
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
            let (lb, state) = ClusterLb::build(cluster.clone(), states, previous, &self.local);
            self.clusters.insert(cluster.name.clone(), state);
            rebuilt.insert(&cluster.name);
            lbs.push(Arc::new(lb));
        }
        // Retire the previous balancers that were not kept: their endpoints'
        // counts drop (state goes with the last cluster), and the state of a
        // cluster whose name is not in the new table goes.
        self.rebuild_all = false;
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
            .field("locality", &self.local.locality)
            .finish()
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
    /// Locality priority tiers, best first; one when locality does not
    /// apply. Never empty.
    tiers: Box<[Tier]>,
    /// The tier of each endpoint ([`NO_TIER`]: it takes no traffic).
    tier_of: Box<[u8]>,
    /// Locality weights per tier (`distribute`); `None`: priority tiers.
    tier_weights: Option<Box<[u32]>>,
    /// Tier loads when every endpoint is available.
    clean_view: View,
    /// Consistent hashing: the request's key.
    hash: Option<HashKey>,
    /// The health epoch at which every endpoint was seen available (then
    /// the first tier takes every request and nothing needs checking).
    clean: AtomicU64,
    view: ArcSwap<View>,
    panic_threshold: u32,
    /// Serializes ejection decisions (the max-ejection-percent count).
    eject: Mutex<()>,
}

/// The endpoints of one tier with the policy's tables over them.
struct Tier {
    /// Cluster indices of the tier's endpoints; `None`: all, in order.
    members: Option<Box<[u32]>>,
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
    PeakEwma,
    ConsistentHash {
        maglev: Maglev,
    },
}

/// The tier of an endpoint in no tier.
const NO_TIER: u8 = u8::MAX;

impl Tier {
    fn len(&self) -> usize {
        match &self.members {
            Some(m) => m.len(),
            None => self.weights.len(),
        }
    }

    /// The cluster index of the tier's `i`-th endpoint.
    fn index(&self, i: usize) -> usize {
        match &self.members {
            Some(m) => m.get(i).map_or(0, |&c| c as usize),
            None => i,
        }
    }
}

impl ClusterLb {
    fn build(
        cluster: Arc<Cluster>,
        states: Box<[Arc<EndpointState>]>,
        previous: Option<ClusterState>,
        local: &Local,
    ) -> (Self, ClusterState) {
        let (cursor, caches) = match previous {
            Some(p) => (p.cursor, p.maglev),
            None => (Arc::default(), Vec::new()),
        };
        let mut caches = caches.into_iter();
        let grouping = locality::group(&cluster, local);
        let groups = grouping.groups;
        let single = groups.len() == 1 && groups[0].len() == cluster.endpoints.len();
        let mut tier_of = vec![NO_TIER; cluster.endpoints.len()];
        let mut new_caches = Vec::new();
        let mut tiers = Vec::with_capacity(groups.len());
        for (t, members) in groups.into_iter().enumerate() {
            let endpoints: Cow<'_, [ClusterEndpoint]> = if single {
                Cow::Borrowed(&cluster.endpoints)
            } else {
                Cow::Owned(
                    members
                        .iter()
                        .filter_map(|&i| cluster.endpoints.get(i as usize).cloned())
                        .collect(),
                )
            };
            for &i in &members {
                if let Some(slot) = tier_of.get_mut(i as usize) {
                    *slot = u8::try_from(t).unwrap_or(u8::MAX);
                }
            }
            let kind = match &cluster.lb {
                LbPolicy::RoundRobin => Kind::RoundRobin {
                    cursor: cursor.clone(),
                    schedule: Schedule::new(&endpoints),
                },
                LbPolicy::Random => Kind::Random,
                LbPolicy::LeastRequest => Kind::LeastRequest,
                LbPolicy::PeakEwma => Kind::PeakEwma,
                LbPolicy::ConsistentHash(policy) => {
                    let cache = MaglevCache::build(&endpoints, policy.table_size, caches.next());
                    let maglev = cache.maglev.clone();
                    new_caches.push(cache);
                    Kind::ConsistentHash { maglev }
                }
            };
            tiers.push(Tier {
                members: (!single).then(|| members.into_boxed_slice()),
                weights: Weights::new(&endpoints),
                kind,
            });
        }
        let hash = match &cluster.lb {
            LbPolicy::ConsistentHash(policy) => Some(policy.key.clone()),
            _ => None,
        };
        let panic_threshold = cluster
            .policy
            .outlier
            .as_ref()
            .map_or(health::DEFAULT_PANIC_THRESHOLD, |o| o.min_health_percent);
        let n_tiers = tiers.len();
        let sizes: Vec<usize> = tiers.iter().map(Tier::len).collect();
        let weights = grouping.weights.map(Vec::into_boxed_slice);
        let clean_view = View::new(0, None, &sizes, &sizes, panic_threshold, weights.as_deref());
        let lb = Self {
            cluster,
            states,
            tiers: tiers.into_boxed_slice(),
            tier_of: tier_of.into_boxed_slice(),
            tier_weights: weights,
            clean_view,
            hash,
            clean: AtomicU64::new(0),
            view: ArcSwap::from_pointee(View::stale(n_tiers)),
            panic_threshold,
            eject: Mutex::new(()),
        };
        lb.refresh(Instant::now());
        let state = ClusterState {
            cursor,
            maglev: new_caches,
        };
        (lb, state)
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

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

    /// Picks an endpoint for a request; `None` when the cluster has no
    /// endpoints, or none is available and the panic threshold is 0.
    ///
    /// Hot path: lock-free, no allocation (but for an issued hash cookie).
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Picked<'_>> {
        self.pick_excluding(ctx, &[])
    }

    /// Picks an endpoint for a retry: an available one whose index is not in
    /// `tried` when there is one in the tier drawn, else any available one
    /// (Istio's `retryIgnorePreviousHosts`).
    pub fn pick_excluding(&self, ctx: &PickContext<'_>, tried: &[usize]) -> Option<Picked<'_>> {
        if self.states.is_empty() {
            return None;
        }
        let (hash, set_cookie) = match &self.hash {
            Some(key) => hash_key::hash(key, ctx),
            None => (None, None),
        };
        let index = if self.clean.load(Ordering::Relaxed) == epoch::epoch() {
            let tier = self.tiers.get(self.clean_view.draw_tier())?;
            self.choose_untried(tier, hash, tried, |_| true)?
        } else {
            self.pick_degraded(hash, tried)?
        };
        let endpoint = self.cluster.endpoints.get(index)?;
        let state = self.states.get(index)?;
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            endpoint,
            index,
            guard: InFlight(state.clone()),
            set_cookie,
        })
    }
}

impl ClusterLb {
    /// Picks an endpoint for a retry that may leave the localities tried
    /// (Istio's `retryRemoteLocalities`, Envoy's previous-priorities retry
    /// priority): the best tier none of `tried` is in that has an available
    /// endpoint; else as [`pick_excluding`](Self::pick_excluding).
    pub fn pick_remote(&self, ctx: &PickContext<'_>, tried: &[usize]) -> Option<Picked<'_>> {
        if self.tiers.len() > 1 && !tried.is_empty() {
            let tried_tier = |t: usize| {
                tried
                    .iter()
                    .any(|&i| self.tier_of.get(i).is_some_and(|&x| usize::from(x) == t))
            };
            let now = tokio::time::Instant::now();
            let available = |i: usize| self.available(i, now);
            let (hash, set_cookie) = match &self.hash {
                Some(key) => hash_key::hash(key, ctx),
                None => (None, None),
            };
            let found = self
                .tiers
                .iter()
                .enumerate()
                .filter(|(t, _)| !tried_tier(*t))
                .find_map(|(_, tier)| self.choose(tier, hash, available));
            if let Some(index) = found {
                let endpoint = self.cluster.endpoints.get(index)?;
                let state = self.states.get(index)?;
                state.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(Picked {
                    endpoint,
                    index,
                    guard: InFlight(state.clone()),
                    set_cookie,
                });
            }
        }
        self.pick_excluding(ctx, tried)
    }
}

impl fmt::Debug for ClusterLb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = match self.tiers.first().map(|t| &t.kind) {
            Some(Kind::RoundRobin { .. }) | None => "round_robin",
            Some(Kind::Random) => "random",
            Some(Kind::LeastRequest) => "least_request",
            Some(Kind::PeakEwma) => "peak_ewma",
            Some(Kind::ConsistentHash { .. }) => "consistent_hash",
        };
        f.debug_struct("ClusterLb")
            .field("cluster", &self.cluster.name)
            .field("policy", &policy)
            .field("endpoints", &self.states.len())
            .field("tiers", &self.tiers.len())
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
    /// Its index in the cluster's endpoints (for `ClusterLb::report` and
    /// [`ClusterLb::pick_excluding`]).
    pub index: usize,
    /// Decrements the endpoint's in-flight count when dropped (hold it until
    /// the response body ends).
    pub guard: InFlight,
    /// For cookie hashing with a ttl when the request had no cookie: a
    /// `Set-Cookie` value to add to the response.
    pub set_cookie: Option<HeaderValue>,
}
