//! Locality priority tiers of a cluster's endpoints, computed once per
//! route table from the proxy's own locality and the cluster's
//! `localityLbSetting` (Istio's rules for the priorities it gives Envoy).
//!
//! - Plain tiers: same region, zone and subzone = 0; same region and zone
//!   = 1; same region = 2; the rest = 3.
//! - `failover`: as plain, but another region is 3 only when it is the
//!   failover target of the proxy's region, and the rest 4.
//! - `failoverPriority` (ordered labels): endpoints matching all N labels
//!   with the proxy = 0, the first N−1 = 1, ..., none = N. A `key=value`
//!   entry compares the endpoint to `value`; the topology labels of region,
//!   zone and subzone read the localities.
//!
//! Tiers apply only with `enabled` locality balancing and outlier detection
//! configured (Istio: failover needs outlier detection to notice failures),
//! and only when the proxy knows its locality. Empty tiers are dropped (they
//! would take no load in Envoy either).

use anymesh_core::routes::{Cluster, LocalityMode};
use anymesh_core::{Labels, Locality};

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
const SUBZONE: &str = "topology.istio.io/subzone";

/// Where the proxy runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Local {
    pub(super) locality: Locality,
    pub(super) labels: Labels,
}

/// The cluster's endpoint indices per tier, best tier first; one tier with
/// every endpoint when locality does not apply.
pub(super) fn tiers(cluster: &Cluster, local: &Local) -> Vec<Vec<u32>> {
    let n = cluster.endpoints.len() as u32;
    let policy = &cluster.policy;
    let known = local.locality.region.is_some()
        || matches!(policy.locality.mode, LocalityMode::FailoverPriority(_));
    let applies = policy.locality.enabled && policy.outlier.is_some() && known;
    /// How an endpoint's priority is found.
    enum Rule<'a> {
        Tiers,
        Failover(Option<&'a str>),
        Labels(&'a [String]),
    }
    let rule = match &policy.locality.mode {
        _ if !applies || n == 0 => return vec![(0..n).collect()],
        // Weights per locality, not tiers (not applied yet: one tier).
        LocalityMode::Distribute(_) => return vec![(0..n).collect()],
        LocalityMode::Tiers => Rule::Tiers,
        LocalityMode::Failover(pairs) => Rule::Failover(
            pairs
                .iter()
                .find(|(from, _)| Some(from) == local.locality.region.as_ref())
                .map(|(_, to)| to.as_str()),
        ),
        LocalityMode::FailoverPriority(labels) => Rule::Labels(labels),
    };
    let mut keyed: Vec<(u32, u32)> = cluster
        .endpoints
        .iter()
        .zip(0..n)
        .map(|(e, i)| {
            let (l, labels) = (&e.endpoint.locality, &e.endpoint.labels);
            let p = match rule {
                Rule::Tiers => tier(&local.locality, l, None),
                Rule::Failover(target) => tier(&local.locality, l, Some(target)),
                Rule::Labels(keys) => by_labels(keys, local, l, labels),
            };
            (p, i)
        })
        .collect();
    keyed.sort_unstable();
    let mut tiers: Vec<Vec<u32>> = Vec::new();
    let mut last = None;
    for (p, i) in keyed {
        match tiers.last_mut() {
            Some(t) if last == Some(p) => t.push(i),
            _ => tiers.push(vec![i]),
        }
        last = Some(p);
    }
    tiers
}

/// The plain tier of an endpoint at `l` for a proxy at `me`; `failover`:
/// `Some(target region)` when failover pairs are set.
fn tier(me: &Locality, l: &Locality, failover: Option<Option<&str>>) -> u32 {
    if l.region != me.region {
        return match failover {
            Some(target) if target.is_some() && l.region.as_deref() == target => 3,
            Some(_) => 4,
            None => 3,
        };
    }
    if l.zone != me.zone {
        return 2;
    }
    if l.subzone != me.subzone {
        return 1;
    }
    0
}

/// `failoverPriority`: the number of labels, from the first, the endpoint
/// shares with the proxy, counted down from the number of labels.
fn by_labels(labels: &[String], local: &Local, l: &Locality, e: &Labels) -> u32 {
    let matched = labels
        .iter()
        .take_while(|entry| {
            let (key, fixed) = match entry.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (entry.as_str(), None),
            };
            let mine = fixed.or_else(|| value(key, &local.locality, &local.labels));
            let theirs = value(key, l, e);
            mine.is_some() && mine == theirs
        })
        .count();
    (labels.len() - matched) as u32
}

/// A label's value, the topology labels from the locality.
fn value<'a>(key: &str, l: &'a Locality, labels: &'a Labels) -> Option<&'a str> {
    let from_locality = match key {
        REGION => l.region.as_deref(),
        ZONE => l.zone.as_deref(),
        SUBZONE => l.subzone.as_deref(),
        _ => None,
    };
    from_locality.or_else(|| labels.get(key).map(String::as_str))
}
