//! Resilience policies as the proxy reads them: compiled from a
//! VirtualService's `retries`, `fault` and `mirror(s)` (per [`Route`]) and a
//! DestinationRule's `connectionPool`, `outlierDetection`, `retryBudget` and
//! `localityLbSetting` (per [`Cluster`]). Every value is checked and every
//! default is filled in by the compiler; nothing here is parsed again.
//!
//! [`Route`]: super::Route
//! [`Cluster`]: super::Cluster

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::table::Cluster;

/// A route's retry policy: VirtualService `http[].retries`, or Istio's
/// default when the route sets none ([`RetryPolicy::istio_default`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Istio's `attempts`); 0 disables retries.
    pub attempts: u32,
    /// Ends one attempt; `None`: only the route timeout bounds it.
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    /// Retries may go to endpoints in other localities.
    pub retry_remote_localities: bool,
    /// A retry goes to an endpoint not tried yet, when there is one.
    pub ignore_previous_hosts: bool,
    /// Base interval of the full-jitter backoff; the cap is ten times it.
    pub backoff: Duration,
    /// The operator wrote `retryOn`: conditions that fire after the upstream
    /// saw the request then retry non-idempotent requests too. With Istio's
    /// default policy they never do.
    pub explicit: bool,
}

/// Envoy's default base interval between retries.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

impl RetryPolicy {
    /// Istio's policy for a route without `retries`: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// (no status codes since Istio 1.24), previous hosts avoided.
    pub fn istio_default() -> Self {
        let mut conditions = RetryConditions::default();
        for c in [
            RetryCondition::ConnectFailure,
            RetryCondition::RefusedStream,
            RetryCondition::Unavailable,
            RetryCondition::Cancelled,
            RetryCondition::RetriableStatusCodes,
        ] {
            conditions.insert(c);
        }
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn {
                conditions,
                statuses: Vec::new(),
            },
            retry_remote_localities: false,
            ignore_previous_hosts: true,
            backoff: DEFAULT_RETRY_BACKOFF,
            explicit: false,
        }
    }

    /// No retries at all (`attempts: 0`).
    pub fn disabled() -> Self {
        Self {
            attempts: 0,
            ..Self::istio_default()
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::istio_default()
    }
}

/// What a retry fires on: Envoy's retry-on conditions plus the status codes
/// of `retriable-status-codes` (bare codes in Istio's `retryOn`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    pub conditions: RetryConditions,
    pub statuses: Vec<u16>,
}

/// A `retryOn` name Istio accepts that anymesh ignores: anymesh never
/// connects upstream over HTTP/3, so the condition cannot arise.
pub const IGNORED_RETRY_ON: &str = "http3-post-connect-failure";

impl RetryOn {
    /// Parses Istio's `retryOn`: comma-separated Envoy names (HTTP and
    /// gRPC) and bare HTTP status codes (100..=599). A status code implies
    /// `retriable-status-codes`, as Istio adds it. Blanks around names are
    /// ignored, as is [`IGNORED_RETRY_ON`]. The error names the bad token
    /// and lists the valid names.
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut out = RetryOn::default();
        let mut any = false;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            any = true;
            if token.bytes().all(|b| b.is_ascii_digit()) {
                match token.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => {
                        if !out.statuses.contains(&code) {
                            out.statuses.push(code);
                        }
                        out.conditions.insert(RetryCondition::RetriableStatusCodes);
                    }
                    _ => return Err(format!("status code {token} is out of range 100..=599")),
                }
            } else if let Some(c) = RetryCondition::from_name(token) {
                out.conditions.insert(c);
            } else if token != IGNORED_RETRY_ON {
                let names: Vec<&str> = RetryCondition::ALL
                    .iter()
                    .map(|c| c.name())
                    .chain([IGNORED_RETRY_ON])
                    .collect();
                return Err(format!(
                    "unknown retryOn name {token:?}; valid names: {}, or an HTTP status code \
                     100..=599",
                    names.join(", ")
                ));
            }
        }
        if !any {
            return Err("retryOn names no condition".into());
        }
        Ok(out)
    }
}

