//! The exposition Istio's dashboards read: names, every label in Istio's
//! spelling, Envoy's buckets, fallbacks.

use std::collections::BTreeMap;

use anymesh_core::model::{
    EndpointPort, Health, Hostname, Locality, MeshProxy, Provenance, SourceId,
};
use prometheus_client::encoding::text::encode;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn endpoint(host: &str, labels: BTreeMap<String, String>, mesh: Option<MeshProxy>) -> Endpoint {
    Endpoint {
        service: Hostname::new(host).expect("host"),
        address: "10.0.0.1".into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 9080,
        }],
        labels: labels.into_iter().collect(),
        health: Health::Healthy,
        weight: 1,
        locality: Locality::default(),
        mesh,
        provenance: Provenance {
            source: SourceId::new("test"),
            native_id: "e".into(),
            raw_labels: Default::default(),
        },
    }
}

fn exposition(m: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, m).expect("encode");
    out
}

#[test]
fn a_request_series_carries_every_istio_label_and_envoy_buckets() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    let source = Arc::new(PeerLabels::workload(
        "productpage-v1",
        "default",
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        &labels(&[("app", "productpage"), ("version", "v1")]),
    ));
    let ep = endpoint(
        "reviews.default.svc.cluster.local",
        labels(&[("app", "reviews"), ("version", "v2")]),
        None,
    );
    let destination = Arc::new(PeerLabels::of_endpoint(&ep, None));
    let service = Arc::new(ServiceLabels::new(
        "reviews.default.svc.cluster.local",
        None,
    ));
    let l = IstioLabels {
        reporter: Reporter::Source,
        source,
        destination,
        service,
        protocol: RequestProtocol::Http,
        code: 200,
        grpc_status: None,
        flags: "-",
        security: SecurityPolicy::Unknown,
    };
    m.record(&l.series(), 3.2, Some((120, 2000)));
    m.record(&l.series(), 7.0, Some((120, 2000)));
    let text = exposition(&registry);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .expect("istio_requests_total");
    assert!(line.ends_with(" 2"), "{line}");
    for pair in [
        "reporter=\"source\"",
        "source_workload=\"productpage-v1\"",
        "source_canonical_service=\"productpage\"",
        "source_canonical_revision=\"v1\"",
        "source_workload_namespace=\"default\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "source_cluster=\"unknown\"",
        "destination_workload=\"reviews\"",
        "destination_workload_namespace=\"default\"",
        "destination_principal=\"unknown\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v2\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "destination_canonical_service=\"reviews\"",
        "destination_canonical_revision=\"v2\"",
        "destination_service_name=\"reviews\"",
        "destination_service_namespace=\"default\"",
        "destination_cluster=\"unknown\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"unknown\"",
    ] {
        assert!(line.contains(pair), "{pair} missing in {line}");
    }
    let les: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_request_duration_milliseconds_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        les,
        [
            "0.5",
            "1.0",
            "5.0",
            "10.0",
            "25.0",
            "50.0",
            "100.0",
            "250.0",
            "500.0",
            "1000.0",
            "2500.0",
            "5000.0",
            "10000.0",
            "30000.0",
            "60000.0",
            "300000.0",
            "600000.0",
            "1800000.0",
            "3600000.0",
            "+Inf"
        ]
    );
    assert!(text.contains("istio_request_duration_milliseconds_sum{"));
    assert!(text.contains("istio_request_bytes_count{"));
    assert!(text.contains("istio_response_bytes_sum{"));
    assert!(
        text.contains("istio_build{component=\"proxy\",tag=\""),
        "{text}"
    );
}

#[test]
fn fallbacks_follow_istio() {
    // No labels at all: the workload is the service's first name, the
    // canonical revision `latest`, the rest `unknown`.
    let e = endpoint("web.service.consul", BTreeMap::new(), None);
    let p = PeerLabels::of_endpoint(&e, None);
    assert_eq!(&*p.workload, "web");
    assert_eq!(&*p.canonical_service, "web");
    assert_eq!(&*p.canonical_revision, "latest");
    assert_eq!(&*p.namespace, "unknown");
    assert_eq!(&*p.app, "unknown");
    // The mesh proxy's namespace, Istio's canonical labels, the explicit
    // workload label.
    let e = endpoint(
        "web.service.consul",
        labels(&[
            ("anymesh.io/workload", "web-blue"),
            ("app.kubernetes.io/name", "web"),
            ("app.kubernetes.io/version", "3"),
            ("service.istio.io/canonical-name", "frontend"),
            ("topology.istio.io/cluster", "east"),
        ]),
        Some(MeshProxy {
            port: 15006,
            namespace: Some("shop".into()),
            service_account: None,
            spiffe_id: None,
        }),
    );
    let p = PeerLabels::of_endpoint(&e, Some("spiffe://cluster.local/ns/shop/sa/web"));
    assert_eq!(&*p.workload, "web-blue");
    assert_eq!(&*p.namespace, "shop");
    assert_eq!(&*p.app, "web");
    assert_eq!(&*p.version, "3");
    assert_eq!(&*p.canonical_service, "frontend");
    assert_eq!(&*p.canonical_revision, "3");
    assert_eq!(&*p.cluster, "east");
    assert_eq!(&*p.principal, "spiffe://cluster.local/ns/shop/sa/web");
    let s = ServiceLabels::new("web.service.consul", Some("shop"));
    assert_eq!((&*s.name, &*s.namespace), ("web", "shop"));
    // A verified peer: its namespace and principal; a plaintext one: unknown.
    let id =
        anymesh_identity::SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").expect("id");
    let p = PeerLabels::of_peer(Some(&id));
    assert_eq!(&*p.principal, "spiffe://cluster.local/ns/shop/sa/cart");
    assert_eq!(&*p.namespace, "shop");
    assert_eq!(&*p.workload, "unknown");
    assert_eq!(PeerLabels::of_peer(None), PeerLabels::unknown());
}

