//! Prometheus metrics of the data plane, registered under the `anymesh` prefix.
//!
//! Label sets are typed and bounded: service hostnames, route names and status
//! codes come from configuration and the catalog, never from request data.
//!
//! The resilience metrics ([`ResilienceCollector`]) are read at scrape time
//! from the counters the clusters' runtimes and balancers keep anyway, so
//! they add no work to the request path.

pub mod istio;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::balance::ActiveHealth;
use crate::health::HealthBoard;
use crate::resilience::breaker::Overflow;
use crate::resilience::outlier::OutlierVerdict;
use crate::resilience::runtime::ClusterRuntime;
use crate::router::{Router, Routing};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Destination service hostname, `-` for local replies without one.
    pub service: Arc<str>,
    /// Route name, `-` when no route matched.
    pub route: Arc<str>,
    pub code: u16,
}

/// A mirrored request, by the route that mirrored it and the mirror cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub route: Arc<str>,
    /// The mirror cluster (`outbound|<port>|<subset>|<host>`).
    pub cluster: Arc<str>,
    pub result: MirrorResult,
}

/// How a mirrored request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MirrorResult {
    /// Answered; responses are not compared on this route.
    Ok,
    /// Answered like the primary (status, compared headers, body hash).
    Match,
    /// Answered unlike the primary.
    Mismatch,
    /// The mirror failed (connect, protocol, timeout): no response.
    Error,
    /// Answered, but the primary failed or did not end in time: not compared.
    Uncompared,
}

impl MirrorResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorResult::Ok => "ok",
            MirrorResult::Match => "match",
            MirrorResult::Mismatch => "mismatch",
            MirrorResult::Error => "error",
            MirrorResult::Uncompared => "uncompared",
        }
    }
}

impl EncodeLabelValue for MirrorResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// A mirror that was drawn but not sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorSkipLabels {
    pub route: Arc<str>,
    pub cluster: Arc<str>,
    pub reason: MirrorSkip,
}

/// Why a mirror was not sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MirrorSkip {
    /// The request body is larger than the mirroring bound.
    BodyTooLarge,
    /// The request body streams (not read in full before forwarding).
    BodyStreaming,
    /// The proxy has as many mirrors in flight as it allows.
    InFlightLimit,
    /// The mirror cluster has no endpoint.
    NoEndpoint,
    /// The request head cannot be sent to the mirror (e.g. no authority).
    BadRequest,
}

impl MirrorSkip {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorSkip::BodyTooLarge => "body_too_large",
            MirrorSkip::BodyStreaming => "body_streaming",
            MirrorSkip::InFlightLimit => "in_flight_limit",
            MirrorSkip::NoEndpoint => "no_endpoint",
            MirrorSkip::BadRequest => "bad_request",
        }
    }
}

