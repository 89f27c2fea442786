//! The compiled, immutable route table.
//!
//! Built by the compiler from a catalog [`Snapshot`](crate::catalog::Snapshot)
//! and the Istio config; read by the proxy (one `load` per request) and by the
//! `anymesh routes` dry run. Everything a request needs is resolved here:
//! host → virtual host → first matching route → weighted clusters → cluster
//! with its eligible endpoints. Nothing in it changes after compilation.
//!
//! Lookup of a request:
//! ```text
//! authority ──► VirtualHost ──► Route (first whose matches pass)
//!                                 └─► RouteAction::Forward(split)
//!                                       └─► WeightedCluster ──► Cluster ──► endpoints
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use serde::Serialize;

use super::policy::{
    ClusterPolicy, ClusterTls, FaultPolicy, Mirror, MirrorCompare, RetryPolicy, TlsOrigination,
};
use crate::model::{Endpoint, EndpointKey, Hostname, Labels, ServicePort};

/// The whole compiled routing state.
#[derive(Debug, Default, Serialize)]
pub struct RouteTable {
    /// Increases with every compilation.
    pub version: u64,
    /// The catalog snapshot it was compiled from.
    pub catalog_version: u64,
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
    /// Exact domain (`reviews`, `reviews:9080`) → index into `virtual_hosts`.
    /// foldhash: looked up on every request; seeded per process. Shared
    /// keys: a new table copies the map by reference counts, not strings.
    #[serde(skip)]
    pub exact: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// Wildcard suffixes (`.example.com` for `*.example.com`), longest first.
    #[serde(skip)]
    pub wildcards: Vec<(String, usize)>,
    /// Every cluster referenced by some route; `clusters[i].index == i`.
    pub clusters: Vec<Arc<Cluster>>,
}

impl RouteTable {
    /// Finds the virtual host for a request authority (`Host` or `:authority`).
    /// Tries `host:port` first, then `host`, then wildcards; case-insensitive.
    pub fn virtual_host(&self, authority: &str) -> Option<&Arc<VirtualHost>> {
        let lower;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            lower.as_str()
        } else {
            authority
        };
        let authority = authority.trim_end_matches('.');
        if let Some(&i) = self.exact.get(authority) {
            return self.virtual_hosts.get(i);
        }
        let host = strip_port(authority);
        if host.len() != authority.len() {
            if let Some(&i) = self.exact.get(host) {
                return self.virtual_hosts.get(i);
            }
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            .and_then(|&(_, i)| self.virtual_hosts.get(i))
    }

    /// Looks up the virtual host and the first route whose match passes.
    pub fn route<'t>(&'t self, req: &RequestInfo<'_>) -> Result<RouteHit<'t>, RouteMiss> {
        let vhost = self
            .virtual_host(req.authority)
            .ok_or(RouteMiss::NoVirtualHost)?;
        vhost
            .routes
            .iter()
            .find_map(|r| {
                r.matching(req).map(|m| RouteHit {
                    vhost,
                    route: r,
                    matched: m,
                })
            })
            .ok_or(RouteMiss::NoRoute)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// Removes a `:port` suffix (handles `[v6]:port`).
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Why no route was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMiss {
    NoVirtualHost,
    NoRoute,
}

/// A matched route.
#[derive(Debug, Clone, Copy)]
pub struct RouteHit<'t> {
    pub vhost: &'t Arc<VirtualHost>,
    pub route: &'t Route,
    /// Index of the match block that passed (`None`: the route has no match blocks).
    pub matched: Option<usize>,
}

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// Authority without scheme (`reviews:9080`).
    pub authority: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Routes for one set of domains, in match order.
#[derive(Debug, Serialize)]
pub struct VirtualHost {
    /// `VirtualService namespace/name`, or the service hostname for default routes.
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

/// One `http[]` entry of a VirtualService (or the default route of a service).
#[derive(Debug, Serialize)]
pub struct Route {
    /// The route's `name`, else `<vs>/http[<i>]`; `default` for implicit routes.
    /// Shared, so per-request metric labels cost no allocation.
    pub name: Arc<str>,
    /// OR of match blocks; empty matches every request.
    pub matches: Vec<RequestMatch>,
    pub action: RouteAction,
    pub timeout: Option<Duration>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub rewrite: Option<Rewrite>,
    /// `retries`, or Istio's default policy.
    pub retry: RetryPolicy,
    pub fault: Option<FaultPolicy>,
    /// Where requests are also sent, fire and forget.
    pub mirrors: Vec<Mirror>,
    /// Compare mirrored responses with the primary's (anymesh extension).
    pub mirror_compare: Option<MirrorCompare>,
}

impl Route {
    /// `Some(match index)` when the request passes; `Some(None)` when the route has no matches.
    pub fn matching(&self, req: &RequestInfo<'_>) -> Option<Option<usize>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().position(|m| m.matches(req)).map(Some)
    }
}

/// AND of every condition present.
#[derive(Debug, Default, Serialize)]
pub struct RequestMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    /// Header names lower-case.
    #[serde(serialize_with = "header_matches")]
    pub headers: Vec<(HeaderName, StringMatch)>,
    pub query_params: Vec<(String, StringMatch)>,
    /// Compare the URI case-insensitively (exact and prefix matches).
    pub ignore_uri_case: bool,
}

impl RequestMatch {
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        if let Some(m) = &self.uri {
            let ok = if self.ignore_uri_case {
                m.matches_ignore_case(req.path)
            } else {
                m.matches(req.path)
            };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return false;
            }
        }
        for (name, m) in &self.headers {
            // Multiple values: any may match.
            let mut values = req.headers.get_all(name).iter();
            if !values.any(|v| v.to_str().is_ok_and(|v| m.matches(v))) {
                return false;
            }
        }
        for (name, m) in &self.query_params {
            let found = req.query.is_some_and(|q| {
                q.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == name && m.matches(v)
                })
            });
            if !found {
                return false;
            }
        }
        true
    }
}