#[test]
fn a_grpc_status_and_flags_make_their_own_series() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    let u = Arc::new(PeerLabels::unknown());
    let s = Arc::new(ServiceLabels::unknown());
    let base = IstioLabels {
        reporter: Reporter::Destination,
        source: u.clone(),
        destination: u,
        service: s,
        protocol: RequestProtocol::Grpc,
        code: 200,
        grpc_status: Some(14),
        flags: "-",
        security: SecurityPolicy::MutualTls,
    };
    m.record(&base.series(), 1.0, None);
    let failed = IstioLabels {
        code: 503,
        grpc_status: None,
        flags: "UH",
        ..base.clone()
    };
    m.record(&failed.series(), 1.0, None);
    let text = exposition(&registry);
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert_eq!(series.len(), 2, "{text}");
    assert!(series
        .iter()
        .any(|l| l.contains("grpc_response_status=\"14\"")
            && l.contains("request_protocol=\"grpc\"")
            && l.contains("connection_security_policy=\"mutual_tls\"")
            && l.contains("reporter=\"destination\"")));
    assert!(series
        .iter()
        .any(|l| l.contains("response_code=\"503\"") && l.contains("response_flags=\"UH\"")));
    // No sizes given: the size histograms count no sample for these series.
    assert!(text
        .lines()
        .filter(|l| l.starts_with("istio_request_bytes_count{"))
        .all(|l| l.ends_with(" 0")));
}

#[test]
fn peer_metadata_round_trips_and_hostile_values_are_refused() {
    let me = PeerLabels::workload(
        "cart-v2",
        "shop",
        Some("spiffe://cluster.local/ns/shop/sa/cart"),
        &labels(&[("app", "cart"), ("version", "v2")]),
    );
    let value = me.metadata();
    assert_eq!(value, "w=cart-v2;a=cart;v=v2;cs=cart;cr=v2");
    let id =
        anymesh_identity::SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").expect("id");
    let verified = PeerLabels::of_peer(Some(&id));
    let got = PeerLabels::with_metadata(&verified, value.as_bytes()).expect("well formed");
    assert_eq!(&*got.workload, "cart-v2");
    assert_eq!(&*got.app, "cart");
    assert_eq!(&*got.canonical_revision, "v2");
    // The namespace and principal stay the certificate's.
    assert_eq!(&*got.namespace, "shop");
    assert_eq!(&*got.principal, "spiffe://cluster.local/ns/shop/sa/cart");
    assert_eq!(&*got.cluster, "unknown");
    for hostile in [
        &b"w=a\"b"[..],
        b"w=a b",
        b"w=a\nb",
        b"ns=other",
        b"w",
        b"w=",
        &[b'w', b'=', 0xff][..],
    ] {
        assert_eq!(
            PeerLabels::with_metadata(&verified, hostile),
            None,
            "{:?}",
            String::from_utf8_lossy(hostile)
        );
    }
    let long = format!("w={}", "x".repeat(64));
    assert_eq!(PeerLabels::with_metadata(&verified, long.as_bytes()), None);
    let huge = "a=b;".repeat(200);
    assert_eq!(PeerLabels::with_metadata(&verified, huge.as_bytes()), None);
}

#[test]
fn the_inbound_service_is_the_declared_hostname_else_kubernetes_style() {
    let labels = BTreeMap::from([("app".to_string(), "reviews".to_string())]);
    let declared = LocalLabels::workload(
        "reviews-v1",
        "shop",
        None,
        &labels,
        Some("reviews.service.consul"),
        "cluster.local",
    );
    assert_eq!(&*declared.service.host, "reviews.service.consul");
    let derived = LocalLabels::workload("reviews-v1", "shop", None, &labels, None, "cluster.local");
    assert_eq!(&*derived.service.host, "reviews.shop.svc.cluster.local");
}
