//! A two-source catalog compiled with subsets, explained.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::catalog::CatalogState;
use crate::config::load_str;
use crate::model::{Endpoint, Protocol, Provenance, Service};
use crate::registry::{Change, SourceStatus, SourceView, SourcedChange};
use crate::routes::compile::compile;

fn host(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ep(source: &str, id: &str, addr: &str, version: &str, health: Health) -> Endpoint {
    Endpoint {
        service: host("reviews"),
        address: addr.into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 9080,
        }],
        labels: labels(&[("version", version)]),
        health,
        weight: 1,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new(source),
            native_id: id.into(),
            raw_labels: labels(&[("version", version)]),
        },
    }
}

const T0: Duration = Duration::from_secs(1_700_000_000);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + T0 + Duration::from_secs(secs)
}

fn apply(state: &mut CatalogState, source: &str, change: Change, secs: u64) {
    state.apply(SourcedChange {
        source: SourceId::new(source),
        change,
        at: at(secs),
    });
}

/// `file` (first) and `etcd` both serve `reviews`; etcd has a duplicate of
/// 10.0.0.1, an endpoint whose registry label was mapped, and then fails.
fn catalog(with_late_endpoint: bool) -> Snapshot {
    let mut state = CatalogState::new([SourceId::new("file"), SourceId::new("etcd")]);
    let svc = Service {
        hostname: host("reviews"),
        aliases: vec![host("reviews.default")],
        ports: vec![ServicePort {
            name: "http".into(),
            number: 9080,
            protocol: Protocol::Http,
        }],
    };
    let mut file = vec![
        ep("file", "r1", "10.0.0.1", "v1", Health::Healthy),
        ep("file", "r2", "10.0.0.2", "v2", Health::Unhealthy),
        ep("file", "r3", "10.0.0.3", "v2", Health::Draining),
        ep("file", "r4", "10.0.0.4", "v2", Health::Healthy),
    ];
    if with_late_endpoint {
        file.push(ep("file", "r9", "10.0.0.9", "v1", Health::Healthy));
    }
    let mut mapped = ep(
        "etcd",
        "/svc/reviews/10.0.0.5",
        "10.0.0.5",
        "v3",
        Health::Healthy,
    );
    mapped.provenance.raw_labels = labels(&[("ver", "v3")]);
    let etcd = vec![
        ep(
            "etcd",
            "/svc/reviews/10.0.0.1",
            "10.0.0.1",
            "v1",
            Health::Healthy,
        ),
        mapped,
    ];
    let view = |services, endpoints| {
        Change::Reset(SourceView {
            services,
            endpoints,
        })
    };
    apply(&mut state, "file", view(vec![svc.clone()], file), 0);
    apply(&mut state, "etcd", view(vec![svc], etcd), 0);
    let down = SourceStatus::Error {
        message: "connection refused".into(),
    };
    apply(&mut state, "etcd", Change::Status(down), 10);
    state.snapshot(if with_late_endpoint { 4 } else { 3 })
}

const ROUTES: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v2}\n      weight: 10\n";

fn table(snapshot: &Snapshot) -> RouteTable {
    let (set, diags) = load_str("routes.yaml", ROUTES);
    assert!(diags.is_empty(), "{diags:?}");
    compile(snapshot, &set, 5).0
}

fn verdict<'e>(x: &'e Explanation, id: &str, cluster: &str) -> &'e Verdict {
    let e = x.endpoints.iter().find(|e| e.native_id == id).unwrap();
    &e.clusters
        .iter()
        .find(|v| v.cluster == cluster)
        .unwrap()
        .verdict
}

mod live;
mod transport;

const V1: &str = "outbound|9080|v1|reviews";
const V2: &str = "outbound|9080|v2|reviews";

#[test]
fn every_endpoint_gets_a_verdict_per_cluster() {
    let snap = catalog(false);
    let x = explain(&snap, &table(&snap), "reviews", &LocalProxy::default()).unwrap();
    let names: Vec<&str> = x.clusters.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&V1) && names.contains(&V2), "{names:?}");
    assert_eq!(
        x.service.sources,
        [SourceId::new("file"), SourceId::new("etcd")]
    );
    assert_eq!(
        x.endpoints.len(),
        5,
        "the etcd duplicate is shadowed, not listed"
    );
    // Eligible.
    assert_eq!(
        verdict(&x, "r1", V1),
        &Verdict::Eligible {
            authority: "10.0.0.1:9080".into(),
            weight: 1,
            draining_fallback: false
        }
    );
    assert_eq!(
        verdict(&x, "r4", V2),
        &Verdict::Eligible {
            authority: "10.0.0.4:9080".into(),
            weight: 1,
            draining_fallback: false
        }
    );
    // Label mismatch names the missing label.
    assert_eq!(
        verdict(&x, "r1", V2),
        &Verdict::Excluded {
            reason: ExclusionReason::LabelMismatch {
                missing: labels(&[("version", "v2")])
            }
        }
    );
    // Unhealthy; draining while a healthy v2 exists.
    assert_eq!(
        verdict(&x, "r2", V2),
        &Verdict::Excluded {
            reason: ExclusionReason::Unhealthy
        }
    );
    assert_eq!(
        verdict(&x, "r3", V2),
        &Verdict::Excluded {
            reason: ExclusionReason::Draining
        }
    );
}

