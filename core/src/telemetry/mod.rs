//! Compiled telemetry policy: Istio's `telemetry.istio.io` `Telemetry`
//! resources in the form the proxy reads.
//!
//! [`TelemetryPolicies::compile`] takes a loaded [`crate::config::ConfigSet`]
//! once per config change; [`TelemetryPolicies::for_workload`] answers a
//! local workload's [`TelemetryPolicy`] (computed at compile time and
//! shared, so the lookup is a short scan and an `Arc` clone): per side
//! ([`Side::Client`] for outbound requests, [`Side::Server`] for inbound
//! ones), which standard metrics are on and their tag overrides, the trace
//! sampling percentage and whether access logs are written. Everything here
//! is pure: no I/O.
//!
//! Levels compose as Istio composes them (`pilot/pkg/model/telemetry.go`):
//! the root namespace's Telemetry without a selector, then the workload
//! namespace's one without a selector, then the first Telemetry of the
//! workload's namespace whose selector matches its labels; a later level
//! overrides an earlier one field by field (metrics deeply: per metric,
//! side and tag). Where Istio takes the oldest resource of a level, anymesh
//! takes the first in load order.

mod merge;
mod policies;

use std::collections::BTreeMap;

pub use policies::TelemetryPolicies;

/// The provider anymesh's metrics are exported as: Istio's built-in
/// Prometheus provider. Metrics entries naming only other providers do not
/// change anymesh's metrics (and turn them off, as in Istio, when the last
/// level naming providers leaves this one out).
pub const PROMETHEUS_PROVIDER: &str = "prometheus";

/// The side of a request a setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The outbound side (Istio's `CLIENT` mode, `reporter="source"`).
    Client,
    /// The inbound side (Istio's `SERVER` mode, `reporter="destination"`).
    Server,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Client, Side::Server];
}

/// Istio's standard metrics (`match.metric` without `ALL_METRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StandardMetric {
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

impl StandardMetric {
    pub const COUNT: usize = 10;

    /// Every standard metric, in [`StandardMetric::index`] order.
    pub const ALL: [StandardMetric; StandardMetric::COUNT] = [
        StandardMetric::RequestCount,
        StandardMetric::RequestDuration,
        StandardMetric::RequestSize,
        StandardMetric::ResponseSize,
        StandardMetric::TcpOpenedConnections,
        StandardMetric::TcpClosedConnections,
        StandardMetric::TcpSentBytes,
        StandardMetric::TcpReceivedBytes,
        StandardMetric::GrpcRequestMessages,
        StandardMetric::GrpcResponseMessages,
    ];

    /// Position in [`StandardMetric::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in Istio's Telemetry API (`REQUEST_COUNT`).
    pub fn istio_name(self) -> &'static str {
        match self {
            StandardMetric::RequestCount => "REQUEST_COUNT",
            StandardMetric::RequestDuration => "REQUEST_DURATION",
            StandardMetric::RequestSize => "REQUEST_SIZE",
            StandardMetric::ResponseSize => "RESPONSE_SIZE",
            StandardMetric::TcpOpenedConnections => "TCP_OPENED_CONNECTIONS",
            StandardMetric::TcpClosedConnections => "TCP_CLOSED_CONNECTIONS",
            StandardMetric::TcpSentBytes => "TCP_SENT_BYTES",
            StandardMetric::TcpReceivedBytes => "TCP_RECEIVED_BYTES",
            StandardMetric::GrpcRequestMessages => "GRPC_REQUEST_MESSAGES",
            StandardMetric::GrpcResponseMessages => "GRPC_RESPONSE_MESSAGES",
        }
    }

    /// The Prometheus name without the `istio_` prefix, which is also how
    /// `match.customMetric` names a standard metric (`requests_total`).
    pub fn short_name(self) -> &'static str {
        match self {
            StandardMetric::RequestCount => "requests_total",
            StandardMetric::RequestDuration => "request_duration_milliseconds",
            StandardMetric::RequestSize => "request_bytes",
            StandardMetric::ResponseSize => "response_bytes",
            StandardMetric::TcpOpenedConnections => "tcp_connections_opened_total",
            StandardMetric::TcpClosedConnections => "tcp_connections_closed_total",
            StandardMetric::TcpSentBytes => "tcp_sent_bytes_total",
            StandardMetric::TcpReceivedBytes => "tcp_received_bytes_total",
            StandardMetric::GrpcRequestMessages => "request_messages_total",
            StandardMetric::GrpcResponseMessages => "response_messages_total",
        }
    }

    /// The metric a `customMetric` names, by [`StandardMetric::short_name`]
    /// (the `istio_` prefix is accepted too).
    pub fn from_short_name(name: &str) -> Option<StandardMetric> {
        let name = name.strip_prefix("istio_").unwrap_or(name);
        StandardMetric::ALL
            .into_iter()
            .find(|m| m.short_name() == name)
    }
}

