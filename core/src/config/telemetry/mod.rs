//! Istio's `telemetry.istio.io` `Telemetry` resource (apiVersion `v1` or
//! `v1alpha1`), as written. Its checks are in `validate`; the compiled,
//! per-workload form lives in [`crate::telemetry`].
//!
//! Enums are read by their Istio names; an unknown name is an error at its
//! field path (`unknown variant ...`), and the resource is not applied.

pub(crate) mod validate;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::security::WorkloadSelector;
use super::Kind;

/// `spec` of a Telemetry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// The workloads of the namespace it applies to; none (or no labels):
    /// the whole namespace, or the mesh in the root namespace.
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub metrics: Vec<Metrics>,
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

impl Telemetry {
    /// Whether the resource has a selector with at least one label (Istio
    /// treats an empty selector as none).
    pub fn has_selector(&self) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }
}

impl Kind for Telemetry {
    const KIND: &'static str = "Telemetry";
}

/// `providers[]` of a metrics, tracing or access logging entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// `metrics[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Metrics {
    /// None: the parent level's providers (at the top, Istio's default
    /// `prometheus`).
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// Applied in order; a later override wins over an earlier one.
    #[serde(default)]
    pub overrides: Vec<MetricsOverrides>,
}

/// `metrics[].overrides[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsOverrides {
    /// None: every metric, client and server side.
    #[serde(default)]
    pub r#match: Option<MetricSelector>,
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Tag (label) name → what to do with it.
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// `metrics[].overrides[].match`: `metric` and `customMetric` are a oneof.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSelector {
    #[serde(default)]
    pub metric: Option<IstioMetric>,
    /// A metric by its Prometheus name without the `istio_` prefix, as
    /// Istio's stats plugin names them (`requests_total`).
    #[serde(default)]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// `match.metric`: Istio's standard metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    #[default]
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

/// Which side of a request a setting is for: `CLIENT` (the outbound side,
/// Istio's `reporter="source"`), `SERVER` (the inbound side) or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

/// `tagOverrides.<tag>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TagOverride {
    #[serde(default)]
    pub operation: TagOperation,
    /// A CEL expression in Istio; anymesh takes only a string literal
    /// (`"'canary'"`), a fixed value.
    #[serde(default)]
    pub value: Option<String>,
}

/// `tagOverrides.<tag>.operation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    #[default]
    Upsert,
    Remove,
}

/// `tracing[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default)]
    pub r#match: Option<ModeSelector>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// 0–100.
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    /// Tag name → value; only `literal` is applied.
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
}

/// `tracing[].match` and `accessLogging[].match`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ModeSelector {
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// `tracing[].customTags.<tag>`: one of `literal`, `environment`, `header`.
/// Read whole so that the two anymesh does not apply are reported with
/// their paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CustomTag {
    #[serde(default)]
    pub literal: Option<LiteralTag>,
    #[serde(default)]
    pub environment: Option<NamedTag>,
    #[serde(default)]
    pub header: Option<NamedTag>,
}

/// `customTags.<tag>.literal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

/// `customTags.<tag>.environment` and `.header`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedTag {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

/// `accessLogging[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AccessLogging {
    #[serde(default)]
    pub r#match: Option<ModeSelector>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub filter: Option<AccessLogFilter>,
}

/// `accessLogging[].filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AccessLogFilter {
    /// A CEL expression in Istio; anymesh takes only the literals `true`
    /// and `false`.
    #[serde(default)]
    pub expression: String,
}

/// A CEL expression that is a string literal (`'x'` or `"x"`, no escapes
/// other than `\\`, `\'` and `\"`): its value. Anything else is `None`.
pub fn cel_string_literal(expr: &str) -> Option<String> {
    let e = expr.trim();
    if e.len() < 2 {
        return None;
    }
    let quote = e.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = e.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('\\' | '\'' | '"')) => out.push(n),
                _ => return None,
            },
            c if c == quote => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// An access log filter that is the CEL literal `true` or `false`.
pub fn cel_bool_literal(expr: &str) -> Option<bool> {
    match expr.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_literals() {
        assert_eq!(cel_string_literal("'canary'"), Some("canary".into()));
        assert_eq!(cel_string_literal(" \"a b\" "), Some("a b".into()));
        assert_eq!(cel_string_literal(r"'it\'s'"), Some("it's".into()));
        assert_eq!(cel_string_literal("''"), Some(String::new()));
        assert_eq!(cel_string_literal("'"), None);
        assert_eq!(cel_string_literal("request.host"), None);
        assert_eq!(cel_string_literal("'a' + 'b'"), None);
        assert_eq!(cel_string_literal(r"'\n'"), None);
        assert_eq!(cel_string_literal("canary"), None);
        assert_eq!(cel_bool_literal(" true "), Some(true));
        assert_eq!(cel_bool_literal("response.code >= 400"), None);
    }
}