impl EncodeLabelValue for MirrorSkip {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Proxy metrics. Cheap to share (`Arc`).
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram>,
    pub route_table_version: Gauge,
    pub route_table_swaps: Counter,
    /// Mirrored requests by route, mirror cluster and result.
    pub mirror_responses: Family<MirrorLabels, Counter>,
    /// Mirrors drawn but not sent, by route, mirror cluster and reason.
    pub mirror_skipped: Family<MirrorSkipLabels, Counter>,
    /// Istio's standard metrics.
    pub istio: istio::IstioMetrics,
    /// The local workload and the trust domain, for Istio's labels (set by
    /// the binary from anymesh.yaml; `unknown` until then).
    pub local: arc_swap::ArcSwap<istio::LocalLabels>,
    /// The local workload's Telemetry policy in force (Istio's Telemetry
    /// API, recompiled by the binary when the config changes; every metric
    /// on, no override, until then). The standard metrics follow it; the
    /// access log and tracing read their side's settings from it too:
    /// `metrics.policy.load().sampling_percentage(Side::Client, default)`,
    /// `metrics.policy.load().access_log_enabled(Side::Server, configured)`
    /// ([`istio::policy::LocalTelemetry`] dereferences to core's
    /// `TelemetryPolicy`). Set it with [`Metrics::set_telemetry_policy`]
    /// (or `policy.set`). The same cell as `istio.policy`.
    pub policy: Arc<istio::policy::PolicyCell>,
    /// Tells this instance's entries in the per-thread handle cache apart.
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Identity of a label set by the addresses of its shared strings. Sound
/// because the cached value keeps those `Arc`s alive (no address reuse).
#[derive(PartialEq, Eq, Hash)]
struct HandleKey {
    metrics: u64,
    service: usize,
    route: usize,
    code: u16,
}

struct Handles {
    _labels: RequestLabels,
    requests: Counter,
    duration: Histogram,
}

/// Entries beyond this are dropped wholesale (route tables come and go).
const CACHE_LIMIT: usize = 4096;

thread_local! {
    // Skips the families' locked, SipHashed lookups on every request.
    static HANDLES: RefCell<HashMap<HandleKey, Handles, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under `anymesh_`.
    pub fn new(registry: &mut Registry) -> Self {
        let istio = istio::IstioMetrics::new(registry);
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 0.5 ms .. ~16 s.
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            route_table_version: Gauge::default(),
            route_table_swaps: Counter::default(),
            mirror_responses: Family::default(),
            mirror_skipped: Family::default(),
            policy: istio.policy.clone(),
            istio,
            local: arc_swap::ArcSwap::from_pointee(istio::LocalLabels::unknown()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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
        r.register(
            "mirror_responses",
            "Mirrored requests by route, mirror cluster and result (ok, match, mismatch, error, uncompared)",
            m.mirror_responses.clone(),
        );
        r.register(
            "mirror_skipped",
            "Mirrors drawn but not sent, by route, mirror cluster and reason",
            m.mirror_skipped.clone(),
        );
        m
    }

    /// Puts the local workload's Telemetry policy in force ([`Metrics::policy`]);
    /// returns whether it differs from the one in force.
    pub fn set_telemetry_policy(
        &self,
        policy: Arc<anymesh_core::telemetry::TelemetryPolicy>,
    ) -> bool {
        self.istio.set_policy(policy)
    }

    pub fn record(&self, labels: &RequestLabels, elapsed: Duration) {
        let key = HandleKey {
            metrics: self.id,
            service: Arc::as_ptr(&labels.service).cast::<u8>() as usize,
            route: Arc::as_ptr(&labels.route).cast::<u8>() as usize,
            code: labels.code,
        };
        HANDLES.with_borrow_mut(|cache| {
            if !cache.contains_key(&key) && cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            let h = cache.entry(key).or_insert_with(|| Handles {
                _labels: labels.clone(),
                requests: self.requests.get_or_create(labels).clone(),
                duration: self.duration.get_or_create(labels).clone(),
            });
            h.requests.inc();
            h.duration.observe(elapsed.as_secs_f64());
        });
    }
}

/// Retries, budget refusals, connection-pool overflows, outlier ejections
/// and endpoint health of the clusters of the route table in force, read
/// when scraped (under the registry's prefix, `anymesh_`):
///
/// - `upstream_retries_total{cluster}`: retries sent;
/// - `retry_budget_exhausted_total{cluster}`: retries refused by the budget;
/// - `upstream_retry_limit_exceeded_total{cluster}`: requests whose attempts
///   ran out while the last outcome was retriable;
/// - `upstream_overflow_total{cluster, limit}`: requests and retries refused
///   by a connection-pool limit (clusters with limits only);
/// - `upstream_pending_requests{cluster}`: requests waiting for a connection;
/// - `outlier_ejected_endpoints{cluster}`: endpoints ejected now, and
///   `outlier_ejections_total{cluster, endpoint}`: ejections of each
///   endpoint (clusters with outlier detection only);
/// - `endpoint_health{cluster, endpoint, source}`: 1 when the source lets
///   the endpoint take traffic, 0 when it takes it out; `source="outlier"`
///   for clusters with outlier detection, `source="active"` for endpoints an
///   active check covers.
///
/// Counters restart from zero when a cluster's connection pool or retry
/// budget changes (its runtime is rebuilt). Every label value comes from the
/// route table: cluster names and endpoint addresses from the registries.
pub struct ResilienceCollector {
    router: Arc<Router>,
    health: Option<Arc<HealthBoard>>,
}

impl ResilienceCollector {
    /// Reads `router`'s routing in force, and `health`'s probed endpoints.
    pub fn new(router: Arc<Router>, health: Option<Arc<HealthBoard>>) -> Self {
        Self { router, health }
    }
}

impl fmt::Debug for ResilienceCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceCollector")
            .field("health_checks", &self.health.is_some())
            .finish()
    }
}