/// What a tag override does to one label of a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagAction {
    /// The label is left out of the metric.
    Remove,
    /// The label is set to this fixed value (added when not a standard one).
    Upsert(String),
}

/// One standard metric on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPolicy {
    pub enabled: bool,
    /// Tag (label) overrides, sorted by tag name, one per tag.
    pub tags: Vec<(String, TagAction)>,
}

impl Default for MetricPolicy {
    fn default() -> Self {
        MetricPolicy {
            enabled: true,
            tags: Vec::new(),
        }
    }
}

impl MetricPolicy {
    /// Whether the tag is removed from this metric.
    pub fn removes(&self, tag: &str) -> bool {
        self.action(tag) == Some(&TagAction::Remove)
    }

    /// The override of one tag, if any.
    pub fn action(&self, tag: &str) -> Option<&TagAction> {
        self.tags
            .binary_search_by(|(t, _)| t.as_str().cmp(tag))
            .ok()
            .map(|i| &self.tags[i].1)
    }

    /// The tags removed, in name order.
    pub fn removed(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .filter(|(_, a)| *a == TagAction::Remove)
            .map(|(t, _)| t.as_str())
    }

    /// The tags set to a fixed value, in name order.
    pub fn upserted(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().filter_map(|(t, a)| match a {
            TagAction::Upsert(v) => Some((t.as_str(), v.as_str())),
            TagAction::Remove => None,
        })
    }

    pub(crate) fn from_map(enabled: bool, tags: BTreeMap<String, TagAction>) -> MetricPolicy {
        MetricPolicy {
            enabled,
            tags: tags.into_iter().collect(),
        }
    }
}

/// Tracing on one side.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TracingPolicy {
    /// `randomSamplingPercentage` (0–100); `None`: the mesh's default.
    pub random_sampling_percentage: Option<f64>,
    /// `disableSpanReporting`: spans are not exported (the trace context
    /// is still propagated).
    pub span_reporting_disabled: bool,
    /// The first provider named; `None`: anymesh's configured exporter.
    pub provider: Option<String>,
    /// `customTags` with a `literal` value, sorted by name.
    pub custom_tags: Vec<(String, String)>,
}

impl TracingPolicy {
    /// The sampling percentage in force: the Telemetry's, else the mesh's.
    pub fn sampling_percentage(&self, mesh_default: f64) -> f64 {
        self.random_sampling_percentage.unwrap_or(mesh_default)
    }
}

/// Access logging on one side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessLogPolicy {
    /// `None`: no Telemetry says anything, anymesh.yaml's setting applies;
    /// `Some(false)`: `disabled: true` (or the filter `false`).
    pub enabled: Option<bool>,
    /// The providers of the entry that decided (names only: anymesh has one
    /// access log, whichever provider is named).
    pub providers: Vec<String>,
}

impl AccessLogPolicy {
    /// Whether to log, given anymesh.yaml's setting.
    pub fn is_enabled(&self, configured: bool) -> bool {
        self.enabled.unwrap_or(configured)
    }
}

/// Everything for one side of a workload's traffic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SidePolicy {
    /// Indexed by [`StandardMetric::index`].
    pub metrics: [MetricPolicy; StandardMetric::COUNT],
    pub tracing: TracingPolicy,
    pub access_log: AccessLogPolicy,
}

impl SidePolicy {
    pub fn metric(&self, metric: StandardMetric) -> &MetricPolicy {
        &self.metrics[metric.index()]
    }
}

/// The telemetry settings of one local workload, both sides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetryPolicy {
    pub client: SidePolicy,
    pub server: SidePolicy,
    /// `namespace/name` of the Telemetry resources applied, root first.
    pub sources: Vec<String>,
}

impl TelemetryPolicy {
    pub fn side(&self, side: Side) -> &SidePolicy {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// Shorthand for `side(side).metric(metric)`.
    pub fn metric(&self, side: Side, metric: StandardMetric) -> &MetricPolicy {
        self.side(side).metric(metric)
    }

    /// Whether the metric is recorded on that side.
    pub fn metric_enabled(&self, side: Side, metric: StandardMetric) -> bool {
        self.metric(side, metric).enabled
    }

    /// The trace sampling percentage on that side, else `mesh_default`.
    pub fn sampling_percentage(&self, side: Side, mesh_default: f64) -> f64 {
        self.side(side).tracing.sampling_percentage(mesh_default)
    }

    /// Whether access logs are written on that side, given anymesh.yaml's
    /// setting.
    pub fn access_log_enabled(&self, side: Side, configured: bool) -> bool {
        self.side(side).access_log.is_enabled(configured)
    }

    pub(crate) fn side_mut(&mut self, side: Side) -> &mut SidePolicy {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }
}
