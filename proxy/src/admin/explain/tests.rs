//! `/explain` and `/metrics` on a router whose cluster has an endpoint
//! ejected, retries sent and a limit overflowed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anymesh_core::config::load_str;
use anymesh_core::explain::live::{ActiveVerdict, EjectionCause, Fused, HealthMode, OutReason};
use anymesh_core::explain::{explain, Verdict};
use anymesh_core::routes::compile::compile;
use anymesh_core::{
    CatalogState, Change, Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol,
    Provenance, Service, ServicePort, Snapshot, SourceId, SourceView, SourcedChange,
};
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::live::add_live;
use super::{percent_decode, query_param};
use crate::admin::{encode_metrics, AdminState};
use crate::resilience::outlier::AttemptOutcome;
use crate::router::Router;

const CLUSTER: &str = "outbound|80||web";

const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  host: web\n  trafficPolicy:\n    connectionPool: {http: {http2MaxRequests: 1}}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";

fn endpoint(id: &str, address: &str) -> Endpoint {
    Endpoint {
        service: Hostname::new("web").unwrap(),
        address: address.into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 80,
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight: 1,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("file"),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    }
}

fn snapshot() -> Snapshot {
    let mut state = CatalogState::new([SourceId::new("file")]);
    let service = Service {
        hostname: Hostname::new("web").unwrap(),
        aliases: vec![],
        ports: vec![ServicePort {
            name: "http".into(),
            number: 80,
            protocol: Protocol::Http,
        }],
    };
    state.apply(SourcedChange {
        source: SourceId::new("file"),
        change: Change::Reset(SourceView {
            services: vec![service],
            endpoints: vec![endpoint("a", "10.0.0.1"), endpoint("b", "10.0.0.2")],
        }),
        at: SystemTime::now(),
    });
    state.snapshot(1)
}

/// A router with `web`'s table installed, 10.0.0.1 ejected after two 503s,
/// one retry sent and one request refused by `http2MaxRequests`.
fn router(snap: &Snapshot) -> Arc<Router> {
    let (set, diags) = load_str("routes.yaml", DR);
    assert!(diags.is_empty(), "{diags:?}");
    let table = compile(snap, &set, 1).0;
    let router = Arc::new(Router::new());
    router.install(Arc::new(table), true);
    let routing = router.current();
    let cluster = routing
        .table
        .clusters
        .iter()
        .find(|c| c.name == CLUSTER)
        .unwrap()
        .clone();
    let lb = routing.lb(&cluster).unwrap();
    let a = cluster
        .endpoints
        .iter()
        .position(|e| e.authority == "10.0.0.1:80")
        .unwrap();
    for _ in 0..2 {
        lb.report(
            a,
            AttemptOutcome::Response {
                status: 503,
                latency: Duration::from_millis(1),
            },
        );
    }
    let runtime = routing.runtime(&cluster).unwrap();
    let _retry = runtime.try_retry().unwrap();
    let first = runtime.limits.admit();
    let second = runtime.limits.admit();
    drop((first, second));
    router
}