/// One of Envoy's `retry_on` names (HTTP and gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryCondition {
    FiveXx,
    GatewayError,
    Reset,
    ResetBeforeRequest,
    ConnectFailure,
    EnvoyRateLimited,
    Retriable4xx,
    RefusedStream,
    RetriableStatusCodes,
    RetriableHeaders,
    // gRPC, read from the response head's `grpc-status`.
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
}

impl RetryCondition {
    pub const ALL: [RetryCondition; 15] = [
        RetryCondition::FiveXx,
        RetryCondition::GatewayError,
        RetryCondition::Reset,
        RetryCondition::ResetBeforeRequest,
        RetryCondition::ConnectFailure,
        RetryCondition::EnvoyRateLimited,
        RetryCondition::Retriable4xx,
        RetryCondition::RefusedStream,
        RetryCondition::RetriableStatusCodes,
        RetryCondition::RetriableHeaders,
        RetryCondition::Cancelled,
        RetryCondition::DeadlineExceeded,
        RetryCondition::Internal,
        RetryCondition::ResourceExhausted,
        RetryCondition::Unavailable,
    ];

    /// The name in `retryOn`.
    pub fn name(self) -> &'static str {
        match self {
            RetryCondition::FiveXx => "5xx",
            RetryCondition::GatewayError => "gateway-error",
            RetryCondition::Reset => "reset",
            RetryCondition::ResetBeforeRequest => "reset-before-request",
            RetryCondition::ConnectFailure => "connect-failure",
            RetryCondition::EnvoyRateLimited => "envoy-ratelimited",
            RetryCondition::Retriable4xx => "retriable-4xx",
            RetryCondition::RefusedStream => "refused-stream",
            RetryCondition::RetriableStatusCodes => "retriable-status-codes",
            RetryCondition::RetriableHeaders => "retriable-headers",
            RetryCondition::Cancelled => "cancelled",
            RetryCondition::DeadlineExceeded => "deadline-exceeded",
            RetryCondition::Internal => "internal",
            RetryCondition::ResourceExhausted => "resource-exhausted",
            RetryCondition::Unavailable => "unavailable",
        }
    }

    /// The condition a `retryOn` name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for RetryCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`RetryCondition`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetryConditions(u32);

impl RetryConditions {
    pub fn insert(&mut self, c: RetryCondition) {
        self.0 |= c.bit();
    }

    pub fn contains(self, c: RetryCondition) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = RetryCondition> {
        RetryCondition::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl fmt::Debug for RetryConditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|c| c.name()))
            .finish()
    }
}

impl Serialize for RetryConditions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|c| c.name()))
    }
}

/// VirtualService `http[].fault`. A part with a percentage of 0 is not
/// compiled (Istio injects nothing without a percentage).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultPolicy {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultDelay {
    pub fixed: Duration,
    /// Share of requests delayed, 0 < p <= 100.
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultAbort {
    pub status: AbortStatus,
    /// Share of requests aborted, 0 < p <= 100.
    pub percentage: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortStatus {
    /// An HTTP status (200..=599).
    Http(u16),
    /// A gRPC status code (answered as HTTP 200 with `grpc-status`).
    Grpc(u32),
}

/// One mirror destination of a route (`mirror` + `mirrorPercentage`, or an
/// entry of `mirrors[]`).
#[derive(Debug, Clone, Serialize)]
pub struct Mirror {
    #[serde(serialize_with = "cluster_name")]
    pub cluster: Arc<Cluster>,
    /// Share of requests mirrored, 0 < p <= 100.
    pub percentage: f64,
}

fn cluster_name<S: serde::Serializer>(c: &Arc<Cluster>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.name)
}