/// One scrape's series, per metric.
#[derive(Default)]
struct Scrape<'a> {
    retries: Vec<([(&'static str, &'a str); 1], u64)>,
    budget_exhausted: Vec<([(&'static str, &'a str); 1], u64)>,
    limit_exceeded: Vec<([(&'static str, &'a str); 1], u64)>,
    overflow: Vec<([(&'static str, &'a str); 2], u64)>,
    pending: Vec<([(&'static str, &'a str); 1], u64)>,
    ejected: Vec<([(&'static str, &'a str); 1], u64)>,
    ejections: Vec<([(&'static str, &'a str); 2], u64)>,
    health: Vec<([(&'static str, &'a str); 3], u64)>,
}

impl Collector for ResilienceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let routing = self.router.current();
        Scrape::collect(&routing, self.health.as_deref()).encode(&mut encoder)
    }
}

impl<'a> Scrape<'a> {
    /// Every series of the clusters of `routing`.
    fn collect(routing: &'a Routing, health: Option<&HealthBoard>) -> Self {
        let mut s = Scrape::default();
        let mut seen = HashSet::new();
        for cluster in routing.table.clusters.iter() {
            let name = cluster.name.as_str();
            // The same name twice in one table shares one runtime.
            if !seen.insert(name) {
                continue;
            }
            if let Some(r) = routing.runtime(cluster) {
                s.add_runtime(name, r);
            }
            let Some(lb) = routing.lb(cluster) else {
                continue;
            };
            let outlier = cluster.policy.outlier.is_some();
            let mut ejected = 0;
            for (i, e) in cluster.endpoints.iter().enumerate() {
                let Some(v) = lb.verdicts(i) else { continue };
                let endpoint = e.authority.as_str();
                let probed = health.is_some_and(|b| b.get(endpoint).is_some());
                if probed || v.active != ActiveHealth::Unchecked {
                    let up = u64::from(v.active != ActiveHealth::Failing);
                    let labels = [
                        ("cluster", name),
                        ("endpoint", endpoint),
                        ("source", "active"),
                    ];
                    s.health.push((labels, up));
                }
                if !outlier {
                    continue;
                }
                let (up, count) = match v.outlier {
                    OutlierVerdict::Ejected(e) => {
                        ejected += 1;
                        (0, e.nth)
                    }
                    OutlierVerdict::Serving { ejections, .. } => (1, ejections),
                    OutlierVerdict::NotConfigured => (1, 0),
                };
                let labels = [
                    ("cluster", name),
                    ("endpoint", endpoint),
                    ("source", "outlier"),
                ];
                s.health.push((labels, up));
                s.ejections.push((
                    [("cluster", name), ("endpoint", endpoint)],
                    u64::from(count),
                ));
            }
            if outlier {
                s.ejected.push(([("cluster", name)], ejected));
            }
        }
        s
    }

