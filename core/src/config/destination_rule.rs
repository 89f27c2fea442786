//! The subset of Istio's `DestinationRule` that anymesh reads: subsets and
//! load-balancer policy.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::GoDuration;

/// `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {
    /// The service this rule applies to: exact name, short name or `*.suffix`.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

impl DestinationRule {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// The load balancer for `subset` (or the whole host): the subset's own
    /// policy overrides the rule's top-level one.
    pub fn load_balancer(&self, subset: Option<&str>) -> Option<&LoadBalancerSettings> {
        subset
            .and_then(|s| self.subset(s))
            .and_then(|s| s.traffic_policy.as_ref())
            .and_then(|p| p.load_balancer.as_ref())
            .or_else(|| {
                self.traffic_policy
                    .as_ref()
                    .and_then(|p| p.load_balancer.as_ref())
            })
    }
}

/// A named group of endpoints selected by labels.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    /// Every label must match; empty selects all endpoints of the host.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Only `loadBalancer` is implemented; other policies are reported.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
}

/// Exactly one of `simple` or `consistentHash`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHashLb>,
}

/// Istio's simple load-balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// "Choose for me": anymesh uses round robin.
    Unspecified,
    RoundRobin,
    LeastRequest,
    /// Deprecated alias of `LEAST_REQUEST`.
    LeastConn,
    Random,
    /// Not supported: reported, and round robin is used.
    Passthrough,
}

/// Session affinity by hashing one request property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHashLb {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    #[serde(default)]
    pub ring_hash: Option<RingHash>,
    #[serde(default)]
    pub maglev: Option<Maglev>,
    /// Deprecated top-level form of `ringHash.minimumRingSize`.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey<'a> {
    Header(&'a str),
    Cookie(&'a HttpCookie),
    SourceIp,
    QueryParameter(&'a str),
}

impl ConsistentHashLb {
    /// The hash keys that are set (validation requires exactly one).
    pub fn keys(&self) -> Vec<HashKey<'_>> {
        let mut keys = Vec::new();
        if let Some(h) = &self.http_header_name {
            keys.push(HashKey::Header(h));
        }
        if let Some(c) = &self.http_cookie {
            keys.push(HashKey::Cookie(c));
        }
        if self.use_source_ip == Some(true) {
            keys.push(HashKey::SourceIp);
        }
        if let Some(q) = &self.http_query_parameter_name {
            keys.push(HashKey::QueryParameter(q));
        }
        keys
    }

    /// The one hash key, when exactly one is set.
    pub fn key(&self) -> Option<HashKey<'_>> {
        match self.keys().as_slice() {
            [k] => Some(*k),
            _ => None,
        }
    }

    /// The ring size hint from `ringHash.minimumRingSize` or the deprecated
    /// top-level `minimumRingSize`.
    pub fn ring_size(&self) -> Option<u64> {
        self.ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(self.minimum_ring_size)
    }
}

/// Cookie-based affinity. A `ttl` makes the proxy generate the cookie when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HttpCookie {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub ttl: Option<GoDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingHash {
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Maglev {
    #[serde(default)]
    pub table_size: Option<u64>,
}