/// How mirrored responses are compared with the primary's (an anymesh
/// extension; `None`: they are read and discarded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MirrorCompare {
    /// Response header names compared besides the status (lower-case).
    pub headers: Vec<String>,
    /// Compare a hash of the bodies too.
    pub body: bool,
}

/// A cluster's DestinationRule policies, merged for its subset and port as
/// Istio merges them. Default: nothing configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterPolicy {
    pub connection_pool: ConnectionPool,
    pub outlier: Option<OutlierDetection>,
    /// DestinationRule `trafficPolicy.retryBudget`; `None`: the proxy's
    /// default budget (anymesh.yaml) applies.
    pub retry_budget: Option<RetryBudget>,
    pub locality: LocalityLb,
    /// DestinationRule `tls`; `None`: auto mTLS, i.e. mesh mTLS exactly to
    /// the endpoints that have a mesh proxy (`Endpoint::mesh`), plaintext
    /// to the others.
    pub tls: Option<ClusterTls>,
}

/// How the proxy speaks TLS to a cluster's endpoints: DestinationRule
/// `trafficPolicy.tls`, merged for the cluster's subset and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterTls {
    /// Plaintext, even to endpoints that have a mesh proxy.
    Disable,
    /// Mesh mTLS with the proxy's own identity and trust bundle, to the
    /// endpoint's mesh port; an endpoint without a mesh proxy cannot be
    /// reached this way.
    IstioMutual {
        /// `sni`; `None`: the proxy picks it.
        sni: Option<String>,
        /// `subjectAltNames`: accepted peer identities (SPIFFE URIs)
        /// instead of the identity the registry names for the endpoint;
        /// empty: the registry's.
        subject_alt_names: Vec<String>,
    },
    /// TLS origination (`SIMPLE`): the server is verified, no client
    /// certificate.
    Simple(TlsOrigination),
    /// TLS origination with a client certificate (`MUTUAL`).
    Mutual(TlsOrigination),
}

/// The settings of [`ClusterTls::Simple`] and [`ClusterTls::Mutual`].
/// Paths are files on the proxy's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsOrigination {
    /// Roots the server's chain is verified against; `None`: the
    /// platform's roots (Istio verifies against the system bundle too).
    pub ca_certificates: Option<std::path::PathBuf>,
    /// `MUTUAL` only (validation requires both).
    pub client_certificate: Option<std::path::PathBuf>,
    pub private_key: Option<std::path::PathBuf>,
    /// `None`: the destination's hostname (Istio's auto SNI).
    pub sni: Option<String>,
    /// Names one of which the server certificate must carry; empty: the
    /// SNI's hostname is verified.
    pub subject_alt_names: Vec<String>,
    /// Skip verifying the server's certificate (and name) entirely.
    pub insecure_skip_verify: bool,
}

/// DestinationRule `connectionPool`. `None` means unlimited (or the
/// proxy's own default, for timeouts). `tcp_idle_timeout` of zero: the
/// operator wrote `idleTimeout: 0s`, which disables the idle timeout; the
/// HTTP idle timeout, when set, takes precedence over the TCP one (Istio).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<Duration>,
    pub tcp_idle_timeout: Option<Duration>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub http_idle_timeout: Option<Duration>,
    pub max_concurrent_streams: Option<u32>,
}

impl ConnectionPool {
    /// Nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.max_connections.is_none()
            && self.http1_max_pending_requests.is_none()
            && self.http2_max_requests.is_none()
            && self.max_retries.is_none()
    }
}

