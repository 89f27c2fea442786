//! Istio's `security.istio.io` resources (apiVersion `v1` or `v1beta1`):
//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication, as
//! written. Their checks are in `validate`; the compiled, evaluable forms
//! live in [`crate::security`].

pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::duration::GoDuration;
use super::Kind;
use crate::model::Labels;

/// `selector` of a security resource: the workloads (in the resource's
/// namespace, or in every namespace for the root namespace) it applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Every label must be present with this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `spec` of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Per workload port (the port the application listens on); needs a
    /// selector.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<PortKey, MutualTls>,
}

impl PeerAuthentication {
    /// Whether the policy has a selector with at least one label (Istio
    /// treats an empty selector as none).
    pub fn has_selector(&self) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }
}

/// `mtls` of a PeerAuthentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: PeerMtlsMode,
}

/// `mtls.mode` as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerMtlsMode {
    /// Inherit from the parent (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// A map key that should be a port: YAML may write it as a number or a
/// string. Kept as written; the checks parse it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey(pub String);

impl PortKey {
    /// The port, when the key is one (1..=65535).
    pub fn port(&self) -> Option<u16> {
        self.0.parse::<u16>().ok().filter(|p| *p > 0)
    }
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PortKey(d.deserialize_any(ScalarVisitor)?))
    }
}

/// Accepts a string or a number and keeps its text (Istio's proto fields
/// are strings, yet `ports: [8080]` is a common way to write them).
struct ScalarVisitor;

impl serde::de::Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A list of strings where numbers are accepted too.
fn scalars<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Scalar(String);
    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Scalar(d.deserialize_any(ScalarVisitor)?))
        }
    }
    let v: Option<Vec<Scalar>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|s| s.0).collect())
}

/// `action` of an AuthorizationPolicy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
    Audit,
    /// Delegation to an external authorizer: not supported. A CUSTOM
    /// policy is kept and fails closed (what it matches is denied).
    Custom,
}

/// `spec` of an AuthorizationPolicy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub action: AuthorizationAction,
    /// Only with CUSTOM; read so it can be reported.
    #[serde(default)]
    pub provider: Option<ExtensionProvider>,
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

/// `provider` of a CUSTOM AuthorizationPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// One `rules[]` entry: `from`, `to` and `when` must all match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AuthorizationRule {
    /// Any entry may match; none given matches any source.
    #[serde(default)]
    pub from: Vec<RuleFrom>,
    /// Any entry may match; none given matches any operation.
    #[serde(default)]
    pub to: Vec<RuleTo>,
    /// Every condition must match.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `rules[].from[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Option<Source>,
}

/// `rules[].to[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Option<Operation>,
}

/// `rules[].from[].source`: every field given must match; a field matches
/// when any of its values does (`not*`: when none does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[].to[].operation`; like [`Source`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default, deserialize_with = "scalars")]
    pub ports: Vec<String>,
    #[serde(default, deserialize_with = "scalars")]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `rules[].when[]`: an attribute and the values it may (or may not) have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, deserialize_with = "scalars")]
    pub values: Vec<String>,
    #[serde(default, deserialize_with = "scalars")]
    pub not_values: Vec<String>,
}

/// `spec` of a RequestAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleSpec>,
}

/// `jwtRules[]` as written; compiled into [`crate::security::jwt::JwtRule`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtRuleSpec {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: String,
    #[serde(default)]
    pub jwks: String,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: String,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeaderSpec>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub timeout: Option<GoDuration>,
}

/// `jwtRules[].fromHeaders[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

/// `jwtRules[].outputClaimToHeaders[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClaimToHeaderSpec {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

impl Kind for PeerAuthentication {
    const KIND: &'static str = "PeerAuthentication";
}

impl Kind for AuthorizationPolicy {
    const KIND: &'static str = "AuthorizationPolicy";
}

impl Kind for RequestAuthentication {
    const KIND: &'static str = "RequestAuthentication";
}
