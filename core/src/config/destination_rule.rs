//! The subset of Istio's `DestinationRule` that anymesh reads: subsets,
//! load-balancer, connection-pool, outlier-detection, retry-budget,
//! locality and client TLS policies, per port and per subset, merged as Istio merges them
//! ([`DestinationRule::policy`]).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::GoDuration;
use super::virtual_service::PortSelector;

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

    /// The load balancer for `subset` (or the whole host) on `port`, merged
    /// as [`DestinationRule::policy`] merges.
    pub fn load_balancer(
        &self,
        subset: Option<&str>,
        port: Option<u16>,
    ) -> Option<&LoadBalancerSettings> {
        self.policy(subset, port).load_balancer
    }

    /// The policy for the cluster of `subset` (or the whole host) on `port`,
    /// merged as Istio's `MergeSubsetTrafficPolicy` does:
    ///
    /// 1. the rule's `trafficPolicy`, or, when one of its `portLevelSettings`
    ///    names the port, that entry alone (parts it leaves unset take their
    ///    defaults: nothing of the top level is inherited, the retry budget
    ///    included);
    /// 2. the subset's `trafficPolicy` likewise resolved for the port (a
    ///    port-level entry stands alone here too, so the subset's own
    ///    `retryBudget` is then dropped);
    /// 3. each of `loadBalancer`, `connectionPool`, `outlierDetection`,
    ///    `tls` and `retryBudget` the subset's resolved policy sets replaces
    ///    the rule's as a whole; when the subset has a port-level entry for
    ///    the port, all but `retryBudget` replace the rule's even when unset.
    pub fn policy(&self, subset: Option<&str>, port: Option<u16>) -> EffectivePolicy<'_> {
        let top = self
            .traffic_policy
            .as_ref()
            .map(|p| p.at_port(port).0)
            .unwrap_or_default();
        let Some(sub) = subset
            .and_then(|s| self.subset(s))
            .and_then(|s| s.traffic_policy.as_ref())
        else {
            return top;
        };
        let (sub, port_level) = sub.at_port(port);
        fn pick<T>(sub: Option<T>, top: Option<T>, port_level: bool) -> Option<T> {
            if port_level {
                sub
            } else {
                sub.or(top)
            }
        }
        EffectivePolicy {
            load_balancer: pick(sub.load_balancer, top.load_balancer, port_level),
            connection_pool: pick(sub.connection_pool, top.connection_pool, port_level),
            outlier_detection: pick(sub.outlier_detection, top.outlier_detection, port_level),
            tls: pick(sub.tls, top.tls, port_level),
            retry_budget: sub.retry_budget.or(top.retry_budget),
        }
    }
}

/// The parts of the traffic policies that apply to one cluster; see
/// [`DestinationRule::policy`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EffectivePolicy<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetectionSettings>,
    pub retry_budget: Option<&'a RetryBudgetSettings>,
    /// `None`: no `tls` applies, so auto mTLS decides.
    pub tls: Option<&'a ClientTlsSettings>,
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

/// A rule's or subset's `trafficPolicy`; `tunnel` and `proxyProtocol` are
/// reported unsupported.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionSettings>,
    /// Per-port policies; the first entry naming a port replaces this
    /// policy for it (see [`DestinationRule::policy`]).
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetSettings>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

impl TrafficPolicy {
    /// This policy for `port`: the first `portLevelSettings` entry for the
    /// port, alone (and `true`), else the policy itself.
    fn at_port(&self, port: Option<u16>) -> (EffectivePolicy<'_>, bool) {
        let entry = port.and_then(|n| {
            self.port_level_settings
                .iter()
                .find(|p| p.port.is_some_and(|p| p.number == u32::from(n)))
        });
        match entry {
            Some(p) => (
                EffectivePolicy {
                    load_balancer: p.load_balancer.as_ref(),
                    connection_pool: p.connection_pool.as_ref(),
                    outlier_detection: p.outlier_detection.as_ref(),
                    retry_budget: None,
                    tls: p.tls.as_ref(),
                },
                true,
            ),
            None => (
                EffectivePolicy {
                    load_balancer: self.load_balancer.as_ref(),
                    connection_pool: self.connection_pool.as_ref(),
                    outlier_detection: self.outlier_detection.as_ref(),
                    retry_budget: self.retry_budget.as_ref(),
                    tls: self.tls.as_ref(),
                },
                false,
            ),
        }
    }
}