/// `connectionPool.tcp.tcpKeepalive`; unset parts keep the system's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// DestinationRule `outlierDetection`, defaults filled in as Istio's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (default 5; `None` when set to 0: disabled).
    pub consecutive_5xx: Option<u32>,
    /// `consecutiveGatewayErrors` (502, 503, 504 and local-origin gateway
    /// failures); `None`: disabled (the default).
    pub consecutive_gateway: Option<u32>,
    /// `consecutiveLocalOriginFailures` (default 5), only with
    /// `split_external_local_origin`.
    pub consecutive_local_origin: Option<u32>,
    /// Count connect failures, resets and timeouts apart from upstream 5xx.
    pub split_external_local_origin: bool,
    /// Sweep interval (default 10 s).
    pub interval: Duration,
    /// Ejection time per ejection so far (default 30 s), capped at [`MAX_EJECTION_TIME`].
    pub base_ejection_time: Duration,
    /// Percent of a cluster's endpoints that may be ejected at once (default
    /// 10); at least one may be.
    pub max_ejection_percent: u32,
    /// Below this percent of healthy endpoints, ejection is suspended and
    /// every endpoint is used (default 0: never suspended).
    pub min_health_percent: u32,
}

/// Envoy's default cap on one ejection.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: Some(5),
            consecutive_gateway: None,
            consecutive_local_origin: Some(5),
            split_external_local_origin: false,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// A bound on retries across a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryBudget {
    /// Envoy's form (DestinationRule `retryBudget`): retries in flight at
    /// most `percent` of active requests, but at least `min_concurrency`.
    Concurrent { percent: f64, min_concurrency: u32 },
    /// Linkerd's form: retries at most `ratio` of the requests seen over
    /// `window`, plus `min_per_second`.
    Rate {
        ratio: f64,
        window: Duration,
        min_per_second: u32,
    },
    /// No budget.
    Off,
}

impl MirrorCompare {
    /// Parses the `mirror.anymesh.io/compare` annotation: comma-separated
    /// items, each `status` (always compared; may be written for clarity),
    /// `headers=<name>|<name>...` (response headers compared, any case) or
    /// `body` (a hash of the bodies). Example:
    /// `status,headers=etag|content-type,body`.
    pub fn parse(text: &str) -> Result<MirrorCompare, String> {
        let mut out = MirrorCompare::default();
        let mut any = false;
        for item in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            any = true;
            match item.split_once('=') {
                None if item == "status" => {}
                None if item == "body" => out.body = true,
                Some((key, names)) if key.trim() == "headers" => {
                    let mut listed = false;
                    for name in names.split('|').map(str::trim).filter(|n| !n.is_empty()) {
                        listed = true;
                        let name = name.to_ascii_lowercase();
                        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                            return Err(format!("invalid header name {name:?}"));
                        }
                        if !out.headers.contains(&name) {
                            out.headers.push(name);
                        }
                    }
                    if !listed {
                        return Err("headers= lists no header name".into());
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown item {item:?}; use status, headers=<name>|<name>... or body \
                         (e.g. status,headers=etag|content-type,body)"
                    ))
                }
            }
        }
        if !any {
            return Err(
                "empty; use status, headers=<name>|<name>... or body (e.g. status,body)".into(),
            );
        }
        Ok(out)
    }
}

/// DestinationRule `localityLbSetting`, merged over the mesh default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalityLb {
    pub enabled: bool,
    pub mode: LocalityMode,
}

impl Default for LocalityLb {
    /// Istio's mesh default: locality-aware, failing over by priority tiers.
    fn default() -> Self {
        Self {
            enabled: true,
            mode: LocalityMode::Tiers,
        }
    }
}

/// How traffic is spread over localities (one of `distribute`, `failover`,
/// `failoverPriority`, or Envoy's plain priority tiers).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalityMode {
    /// Same region/zone/subzone first, then same zone, region, others.
    Tiers,
    /// `distribute`: for requests from `from` (a `region/zone/subzone`
    /// pattern, `*` allowed), weights per destination locality pattern.
    Distribute(Vec<LocalityDistribute>),
    /// `failover`: when a region has no healthy endpoint, go to `to`.
    Failover(Vec<(String, String)>),
    /// `failoverPriority`: ordered labels; endpoints matching more of them
    /// (in order) with the proxy's own come first.
    FailoverPriority(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalityDistribute {
    pub from: String,
    /// Destination locality pattern → weight (the weights sum to 100).
    pub to: Vec<(String, u32)>,
}