fn header_matches<S: serde::Serializer>(
    v: &[(HeaderName, StringMatch)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, m)| (k.as_str(), m)))
}

/// Istio's StringMatch. Regexes are full-match (compiled anchored).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(with = "regex_str")] Regex),
}

mod regex_str {
    use regex::Regex;
    use serde::Serializer;
    pub(super) fn serialize<S: Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }
}

impl StringMatch {
    /// Builds a regex match; `pattern` is anchored to match the whole value.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Regex::new(&format!("^(?:{pattern})$")).map(StringMatch::Regex)
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }

    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value.eq_ignore_ascii_case(s),
            StringMatch::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(s) => write!(f, "exact {s:?}"),
            StringMatch::Prefix(s) => write!(f, "prefix {s:?}"),
            StringMatch::Regex(r) => write!(f, "regex {:?}", r.as_str()),
        }
    }
}

/// What a matched route does.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Forward to one of the weighted clusters. Weights are > 0; never empty.
    Forward(Split),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// Weighted destinations; a request goes to one of them.
#[derive(Debug, Serialize)]
pub struct Split {
    pub targets: Vec<WeightedCluster>,
    /// Sum of the targets' weights.
    pub total_weight: u32,
}

impl Split {
    pub fn new(targets: Vec<WeightedCluster>) -> Self {
        let total_weight = targets.iter().map(|t| t.weight).sum();
        Self {
            targets,
            total_weight,
        }
    }

    /// The target for a point in `0..total_weight` (from a random draw).
    pub fn pick(&self, point: u32) -> Option<&WeightedCluster> {
        let mut acc = 0u32;
        for t in &self.targets {
            acc += t.weight;
            if point < acc {
                return Some(t);
            }
        }
        self.targets.last()
    }
}

/// One destination of a split.
#[derive(Debug, Serialize)]
pub struct WeightedCluster {
    pub weight: u32,
    #[serde(serialize_with = "cluster_name")]
    pub cluster: Arc<Cluster>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

fn cluster_name<S: serde::Serializer>(c: &Arc<Cluster>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.name)
}

/// A service port (optionally narrowed to a subset) with its eligible endpoints.
#[derive(Debug, Serialize)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<hostname>`, as Istio names clusters.
    pub name: String,
    /// This cluster's position in [`RouteTable::clusters`] (set by the compiler),
    /// so per-cluster runtime state can be found without a lookup.
    pub index: usize,
    pub service: Hostname,
    pub subset: Option<String>,
    /// The subset's label selector (empty without a subset).
    pub selector: Labels,
    pub port: ServicePort,
    pub lb: LbPolicy,
    /// Connection limits, outlier detection, retry budget, locality.
    pub policy: ClusterPolicy,
    /// Endpoints requests may go to.
    pub endpoints: Vec<ClusterEndpoint>,
    /// Endpoints of the service that are not eligible, and why.
    pub excluded: Vec<Excluded>,
}

impl Cluster {
    pub fn cluster_name(service: &Hostname, subset: Option<&str>, port: u16) -> String {
        format!("outbound|{port}|{}|{service}", subset.unwrap_or(""))
    }
}

/// An endpoint ready to connect to.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterEndpoint {
    pub key: EndpointKey,
    /// `address:port` to connect to (plaintext and TLS origination).
    pub authority: String,
    pub weight: u32,
    /// How connections to the endpoint are secured; `None`: plaintext to
    /// `authority`. Decided by the compiler from the cluster's
    /// DestinationRule `tls` and the endpoint's mesh metadata
    /// ([`UpstreamTls::decide`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    #[serde(skip)]
    pub endpoint: Arc<Endpoint>,
}

