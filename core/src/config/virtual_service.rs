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
