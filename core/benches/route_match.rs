//! Route matching cost: `RouteTable::route` for a plain host, a header-regex
//! route with a 95/5 split behind it, a miss, and a table of 500 services.
//!
//! `cargo bench -p anymesh-core --bench route_match`

use std::hint::black_box;
use std::time::SystemTime;

use anymesh_core::catalog::CatalogState;
use anymesh_core::config;
use anymesh_core::routes::compile::compile;
use anymesh_core::routes::{RequestInfo, RouteTable};
use anymesh_core::{
    Change, Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance,
    Service, ServicePort, SourceId, SourceView, SourcedChange,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: iphone
    match:
    - headers:
        user-agent: {regex: ".*iPhone.*"}
    route:
    - destination: {host: reviews, subset: v2}
  - name: canary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 95
    - destination: {host: reviews, subset: v2}
      weight: 5
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// A catalog of `reviews` plus `extra_services` services, each with a v1 and
/// a v2 endpoint, compiled with [`ROUTES`].
fn table(extra_services: usize) -> RouteTable {
    let source = SourceId::new("file");
    let mut view = SourceView::default();
    let names = std::iter::once("reviews".to_string())
        .chain((0..extra_services).map(|i| format!("svc-{i}")));
    for name in names {
        let hostname = Hostname::new(&name).expect("hostname");
        view.services.push(Service {
            hostname: hostname.clone(),
            aliases: vec![],
            ports: vec![ServicePort {
                name: "http".into(),
                number: 80,
                protocol: Protocol::Http,
            }],
        });
        for (address, version) in [("10.0.0.1", "v1"), ("10.0.0.2", "v2")] {
            view.endpoints.push(Endpoint {
                service: hostname.clone(),
                address: address.into(),
                ports: vec![EndpointPort {
                    name: String::new(),
                    number: 8080,
                }],
                labels: Labels::from([("version".to_string(), version.to_string())]),
                health: Health::Healthy,
                weight: 1,
                locality: Locality::default(),
                mesh: None,
                provenance: Provenance {
                    source: source.clone(),
                    native_id: format!("{name}/{address}"),
                    raw_labels: Labels::new(),
                },
            });
        }
    }
    let mut state = CatalogState::new([source.clone()]);
    state.apply(SourcedChange {
        source,
        change: Change::Reset(view),
        at: SystemTime::now(),
    });
    let (set, diags) = config::load_str("routes.yaml", ROUTES);
    assert!(!config::has_errors(&diags), "{diags:?}");
    compile(&state.snapshot(1), &set, 1).0
}

fn bench(c: &mut Criterion) {
    let small = table(0);
    let large = table(500);
    let plain = HeaderMap::new();
    let mut iphone = HeaderMap::new();
    iphone.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"),
    );
    let mut curl = HeaderMap::new();
    curl.insert("user-agent", HeaderValue::from_static("curl/8.4.0"));
    let req = |authority, headers| RequestInfo {
        method: "GET",
        authority,
        path: "/api/v1/items",
        query: Some("page=2"),
        headers,
    };

    // Each case routes as its name says (checked once, outside the timing).
    let route_of =
        |t: &RouteTable, r: RequestInfo<'_>| t.route(&r).map(|h| h.route.name.to_string()).ok();
    assert_eq!(
        route_of(&large, req("svc-1", &plain)).as_deref(),
        Some("default")
    );
    assert_eq!(
        route_of(&small, req("reviews", &iphone)).as_deref(),
        Some("iphone")
    );
    assert_eq!(
        route_of(&small, req("reviews", &curl)).as_deref(),
        Some("canary")
    );
    assert_eq!(route_of(&small, req("nowhere.example", &plain)), None);
    assert_eq!(
        route_of(&large, req("svc-250:80", &plain)).as_deref(),
        Some("default")
    );

    let mut g = c.benchmark_group("route");
    g.bench_function("default_route", |b| {
        b.iter(|| black_box(large.route(&req("svc-1", &plain)).is_ok()))
    });
    g.bench_function("header_regex_hit", |b| {
        b.iter(|| black_box(small.route(&req("reviews", &iphone)).is_ok()))
    });
    g.bench_function("header_regex_miss_then_split", |b| {
        b.iter(|| black_box(small.route(&req("reviews", &curl)).is_ok()))
    });
    g.bench_function("unknown_host", |b| {
        b.iter(|| black_box(small.route(&req("nowhere.example", &plain)).is_err()))
    });
    g.bench_function("500_services_with_port", |b| {
        b.iter(|| black_box(large.route(&req("svc-250:80", &plain)).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