impl ClusterEndpoint {
    /// The mesh proxy reached with mutual TLS, when the endpoint is reached that way.
    pub fn mesh(&self) -> Option<&Arc<MeshUpstream>> {
        match &self.tls {
            Some(UpstreamTls::Mesh(m)) => Some(m),
            _ => None,
        }
    }
}

/// How the proxy secures its connections to one endpoint, when it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum UpstreamTls {
    /// Mesh mutual TLS (auto mTLS or `ISTIO_MUTUAL`) with the proxy's own
    /// identity and trust bundle.
    Mesh(Arc<MeshUpstream>),
    /// TLS origination (`SIMPLE` or `MUTUAL`) to the endpoint's own
    /// address and port; one per cluster, shared by its endpoints.
    Origination(Arc<Origination>),
}

impl UpstreamTls {
    /// Istio's decision for `endpoint`'s port `port` in a cluster of
    /// `service` whose merged DestinationRule `tls` is `tls`:
    ///
    /// | `tls` | endpoint with mesh metadata | endpoint without |
    /// |---|---|---|
    /// | `None` (auto mTLS) | mesh mTLS to its proxy | plaintext |
    /// | `DISABLE` | plaintext to its own port | plaintext |
    /// | `ISTIO_MUTUAL` | mesh mTLS to its proxy | mesh mTLS to its own port |
    /// | `SIMPLE` / `MUTUAL` | origination to its own port | origination |
    ///
    /// `ISTIO_MUTUAL` toward an endpoint no registry marks as proxied
    /// assumes the endpoint itself speaks mesh mTLS (as Envoy does: it
    /// sends mTLS to the endpoint's address): the identity expected is the
    /// `default` service account of the service's namespace (the second
    /// label of a Kubernetes name `<name>.<namespace>.svc...`, else
    /// `default`) unless `subjectAltNames` name the accepted identities.
    /// `origination` is the cluster's shared [`Origination`] (set when
    /// `tls` is `SIMPLE` or `MUTUAL`).
    pub fn decide(
        tls: Option<&ClusterTls>,
        endpoint: &Endpoint,
        port: u16,
        origination: Option<&Arc<Origination>>,
    ) -> Option<Self> {
        match tls {
            None => MeshUpstream::of(endpoint, port).map(UpstreamTls::Mesh),
            Some(ClusterTls::Disable) => None,
            Some(ClusterTls::IstioMutual {
                sni,
                subject_alt_names,
            }) => {
                let mesh = match MeshUpstream::of(endpoint, port) {
                    Some(m) => Arc::unwrap_or_clone(m),
                    None => MeshUpstream {
                        connect: endpoint.authority(port),
                        port,
                        proxy: crate::model::MeshProxy::new(
                            port,
                            Some(namespace_of(&endpoint.service).to_string()),
                            None,
                        ),
                        sni: None,
                        subject_alt_names: Vec::new(),
                    },
                };
                Some(UpstreamTls::Mesh(Arc::new(MeshUpstream {
                    sni: sni.clone(),
                    subject_alt_names: subject_alt_names.clone(),
                    ..mesh
                })))
            }
            Some(ClusterTls::Simple(_) | ClusterTls::Mutual(_)) => {
                origination.cloned().map(UpstreamTls::Origination)
            }
        }
    }
}

/// The namespace of a Kubernetes service name (`reviews.shop.svc.cluster.local`
/// → `shop`); `default` for other names.
fn namespace_of(service: &Hostname) -> &str {
    let mut labels = service.as_str().split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(_), Some(ns), Some("svc")) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// How a mesh proxy in front of an endpoint is reached: mutual TLS to its
/// inbound port, asking for the endpoint's port, and the identity it must
/// present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshUpstream {
    /// `address:port` of the proxy's inbound listener.
    pub connect: String,
    /// The endpoint's own port, which the proxy forwards to.
    pub port: u16,
    /// The registry's statement of the proxy's identity.
    pub proxy: crate::model::MeshProxy,
    /// `ISTIO_MUTUAL`'s `sni`: the server name sent instead of
    /// `inbound-<port>.anymesh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `ISTIO_MUTUAL`'s `subjectAltNames`: the peer identities accepted
    /// (any of them) instead of the registry's; empty: the registry's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl MeshUpstream {
    /// How `endpoint`'s proxy is reached for its port `port`, when a proxy fronts it.
    pub fn of(endpoint: &Endpoint, port: u16) -> Option<Arc<Self>> {
        let proxy = endpoint.mesh.as_ref()?;
        Some(Arc::new(Self {
            connect: endpoint.authority(proxy.port),
            port,
            proxy: proxy.clone(),
            sni: None,
            subject_alt_names: Vec::new(),
        }))
    }
}