#[test]
fn live_explanation_names_the_ejection_and_counts() {
    let snap = snapshot();
    let router = router(&snap);
    let routing = router.current();
    let mut x = explain(&snap, &routing.table, "web", &Default::default()).unwrap();
    let wall = SystemTime::now();
    add_live(&mut x, &routing, None, Instant::now(), wall);
    assert!(x.live);
    let c = x.clusters.iter().find(|c| c.name == CLUSTER).unwrap();
    let live = c.live.as_ref().unwrap();
    assert_eq!(live.counters.retries, 1);
    assert_eq!(live.counters.overflows.get("http2_max_requests"), Some(&1));
    assert_eq!((live.health.routable, live.health.endpoints), (1, 2));
    // Outlier detection set minHealthPercent to its default, 0: no panic.
    assert_eq!(live.health.mode, HealthMode::Normal);
    let ci = x.clusters.iter().position(|c| c.name == CLUSTER).unwrap();
    let a = x.endpoints.iter().find(|e| e.native_id == "a").unwrap();
    assert!(matches!(a.clusters[ci].verdict, Verdict::Eligible { .. }));
    let h = a.clusters[ci].health.as_ref().unwrap();
    assert_eq!(h.active.verdict, ActiveVerdict::Unchecked);
    assert_eq!(h.active.check, None);
    match &h.outlier {
        anymesh_core::explain::live::OutlierStatus::Ejected {
            until,
            cause,
            failures,
            nth,
            ..
        } => {
            assert_eq!(
                (*cause, *failures, *nth),
                (EjectionCause::Consecutive5xx, 2, 1)
            );
            let left = until.duration_since(wall).unwrap();
            assert!(
                left > Duration::from_secs(29) && left <= Duration::from_secs(30),
                "{left:?}"
            );
        }
        other => panic!("not ejected: {other:?}"),
    }
    assert_eq!(
        h.fused,
        Fused::Out {
            out: vec![OutReason::Ejected]
        }
    );
    let b = x.endpoints.iter().find(|e| e.native_id == "b").unwrap();
    let hb = b.clusters[ci].health.as_ref().unwrap();
    assert_eq!(hb.fused, Fused::Routable);
    let text = x.render(wall);
    assert!(
        text.contains("      outlier detection: ejected until ")
            && text.contains(" after 2 consecutive 5xx, 1st ejection (30s left)\n"),
        "{text}"
    );
    assert!(
        text.contains("      => not routable: ejected by outlier detection\n"),
        "{text}"
    );
}

#[test]
fn metrics_are_read_from_the_routing_at_scrape_time() {
    let snap = snapshot();
    let router = router(&snap);
    let state = AdminState {
        identity: None,
        inbound: None,
        local: Default::default(),
        router,
        catalog: watch::channel(Arc::new(snap)).1,
        registry: Registry::default(),
        diagnostics: Arc::new(ArcSwap::from_pointee(Vec::new())),
        compile_warnings: Arc::new(ArcSwap::from_pointee(Vec::new())),
        ready: watch::channel(true).1,
        health: None,
        telemetry: Arc::default(),
    };
    let mut out = String::new();
    encode_metrics(&mut out, &state).unwrap();
    for line in [
        r#"anymesh_upstream_retries_total{cluster="outbound|80||web"} 1"#,
        r#"anymesh_retry_budget_exhausted_total{cluster="outbound|80||web"} 0"#,
        r#"anymesh_upstream_overflow_total{cluster="outbound|80||web",limit="http2_max_requests"} 1"#,
        r#"anymesh_upstream_overflow_total{cluster="outbound|80||web",limit="max_retries"} 0"#,
        r#"anymesh_outlier_ejected_endpoints{cluster="outbound|80||web"} 1"#,
        r#"anymesh_outlier_ejections_total{cluster="outbound|80||web",endpoint="10.0.0.1:80"} 1"#,
        r#"anymesh_outlier_ejections_total{cluster="outbound|80||web",endpoint="10.0.0.2:80"} 0"#,
        r#"anymesh_endpoint_health{cluster="outbound|80||web",endpoint="10.0.0.1:80",source="outlier"} 0"#,
        r#"anymesh_endpoint_health{cluster="outbound|80||web",endpoint="10.0.0.2:80",source="outlier"} 1"#,
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    // No active check: no active series.
    assert!(!out.contains(r#"source="active""#), "{out}");
    assert_eq!(out.matches("# EOF").count(), 1, "{out}");
    assert!(out.ends_with("# EOF\n"), "{out}");
}

#[test]
fn query_parameters() {
    assert_eq!(
        query_param("x=1&host=reviews%3A9080", "host").as_deref(),
        Some("reviews:9080")
    );
    assert_eq!(query_param("host=&host=a", "host").as_deref(), Some("a"));
    assert_eq!(query_param("hostname=a", "host"), None);
    assert_eq!(query_param("", "host"), None);
    assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
}