#[test]
fn labels_before_and_after_mapping_and_the_shadowed_duplicate() {
    let snap = catalog(false);
    let x = explain(&snap, &table(&snap), "reviews", &LocalProxy::default()).unwrap();
    let mapped = x
        .endpoints
        .iter()
        .find(|e| e.native_id == "/svc/reviews/10.0.0.5")
        .unwrap();
    assert_eq!(mapped.raw_labels, labels(&[("ver", "v3")]));
    assert_eq!(mapped.labels, labels(&[("version", "v3")]));
    assert_eq!(x.shadowed.len(), 1);
    let s = &x.shadowed[0];
    assert_eq!(s.endpoint.to_string(), "etcd:/svc/reviews/10.0.0.1");
    assert_eq!(s.by.to_string(), "file:r1");
    assert_eq!(s.address.as_deref(), Some("10.0.0.1"));
    let text = x.render(at(40));
    assert!(text.contains("registry labels: ver=v3"), "{text}");
    assert!(text.contains("mapped labels:   version=v3"), "{text}");
    assert!(
        text.contains("etcd:/svc/reviews/10.0.0.1  hidden by file:r1 (10.0.0.1)"),
        "{text}"
    );
}

#[test]
fn stale_source_state_is_shown() {
    let snap = catalog(false);
    let x = explain(&snap, &table(&snap), "reviews", &LocalProxy::default()).unwrap();
    let etcd = x
        .sources
        .iter()
        .find(|s| s.source.as_str() == "etcd")
        .unwrap();
    assert!(etcd.synced && !etcd.connected);
    assert_eq!(etcd.stale_since, Some(at(10)));
    assert_eq!(etcd.last_error.as_deref(), Some("connection refused"));
    let text = x.render(at(40));
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("etcd "))
        .unwrap();
    assert!(
        line.contains("not connected; STALE since 2023-11-14T22:13:30Z (30s ago)"),
        "{line}"
    );
    assert!(line.ends_with("last error: connection refused"), "{line}");
}

#[test]
fn draining_is_eligible_when_nothing_is_healthy() {
    let mut state = CatalogState::new([SourceId::new("file")]);
    let only = ep("file", "d1", "10.0.0.7", "v1", Health::Draining);
    apply(
        &mut state,
        "file",
        Change::Reset(SourceView {
            services: Vec::new(),
            endpoints: vec![only],
        }),
        0,
    );
    let snap = state.snapshot(1);
    let x = explain(&snap, &table(&snap), "reviews", &LocalProxy::default()).unwrap();
    assert!(matches!(
        verdict(&x, "d1", V1),
        Verdict::Eligible {
            draining_fallback: true,
            ..
        }
    ));
    assert!(x
        .render(at(1))
        .contains("used because no endpoint is healthy"));
}

#[test]
fn lookup_by_alias_and_port_and_misses() {
    let snap = catalog(false);
    let table = table(&snap);
    let x = explain(
        &snap,
        &table,
        "Reviews.Default:9080",
        &LocalProxy::default(),
    )
    .unwrap();
    assert_eq!(x.service.hostname, host("reviews"));
    assert_eq!(x.service.requested_port, Some(9080));
    let other_port = explain(&snap, &table, "reviews:80", &LocalProxy::default()).unwrap();
    assert!(other_port.clusters.is_empty());
    match explain(&snap, &table, "reveiws", &LocalProxy::default()) {
        Err(e @ ExplainError::NoService { .. }) => {
            assert_eq!(
                e.to_string(),
                "no service named 'reveiws'; did you mean reviews?"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        explain(&snap, &table, "reviews:http", &LocalProxy::default()),
        Err(ExplainError::InvalidHost { .. })
    ));
}

#[test]
fn a_table_from_an_older_catalog_marks_new_endpoints_absent() {
    let old = catalog(false);
    let table = table(&old);
    let new = catalog(true);
    let x = explain(&new, &table, "reviews", &LocalProxy::default()).unwrap();
    assert_eq!((x.catalog_version, x.table_catalog_version), (4, 3));
    assert_eq!(verdict(&x, "r9", V1), &Verdict::Absent);
}

#[test]
fn json_shape() {
    let snap = catalog(false);
    let x = explain(&snap, &table(&snap), "reviews", &LocalProxy::default()).unwrap();
    let v = serde_json::to_value(&x).unwrap();
    assert_eq!(v["service"]["hostname"], "reviews");
    assert_eq!(v["service"]["sources"], serde_json::json!(["file", "etcd"]));
    let r1 = &v["endpoints"][0];
    assert_eq!(r1["native_id"], "r1");
    let v2 = r1["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == V2)
        .unwrap();
    assert_eq!(
        v2,
        &serde_json::json!({
            "cluster": V2, "verdict": "excluded",
            "reason": "label_mismatch", "missing": {"version": "v2"}
        })
    );
    assert_eq!(v["sources"][1]["last_error"], "connection refused");
    assert_eq!(v["shadowed"][0]["by"]["native_id"], "r1");
}
