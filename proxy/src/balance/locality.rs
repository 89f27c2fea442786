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
//! - `distribute`: not tiers but localities sharing the traffic by weight
//!   (see [`distribute`]), each weight scaled by its locality's health.
//!
//! All of them need `enabled` locality balancing and a proxy that knows its
//! locality; tiers also need outlier detection (Istio: failover needs it to
//! notice failures). Empty tiers are dropped (they would take no load in
//! Envoy either).

use anymesh_core::routes::{Cluster, LocalityDistribute, LocalityMode};
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

/// How a cluster's endpoints are grouped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Grouping {
    /// Endpoint indices per group. Tiers: best first. Endpoints in no group
    /// take no traffic (`distribute` leaves them out).
    pub(super) groups: Vec<Vec<u32>>,
    /// `distribute`: the groups are localities sharing traffic by these
    /// weights (times their health), not tiers.
    pub(super) weights: Option<Vec<u32>>,
}

impl Grouping {
    fn one(n: u32) -> Self {
        Self {
            groups: vec![(0..n).collect()],
            weights: None,
        }
    }
}

/// Groups the cluster's endpoints: one group with every endpoint when
/// locality does not apply.
pub(super) fn group(cluster: &Cluster, local: &Local) -> Grouping {
    let n = cluster.endpoints.len() as u32;
    let policy = &cluster.policy;
    let known = local.locality.region.is_some()
        || matches!(policy.locality.mode, LocalityMode::FailoverPriority(_));
    if !policy.locality.enabled || !known || n == 0 {
        return Grouping::one(n);
    }
    /// How an endpoint's priority is found.
    enum Rule<'a> {
        Tiers,
        Failover(Option<&'a str>),
        Labels(&'a [String]),
    }
    let rule = match &policy.locality.mode {
        LocalityMode::Distribute(rules) => return distribute(cluster, &local.locality, rules),
        // Istio: failover needs outlier detection to ever leave a tier.
        _ if policy.outlier.is_none() => return Grouping::one(n),
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
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut last = None;
    for (p, i) in keyed {
        match groups.last_mut() {
            Some(t) if last == Some(p) => t.push(i),
            _ => groups.push(vec![i]),
        }
        last = Some(p);
    }
    Grouping {
        groups,
        weights: None,
    }
}

/// `distribute` (Istio's locality weights): the first rule whose `from`
/// matches the proxy applies; each `to` pattern's weight is shared by the
/// localities it matches (not matched by an earlier pattern) in proportion
/// to their endpoints' weights, rounded up; localities no pattern matches
/// get no traffic. No rule for the proxy: one group.
fn distribute(cluster: &Cluster, me: &Locality, rules: &[LocalityDistribute]) -> Grouping {
    let n = cluster.endpoints.len() as u32;
    let Some(rule) = rules.iter().find(|r| matches(me, &r.from)) else {
        return Grouping::one(n);
    };
    // Distinct localities in order of first appearance, with their members.
    let mut localities: Vec<(&Locality, Vec<u32>, u64)> = Vec::new();
    for (e, i) in cluster.endpoints.iter().zip(0..n) {
        let l = &e.endpoint.locality;
        let w = u64::from(e.weight.max(1));
        match localities.iter_mut().find(|(k, _, _)| *k == l) {
            Some((_, members, sum)) => {
                members.push(i);
                *sum += w;
            }
            None => localities.push((l, vec![i], w)),
        }
    }
    let mut taken = vec![false; localities.len()];
    let mut grouping = Grouping {
        groups: Vec::new(),
        weights: Some(Vec::new()),
    };
    for (pattern, weight) in &rule.to {
        let hits: Vec<usize> = (0..localities.len())
            .filter(|&k| !taken[k] && matches(localities[k].0, pattern))
            .collect();
        let total: u64 = hits.iter().map(|&k| localities[k].2).sum();
        for k in hits {
            taken[k] = true;
            let share = (u64::from(*weight) * localities[k].2).div_ceil(total.max(1));
            if share == 0 {
                continue;
            }
            grouping.groups.push(std::mem::take(&mut localities[k].1));
            if let Some(w) = grouping.weights.as_mut() {
                w.push(u32::try_from(share).unwrap_or(u32::MAX));
            }
        }
    }
    if grouping.groups.is_empty() {
        return Grouping::one(n);
    }
    grouping
}

/// Whether a locality matches a `region/zone/subzone` pattern: `*` matches
/// any part, and missing trailing parts match anything.
fn matches(l: &Locality, pattern: &str) -> bool {
    let parts = [&l.region, &l.zone, &l.subzone];
    pattern
        .split('/')
        .zip(parts)
        .all(|(p, part)| p == "*" || Some(p) == part.as_deref())
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
