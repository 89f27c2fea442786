//! Istio's own Bookinfo samples for the fault-injection task load without a
//! warning and compile to what the task describes: after "all v1" and
//! "reviews test v2", requests from `jason` go to reviews v2 and everyone
//! else's to v1; the delay sample delays jason's ratings requests by 7s
//! (all of them), the abort sample answers them with HTTP 500 (all of
//! them); other users' ratings requests are left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anymesh_core::config::{parse_str, ConfigSet, Diagnostic};
use anymesh_core::routes::compile::compile;
use anymesh_core::routes::{
    AbortStatus, FaultAbort, FaultDelay, FaultPolicy, RequestInfo, RetryPolicy, Route, RouteAction,
    RouteTable,
};
use anymesh_core::{
    CatalogState, Change, Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol,
    Provenance, Service, ServicePort, SourceId, SourceView, SourcedChange,
};
use http::{HeaderMap, HeaderValue};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio-bookinfo")
        .join(name)
}

/// Applies files in order as `kubectl apply` would: a resource replaces an
/// earlier one of the same kind, namespace and name. Returns every finding.
fn apply(files: &[&str]) -> (ConfigSet, Vec<Diagnostic>) {
    let mut set = ConfigSet::default();
    let mut diagnostics = Vec::new();
    for name in files {
        let path = fixture(name);
        let text = std::fs::read_to_string(&path).expect("fixture");
        let (new, d) = parse_str(&path.display().to_string(), &text);
        diagnostics.extend(d);
        for vs in new.virtual_services {
            set.virtual_services.retain(|v| v.id() != vs.id());
            set.virtual_services.push(vs);
        }
        for dr in new.destination_rules {
            set.destination_rules.retain(|d| d.id() != dr.id());
            set.destination_rules.push(dr);
        }
    }
    diagnostics.extend(set.retain_valid());
    (set, diagnostics)
}

/// Bookinfo's four services on port 9080, with endpoints per version.
fn bookinfo() -> anymesh_core::Snapshot {
    let source = SourceId::new("file");
    let services = ["productpage", "reviews", "ratings", "details"]
        .map(|name| Service {
            hostname: Hostname::new(name).expect("hostname"),
            aliases: Vec::new(),
            ports: vec![ServicePort {
                name: "http".into(),
                number: 9080,
                protocol: Protocol::Http,
            }],
        })
        .to_vec();
    let mut endpoints = Vec::new();
    for (i, (svc, version)) in [
        ("productpage", "v1"),
        ("reviews", "v1"),
        ("reviews", "v2"),
        ("reviews", "v3"),
        ("ratings", "v1"),
        ("details", "v1"),
    ]
    .into_iter()
    .enumerate()
    {
        endpoints.push(Endpoint {
            service: Hostname::new(svc).expect("hostname"),
            address: format!("10.0.0.{}", i + 1),
            ports: vec![EndpointPort {
                name: "http".into(),
                number: 9080,
            }],
            labels: Labels::from([("version".to_string(), version.to_string())]),
            health: Health::Healthy,
            weight: 1,
            locality: Locality::default(),
            mesh: None,
            provenance: Provenance {
                source: source.clone(),
                native_id: format!("{svc}-{version}"),
                raw_labels: Labels::new(),
            },
        });
    }
    let mut state = CatalogState::new([source.clone()]);
    state.apply(SourcedChange {
        source,
        change: Change::Reset(SourceView {
            services,
            endpoints,
        }),
        at: SystemTime::now(),
    });
    state.snapshot(1)
}

/// The route a request to `host` (as `user`, if any) takes.
fn route<'t>(table: &'t RouteTable, host: &str, user: Option<&str>) -> &'t Route {
    let mut headers = HeaderMap::new();
    if let Some(u) = user {
        headers.insert("end-user", HeaderValue::from_str(u).expect("value"));
    }
    let req = RequestInfo {
        method: "GET",
        authority: host,
        path: "/ratings/0",
        query: None,
        headers: &headers,
    };
    match table.route(&req) {
        Ok(hit) => hit.route,
        Err(miss) => panic!("{host}: {miss:?}"),
    }
}

/// The one cluster a route forwards to.
fn cluster(r: &Route) -> &str {
    match &r.action {
        RouteAction::Forward(split) => match split.targets.as_slice() {
            [only] => &only.cluster.name,
            other => panic!("several targets: {other:?}"),
        },
        other => panic!("not forwarded: {other:?}"),
    }
}

const BASE: [&str; 3] = [
    "destination-rule-all.yaml",
    "virtual-service-all-v1.yaml",
    "virtual-service-reviews-test-v2.yaml",
];

/// Loads the base routing plus `fault`, with no findings at all, and
/// compiles it with no findings.
fn table_with(fault: &str) -> RouteTable {
    let mut files = BASE.to_vec();
    files.push(fault);
    let (set, diagnostics) = apply(&files);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert_eq!(
        (set.virtual_services.len(), set.destination_rules.len()),
        (4, 4)
    );
    let (table, diagnostics) = compile(&bookinfo(), &set, 1);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    table
}

#[test]
fn request_routing_sends_jason_to_reviews_v2() {
    let table = table_with("virtual-service-ratings-test-delay.yaml");
    assert_eq!(
        cluster(route(&table, "reviews", Some("jason"))),
        "outbound|9080|v2|reviews"
    );
    assert_eq!(
        cluster(route(&table, "reviews", Some("mary"))),
        "outbound|9080|v1|reviews"
    );
    assert_eq!(
        cluster(route(&table, "reviews", None)),
        "outbound|9080|v1|reviews"
    );
    for host in ["productpage", "details"] {
        assert_eq!(
            cluster(route(&table, host, None)),
            format!("outbound|9080|v1|{host}")
        );
    }
}

#[test]
fn the_delay_sample_delays_jason_by_7s_every_time() {
    let table = table_with("virtual-service-ratings-test-delay.yaml");
    let jason = route(&table, "ratings", Some("jason"));
    assert_eq!(
        jason.fault,
        Some(FaultPolicy {
            delay: Some(FaultDelay {
                fixed: Duration::from_secs(7),
                percentage: 100.0,
            }),
            abort: None,
        })
    );
    assert_eq!(cluster(jason), "outbound|9080|v1|ratings");
    assert_eq!(jason.retry, RetryPolicy::istio_default());
    let other = route(&table, "ratings", Some("mary"));
    assert_eq!(other.fault, None);
    assert_eq!(cluster(other), "outbound|9080|v1|ratings");
}

#[test]
fn the_abort_sample_answers_jason_with_500_every_time() {
    let table = table_with("virtual-service-ratings-test-abort.yaml");
    let jason = route(&table, "ratings", Some("jason"));
    assert_eq!(
        jason.fault,
        Some(FaultPolicy {
            delay: None,
            abort: Some(FaultAbort {
                status: AbortStatus::Http(500),
                percentage: 100.0,
            }),
        })
    );
    assert_eq!(cluster(jason), "outbound|9080|v1|ratings");
    assert_eq!(route(&table, "ratings", None).fault, None);
}