/// One entry of `trafficPolicy.portLevelSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<PortSelector>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionSettings>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

/// `trafficPolicy.tls` (also per port and per subset): how the proxy
/// speaks TLS to the cluster's endpoints. Paths are files on the proxy's
/// host. `credentialName` and `caCrl` are read only to be reported
/// unsupported (an error: the rule would otherwise trust or present
/// something other than what it says).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    #[serde(default)]
    pub mode: TlsMode,
    #[serde(default)]
    pub client_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub ca_crl: String,
}

/// `tls.mode`; Istio's default (the proto's zero value) is `DISABLE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

/// `connectionPool` (circuit breakers). Integers are Istio's `int32`s:
/// negative is an error, 0 means unset (unlimited).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConnectionPoolSettings {
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

/// `connectionPool.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: i64,
    #[serde(default)]
    pub connect_timeout: Option<GoDuration>,
    #[serde(default)]
    pub tcp_keepalive: Option<TcpKeepaliveSettings>,
    #[serde(default)]
    pub max_connection_duration: Option<GoDuration>,
    /// `0s` disables the idle timeout.
    #[serde(default)]
    pub idle_timeout: Option<GoDuration>,
}

/// `connectionPool.tcp.tcpKeepalive`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TcpKeepaliveSettings {
    #[serde(default)]
    pub probes: i64,
    #[serde(default)]
    pub time: Option<GoDuration>,
    #[serde(default)]
    pub interval: Option<GoDuration>,
}

/// `connectionPool.http`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: i64,
    #[serde(default)]
    pub http2_max_requests: i64,
    #[serde(default)]
    pub max_requests_per_connection: i64,
    #[serde(default)]
    pub max_retries: i64,
    #[serde(default)]
    pub idle_timeout: Option<GoDuration>,
    #[serde(default)]
    pub max_concurrent_streams: i64,
}

/// `outlierDetection` as written; defaults are filled in by the compiler.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetectionSettings {
    /// Deprecated and ignored by Istio (a warning says so).
    #[serde(default)]
    pub consecutive_errors: Option<i64>,
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<i64>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<i64>,
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    #[serde(default)]
    pub interval: Option<GoDuration>,
    #[serde(default)]
    pub base_ejection_time: Option<GoDuration>,
    #[serde(default)]
    pub max_ejection_percent: i64,
    #[serde(default)]
    pub min_health_percent: i64,
}

/// `trafficPolicy.retryBudget` (Istio 1.27+).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudgetSettings {
    /// Default 20.
    #[serde(default)]
    pub percent: Option<f64>,
    /// 0 (unset): 3.
    #[serde(default)]
    pub min_retry_concurrency: i64,
}

/// `loadBalancer.localityLbSetting`: at most one of `distribute`,
/// `failover` and `failoverPriority`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    #[serde(default)]
    pub distribute: Vec<LocalityDistributeSetting>,
    #[serde(default)]
    pub failover: Vec<LocalityFailoverSetting>,
    #[serde(default)]
    pub failover_priority: Vec<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// One `distribute` entry: for clients in `from`, weights per locality.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LocalityDistributeSetting {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: BTreeMap<String, i64>,
}

/// One `failover` entry: region `from` fails over to region `to`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LocalityFailoverSetting {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Exactly one of `simple` or `consistentHash`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(default)]
    pub locality_lb_setting: Option<LocalityLbSetting>,
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
    /// anymesh extension: power of two choices over a peak-EWMA of latency
    /// (Linkerd's balancer). Istio's own validation rejects it.
    PeakEwma,
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
