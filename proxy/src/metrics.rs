//! Prometheus metrics of the data plane, registered under the `anymesh` prefix.
//!
//! Label sets are typed and bounded: service hostnames, route names and status
//! codes come from configuration and the catalog, never from request data.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Destination service hostname, `-` for local replies without one.
    pub service: Arc<str>,
    /// Route name, `-` when no route matched.
    pub route: Arc<str>,
    pub code: u16,
}

/// Proxy metrics. Cheap to share (`Arc`).
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram>,
    pub route_table_version: Gauge,
    pub route_table_swaps: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under `anymesh_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 0.5 ms .. ~16 s.
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            route_table_version: Gauge::default(),
            route_table_swaps: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("anymesh");
        r.register(
            "requests",
            "Requests handled by the outbound listener",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request received to response headers sent",
            m.duration.clone(),
        );
        r.register(
            "route_table_version",
            "Version of the route table in force",
            m.route_table_version.clone(),
        );
        r.register(
            "route_table_swaps",
            "Route tables installed",
            m.route_table_swaps.clone(),
        );
        m
    }

    pub fn record(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }
}
