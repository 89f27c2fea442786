//! Prometheus metrics of the data plane, registered under the `anymesh` prefix.
//!
//! Label sets are typed and bounded: service hostnames, route names and status
//! codes come from configuration and the catalog, never from request data.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 0.5 ms .. ~16 s.
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            route_table_version: Gauge::default(),
            route_table_swaps: Counter::default(),
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
        m
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
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