/// TLS origination to a cluster's endpoints (DestinationRule `SIMPLE` or
/// `MUTUAL`): the settings, the server name and the cluster (for logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origination {
    /// `MUTUAL`: a client certificate is presented.
    pub mutual: bool,
    pub settings: TlsOrigination,
    /// The server name sent and (without `subjectAltNames`) verified: the
    /// `sni`, else the service's hostname.
    pub server_name: String,
    /// The cluster it belongs to (`outbound|443||api.example.com`).
    pub cluster: String,
}

impl Origination {
    /// The origination of a cluster of `service` under `tls`, when `tls`
    /// is `SIMPLE` or `MUTUAL`.
    pub fn of(tls: Option<&ClusterTls>, service: &Hostname, cluster: &str) -> Option<Arc<Self>> {
        let (mutual, settings) = match tls? {
            ClusterTls::Simple(s) => (false, s),
            ClusterTls::Mutual(s) => (true, s),
            ClusterTls::Disable | ClusterTls::IstioMutual { .. } => return None,
        };
        Some(Arc::new(Self {
            mutual,
            server_name: settings
                .sni
                .clone()
                .unwrap_or_else(|| service.as_str().to_string()),
            settings: settings.clone(),
            cluster: cluster.to_string(),
        }))
    }
}

/// An endpoint left out of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub key: EndpointKey,
    pub address: String,
    pub reason: ExclusionReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExclusionReason {
    /// The registry reports it unhealthy.
    Unhealthy,
    /// Draining, and healthy endpoints exist.
    Draining,
    /// Its labels do not match the subset selector.
    LabelMismatch { missing: Labels },
    /// It does not serve the cluster's port.
    NoPort,
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExclusionReason::Unhealthy => f.write_str("unhealthy"),
            ExclusionReason::Draining => f.write_str("draining (healthy endpoints exist)"),
            ExclusionReason::LabelMismatch { missing } => {
                f.write_str("labels do not match subset:")?;
                for (k, v) in missing {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
            ExclusionReason::NoPort => f.write_str("does not serve this port"),
        }
    }
}

/// Load-balancing policy of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    /// Power of two choices over a peak-EWMA of latency (Linkerd's
    /// balancer; an anymesh extension of `loadBalancer.simple`).
    PeakEwma,
    ConsistentHash(HashPolicy),
}

impl fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LbPolicy::RoundRobin => f.write_str("round robin"),
            LbPolicy::LeastRequest => f.write_str("least request"),
            LbPolicy::Random => f.write_str("random"),
            LbPolicy::PeakEwma => f.write_str("peak EWMA"),
            LbPolicy::ConsistentHash(h) => write!(f, "consistent hash on {:?}", h.key),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HashPolicy {
    pub key: HashKey,
    /// Minimum ring / Maglev table size (a prime is chosen at or above it).
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Header(#[serde(with = "header_name")] HeaderName),
    Cookie {
        name: String,
        path: Option<String>,
        /// When set, the proxy issues the cookie if the request lacks it.
        ttl: Option<Duration>,
    },
    SourceIp,
    QueryParam(String),
}

mod header_name {
    use http::HeaderName;
    use serde::Serializer;
    pub(super) fn serialize<S: Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(h.as_str())
    }
}

/// Header manipulation, applied in the order set, add, remove.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOps {
    #[serde(skip_serializing_if = "Vec::is_empty", with = "header_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(skip_serializing_if = "Vec::is_empty", with = "header_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(skip_serializing_if = "Vec::is_empty", with = "header_list")]
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            headers.append(k.clone(), v.clone());
        }
        for k in &self.remove {
            headers.remove(k);
        }
    }
}

mod header_pairs {
    use http::{HeaderName, HeaderValue};
    use serde::ser::SerializeMap;
    use serde::Serializer;
    pub(super) fn serialize<S: Serializer>(
        v: &[(HeaderName, HeaderValue)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, val) in v {
            m.serialize_entry(k.as_str(), &String::from_utf8_lossy(val.as_bytes()))?;
        }
        m.end()
    }
}

mod header_list {
    use http::HeaderName;
    use serde::Serializer;
    pub(super) fn serialize<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|h| h.as_str()))
    }
}

/// Istio HTTPRewrite: `uri` replaces the matched prefix (or the whole path for
/// exact/regex matches); `authority` replaces the Host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
}

/// Istio HTTPRedirect.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    /// 301 unless set.
    pub code: u16,
}

/// Istio HTTPDirectResponse.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<String>,
}

#[cfg(test)]
mod tests;
