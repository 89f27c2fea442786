//! The subset of Istio's `VirtualService` that anymesh reads.
//!
//! Field names and shapes follow `networking.istio.io` exactly (camelCase in
//! YAML). Fields Istio defines but anymesh does not implement are not declared
//! here; the parser reports them by name (see `schema.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::GoDuration;

/// `spec` of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    /// Hosts the rules apply to: exact names, short names, `*.suffix` or `*`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only `mesh` is meaningful to anymesh; see the config reference.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP rules, evaluated in order; the first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
}

/// One HTTP rule: conditions and what to do with matching requests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    /// OR of the blocks; empty matches every request.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    /// Whole-request timeout; `0s` disables it.
    #[serde(default)]
    pub timeout: Option<GoDuration>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    /// Mirror requests to this destination too (see `mirror_percentage`).
    #[serde(default)]
    pub mirror: Option<Destination>,
    /// Share of requests `mirror` receives; default 100.
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirror_percentage`.
    #[serde(default)]
    pub mirror_percent: Option<i64>,
    /// Further mirror destinations, each with its own percentage.
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
}

/// One match block; every condition set in it must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Header name → match on its value.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Query parameter name → match on its value.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Compare `uri` case-insensitively.
    #[serde(default)]
    pub ignore_uri_case: bool,
}

/// Istio's `StringMatch`: exactly one of the three must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// RE2 syntax, matched against the whole value.
    #[serde(default)]
    pub regex: Option<String>,
}

/// A validated view of a [`StringMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

impl StringMatch {
    /// The one condition that is set, or `None` when zero or several are
    /// (validation reports those).
    pub fn kind(&self) -> Option<MatchKind<'_>> {
        match (&self.exact, &self.prefix, &self.regex) {
            (Some(e), None, None) => Some(MatchKind::Exact(e)),
            (None, Some(p), None) => Some(MatchKind::Prefix(p)),
            (None, None, Some(r)) => Some(MatchKind::Regex(r)),
            _ => None,
        }
    }

    /// Names of the conditions that are set, for error messages.
    pub(crate) fn set_fields(&self) -> Vec<&'static str> {
        [
            ("exact", self.exact.is_some()),
            ("prefix", self.prefix.is_some()),
            ("regex", self.regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect()
    }
}

/// A weighted destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// 0..=100. Missing counts as 0 when there are several destinations; a
    /// single destination receives all traffic whatever its weight.
    #[serde(default)]
    pub weight: Option<i64>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// Where traffic goes: a service host, optionally a subset and a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PortSelector {
    pub number: u32,
}

/// Header manipulation for requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

/// `set` overwrites, `add` appends, `remove` deletes (applied in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Rewrites the request before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HttpRewrite {
    /// Replaces the matched `uri` prefix (or the whole path for exact/regex matches).
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
}

/// Answers with a redirect instead of forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub scheme: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default)]
    pub redirect_code: Option<u32>,
}

/// Answers directly with a fixed status and body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HttpDirectResponse {
    pub status: u32,
    #[serde(default)]
    pub body: Option<HttpBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HttpBody {
    #[serde(default)]
    pub string: Option<String>,
}

/// `http[].retries`. Without it Istio's default policy applies; with
/// `attempts: 0` (or unset) retries are off.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Retries after the first attempt; 0 disables retries.
    #[serde(default)]
    pub attempts: i64,
    /// Timeout of one attempt; unset: the route timeout bounds each attempt.
    #[serde(default)]
    pub per_try_timeout: Option<GoDuration>,
    /// Comma-separated Envoy retry-on names and bare HTTP status codes.
    #[serde(default)]
    pub retry_on: Option<String>,
    #[serde(default)]
    pub retry_remote_localities: Option<bool>,
    /// Default true.
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the backoff; default 25ms.
    #[serde(default)]
    pub backoff: Option<GoDuration>,
}

/// Istio's `Percent`: `{value: 12.5}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// `http[].fault`: delay and/or abort a share of requests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HttpFaultInjection {
    #[serde(default)]
    pub delay: Option<FaultInjectionDelay>,
    #[serde(default)]
    pub abort: Option<FaultInjectionAbort>,
}

/// `fault.delay`. `exponentialDelay` is not read (Istio rejects it too).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionDelay {
    /// Deprecated integer percentage, used when `percentage` is unset.
    #[serde(default)]
    pub percent: Option<i64>,
    #[serde(default)]
    pub fixed_delay: Option<GoDuration>,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// `fault.abort`. `http2Error` is not read (Istio rejects it too).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionAbort {
    #[serde(default)]
    pub http_status: Option<i64>,
    #[serde(default)]
    pub grpc_status: Option<GrpcStatus>,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// A gRPC status as written: Istio's code name (`UNAVAILABLE`) or, as an
/// anymesh leniency, its number (`14`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcStatus {
    Name(String),
    Code(i64),
}

/// gRPC status code names as Istio accepts them, by code.
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl GrpcStatus {
    /// The numeric code, or why there is none.
    pub fn code(&self) -> Result<u32, String> {
        match self {
            GrpcStatus::Name(name) => GRPC_STATUS_NAMES
                .iter()
                .position(|n| n == name)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| {
                    format!(
                        "unknown gRPC status {name:?} (use a code name such as UNAVAILABLE or \
                         NOT_FOUND, or a number 0..=16)"
                    )
                }),
            GrpcStatus::Code(n) => u32::try_from(*n)
                .ok()
                .filter(|n| (*n as usize) < GRPC_STATUS_NAMES.len())
                .ok_or_else(|| format!("gRPC status {n} is out of range 0..=16")),
        }
    }
}

impl<'de> Deserialize<'de> for GrpcStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GrpcStatus;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a gRPC status name such as UNAVAILABLE, or its number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GrpcStatus, E> {
                Ok(match v.trim().parse::<i64>() {
                    Ok(n) => GrpcStatus::Code(n),
                    Err(_) => GrpcStatus::Name(v.to_string()),
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GrpcStatus, E> {
                Ok(GrpcStatus::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GrpcStatus, E> {
                Ok(GrpcStatus::Code(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One entry of `http[].mirrors`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    /// Default 100; 0 mirrors nothing.
    #[serde(default)]
    pub percentage: Option<Percent>,
}

impl HttpRoute {
    /// Every destination of the rule with its field path (`at` is the
    /// rule's path): `route[k].destination`, `mirror`,
    /// `mirrors[j].destination`.
    pub fn destinations<'r>(&'r self, at: &str) -> Vec<(String, &'r Destination)> {
        let mut out: Vec<(String, &Destination)> = self
            .route
            .iter()
            .enumerate()
            .map(|(k, d)| (format!("{at}.route[{k}].destination"), &d.destination))
            .collect();
        if let Some(m) = &self.mirror {
            out.push((format!("{at}.mirror"), m));
        }
        for (j, m) in self.mirrors.iter().enumerate() {
            out.push((format!("{at}.mirrors[{j}].destination"), &m.destination));
        }
        out
    }
}
