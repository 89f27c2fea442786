//! The `telemetry` key of anymesh.yaml: the access log and the tracer
//! (Istio's standard metrics are always on; the Telemetry API tunes them).
//!
//! ```yaml
//! telemetry:
//!   access_log:                  # absent: no access log
//!     path: /var/log/anymesh/access.log   # absent: stdout
//!     format: json               # text (Istio's default) | envoy | json
//!     filter: {status: [5xx], sample_percent: 100}
//!     max_size: 104857600        # rotate at 100 MiB (or reopen on SIGHUP)
//!   tracing:                     # absent: no spans, trace headers pass untouched
//!     sampling: 1                # percent, Istio's default
//!     zipkin: http://zipkin:9411
//!     otlp_grpc: http://otel-collector:4317
//!     otlp_http: http://otel-collector:4318
//! ```
//!
//! The fields of each are documented in docs/telemetry.md and on
//! [`AccessLogConfig`] and [`TracingConfig`].

use anymesh_telemetry::access_log::AccessLogConfig;
use anymesh_telemetry::trace::TracingConfig;
use serde::Deserialize;

/// Access log and tracing settings; both off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where and how exchanges are logged; `None`: not logged.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Where spans go and how requests are sampled; `None`: no tracing.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
}