    /// A cluster's retry, budget and limit counters.
    fn add_runtime(&mut self, name: &'a str, r: &ClusterRuntime) {
        let c = [("cluster", name)];
        self.retries.push((c, r.stats.retries()));
        self.budget_exhausted.push((c, r.budget.exhausted()));
        self.limit_exceeded.push((c, r.stats.limit_exceeded()));
        if !r.limits.is_unlimited() {
            for limit in Overflow::ALL {
                let labels = [("cluster", name), ("limit", limit.reason())];
                self.overflow.push((labels, r.limits.overflows(limit)));
            }
            self.pending.push((c, r.limits.pending()));
        }
    }

    /// Writes the series, one metric family after another.
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = self;
        counters(
            encoder,
            "upstream_retries",
            "Retries sent, by cluster",
            &s.retries,
        )?;
        counters(
            encoder,
            "retry_budget_exhausted",
            "Retries refused because the cluster's retry budget was spent",
            &s.budget_exhausted,
        )?;
        counters(
            encoder,
            "upstream_retry_limit_exceeded",
            "Requests whose attempts ran out while the last outcome was retriable",
            &s.limit_exceeded,
        )?;
        counters(
            encoder,
            "upstream_overflow",
            "Requests and retries refused by a connection-pool limit (503 x-envoy-overloaded), by limit",
            &s.overflow,
        )?;
        gauges(
            encoder,
            "upstream_pending_requests",
            "Requests waiting for a connection",
            &s.pending,
        )?;
        gauges(
            encoder,
            "outlier_ejected_endpoints",
            "Endpoints ejected by outlier detection now",
            &s.ejected,
        )?;
        counters(
            encoder,
            "outlier_ejections",
            "Ejections of each endpoint by outlier detection",
            &s.ejections,
        )?;
        gauges(
            encoder,
            "endpoint_health",
            "1 when the health source (active, outlier) lets the endpoint take traffic, 0 when it takes it out",
            &s.health,
        )
    }
}

pub(crate) fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> Result<(), fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

pub(crate) fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> Result<(), fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX))
            .encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn mirror_families_are_exposed_with_their_label_values() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let (route, cluster): (Arc<str>, Arc<str>) = ("r".into(), "outbound|80|v2|web".into());
        m.mirror_responses
            .get_or_create(&MirrorLabels {
                route: route.clone(),
                cluster: cluster.clone(),
                result: MirrorResult::Mismatch,
            })
            .inc();
        m.mirror_skipped
            .get_or_create(&MirrorSkipLabels {
                route,
                cluster,
                reason: MirrorSkip::BodyTooLarge,
            })
            .inc();
        let out = text(&registry);
        assert!(
            out.contains(r#"anymesh_mirror_responses_total{route="r",cluster="outbound|80|v2|web",result="mismatch"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"anymesh_mirror_skipped_total{route="r",cluster="outbound|80|v2|web",reason="body_too_large"} 1"#),
            "{out}"
        );
    }

    #[test]
    fn cached_handles_count_into_the_families() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let labels = |route: &str| RequestLabels {
            service: Arc::from("web"),
            route: Arc::from(route),
            code: 200,
        };
        let a = labels("r");
        for _ in 0..3 {
            m.record(&a, Duration::from_millis(1));
        }
        // Same strings in other allocations (a new route table): same series.
        m.record(&labels("r"), Duration::from_millis(1));
        m.record(&labels("other"), Duration::from_millis(1));
        let out = text(&registry);
        assert!(
            out.contains(r#"anymesh_requests_total{service="web",route="r",code="200"} 4"#),
            "{out}"
        );
        assert!(
            out.contains(r#"anymesh_requests_total{service="web",route="other",code="200"} 1"#),
            "{out}"
        );
        // A second instance on the same thread keeps its own counts.
        let mut registry2 = Registry::default();
        let m2 = Metrics::new(&mut registry2);
        m2.record(&a, Duration::from_millis(1));
        assert!(text(&registry2)
            .contains(r#"anymesh_requests_total{service="web",route="r",code="200"} 1"#));
        assert!(text(&registry).contains(r#"route="r",code="200"} 4"#));
    }
}
