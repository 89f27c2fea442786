//! How connections to each endpoint are secured: Istio's decision table
//! (auto mTLS, DISABLE, ISTIO_MUTUAL, SIMPLE, MUTUAL), and the compiler
//! applying a DestinationRule's `tls` per subset and port.

use std::sync::Arc;
use std::time::SystemTime;

use crate::catalog::CatalogState;
use crate::config::load_str;
use crate::model::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, MeshProxy, Protocol, Provenance,
    Service, ServicePort, SourceId,
};
use crate::registry::{Change, SourceView, SourcedChange};
use crate::routes::compile::compile;
use crate::routes::policy::{ClusterTls, TlsOrigination};
use crate::routes::table::{ClusterEndpoint, MeshUpstream, Origination, UpstreamTls};

fn endpoint(service: &str, id: &str, version: &str, mesh: Option<MeshProxy>) -> Endpoint {
    Endpoint {
        service: Hostname::new(service).expect("host"),
        address: format!("10.0.0.{}", id.len()),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 8080,
        }],
        labels: Labels::from([("version".to_string(), version.to_string())]),
        health: Health::Healthy,
        weight: 1,
        locality: Locality::default(),
        mesh,
        provenance: Provenance {
            source: SourceId::new("file"),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    }
}

fn proxied() -> Option<MeshProxy> {
    Some(MeshProxy::new(
        15006,
        Some("shop".into()),
        Some("reviews".into()),
    ))
}

fn simple() -> TlsOrigination {
    TlsOrigination {
        ca_certificates: Some("/etc/ca.pem".into()),
        sni: Some("api.example.com".into()),
        ..TlsOrigination::default()
    }
}

/// What a decision comes to, in words: the table's rows.
fn decide(tls: Option<&ClusterTls>, ep: &Endpoint) -> String {
    let host = Hostname::new("reviews").expect("host");
    let origination = Origination::of(tls, &host, "outbound|80||reviews");
    match UpstreamTls::decide(tls, ep, 8080, origination.as_ref()) {
        None => "plaintext".into(),
        Some(UpstreamTls::Mesh(m)) => format!(
            "mesh {} port {} id {} sni {:?} sans {:?}",
            m.connect,
            m.port,
            m.proxy.identity("td"),
            m.sni,
            m.subject_alt_names
        ),
        Some(UpstreamTls::Origination(o)) => {
            format!("origination mutual={} name {}", o.mutual, o.server_name)
        }
    }
}

#[test]
fn the_decision_follows_istio_for_every_mode_and_kind_of_endpoint() {
    let with = endpoint("reviews", "a", "v1", proxied());
    let without = endpoint("reviews", "a", "v1", None);
    let k8s = endpoint("reviews.shop.svc.cluster.local", "a", "v1", None);
    let istio = ClusterTls::IstioMutual {
        sni: None,
        subject_alt_names: Vec::new(),
    };
    let pinned = ClusterTls::IstioMutual {
        sni: Some("outbound_.80_._.reviews".into()),
        subject_alt_names: vec!["spiffe://td/ns/shop/sa/other".into()],
    };
    let mutual = ClusterTls::Mutual(TlsOrigination {
        client_certificate: Some("/c.pem".into()),
        private_key: Some("/k.pem".into()),
        sni: None,
        ..simple()
    });
    let mesh_of_with = "mesh 10.0.0.1:15006 port 8080 id spiffe://td/ns/shop/sa/reviews";
    let cases: [(Option<&ClusterTls>, &Endpoint, String); 11] = [
        // Auto mTLS: exactly the endpoints with a mesh proxy.
        (None, &with, format!("{mesh_of_with} sni None sans []")),
        (None, &without, "plaintext".into()),
        // DISABLE: plaintext to the endpoint's own port, proxy or not.
        (Some(&ClusterTls::Disable), &with, "plaintext".into()),
        (Some(&ClusterTls::Disable), &without, "plaintext".into()),
        (
            Some(&istio),
            &with,
            format!("{mesh_of_with} sni None sans []"),
        ),
        // ISTIO_MUTUAL without mesh metadata: mTLS to the endpoint's own
        // port, the default account of the service's namespace.
        (
            Some(&istio),
            &without,
            "mesh 10.0.0.1:8080 port 8080 id spiffe://td/ns/default/sa/default sni None sans []"
                .into(),
        ),
        (
            Some(&istio),
            &k8s,
            "mesh 10.0.0.1:8080 port 8080 id spiffe://td/ns/shop/sa/default sni None sans []"
                .into(),
        ),
        (
            Some(&pinned),
            &with,
            format!(
                "{mesh_of_with} sni Some(\"outbound_.80_._.reviews\") \
                 sans [\"spiffe://td/ns/shop/sa/other\"]"
            ),
        ),
        // Origination goes to the endpoint's own port, proxy or not.
        (
            Some(&ClusterTls::Simple(simple())),
            &with,
            "origination mutual=false name api.example.com".into(),
        ),
        (
            Some(&ClusterTls::Simple(simple())),
            &without,
            "origination mutual=false name api.example.com".into(),
        ),
        // No sni: the service's hostname.
        (
            Some(&mutual),
            &without,
            "origination mutual=true name reviews".into(),
        ),
    ];
    for (tls, ep, want) in cases {
        assert_eq!(decide(tls, ep), want, "tls {tls:?}, mesh {:?}", ep.mesh);
    }
}

fn snapshot(endpoints: Vec<Endpoint>) -> crate::catalog::Snapshot {
    let service = |name: &str, ports: Vec<ServicePort>| Service {
        hostname: Hostname::new(name).expect("host"),
        aliases: Vec::new(),
        ports,
    };
    let http = |number| ServicePort {
        name: format!("http-{number}"),
        number,
        protocol: Protocol::Http,
    };
    let mut state = CatalogState::new([SourceId::new("file")]);
    state.apply(SourcedChange {
        source: SourceId::new("file"),
        change: Change::Reset(SourceView {
            services: vec![
                service("reviews", vec![http(9080), http(9443)]),
                service("productpage", vec![http(9080)]),
            ],
            endpoints,
        }),
        at: SystemTime::now(),
    });
    state.snapshot(1)
}

fn tls_of(endpoints: &[ClusterEndpoint]) -> Vec<Option<&str>> {
    endpoints
        .iter()
        .map(|e| match &e.tls {
            None => None,
            Some(UpstreamTls::Mesh(_)) => Some("mesh"),
            Some(UpstreamTls::Origination(o)) if o.mutual => Some("mutual"),
            Some(UpstreamTls::Origination(_)) => Some("simple"),
        })
        .collect()
}

/// Istio's sample `destination-rule-all-mtls.yaml`: every bookinfo
/// endpoint with a mesh proxy gets mutual TLS, and so does one without.
#[test]
fn bookinfo_all_mtls_gives_every_endpoint_mutual_tls() {
    let yaml =
        include_str!("../../../../tests/fixtures/istio-bookinfo/destination-rule-all-mtls.yaml");
    let (config, diags) = load_str("dr.yaml", yaml);
    assert!(diags.is_empty(), "{diags:#?}");
    let snap = snapshot(vec![
        endpoint("reviews", "r1", "v1", proxied()),
        endpoint("reviews", "r22", "v2", proxied()),
        endpoint("productpage", "p333", "v1", None),
    ]);
    let (table, _) = compile(&snap, &config, 1);
    let reviews = table
        .cluster("outbound|9080||reviews")
        .expect("reviews cluster");
    assert_eq!(tls_of(&reviews.endpoints), [Some("mesh"), Some("mesh")]);
    let page = table
        .cluster("outbound|9080||productpage")
        .expect("productpage cluster");
    let Some(UpstreamTls::Mesh(m)) = &page.endpoints[0].tls else {
        panic!(
            "productpage without mesh metadata still gets mTLS: {:?}",
            page.endpoints
        );
    };
    assert_eq!(m.connect, "10.0.0.4:8080");
}

/// A subset's or a port's `tls` replaces the rule's: DISABLE on one port,
/// SIMPLE for a subset, mesh mTLS (auto) elsewhere.
#[test]
fn tls_applies_per_subset_and_port() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    portLevelSettings:
      - port: {number: 9443}
        tls: {mode: DISABLE}
  subsets:
    - name: v2
      labels: {version: v2}
      trafficPolicy:
        tls: {mode: SIMPLE, sni: reviews.example.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
    - match: [{headers: {x-v2: {exact: "1"}}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - route: [{destination: {host: reviews}}]
"#;
    let (config, diags) = load_str("dr.yaml", yaml);
    assert!(diags.is_empty(), "{diags:#?}");
    let snap = snapshot(vec![
        endpoint("reviews", "r1", "v1", proxied()),
        endpoint("reviews", "r22", "v2", proxied()),
    ]);
    let (table, _) = compile(&snap, &config, 1);
    let cluster = |name: &str| table.cluster(name).expect(name).clone();
    assert_eq!(
        tls_of(&cluster("outbound|9080||reviews").endpoints),
        [Some("mesh"), Some("mesh")]
    );
    assert_eq!(
        tls_of(&cluster("outbound|9443||reviews").endpoints),
        [None, None]
    );
    let v2 = cluster("outbound|9080|v2|reviews");
    assert_eq!(tls_of(&v2.endpoints), [Some("simple")]);
    let Some(UpstreamTls::Origination(o)) = &v2.endpoints[0].tls else {
        panic!("origination expected");
    };
    assert_eq!(o.server_name, "reviews.example.com");
    assert_eq!(v2.endpoints[0].authority, "10.0.0.3:8080");
    // One origination per cluster, shared by its endpoints.
    assert!(Arc::strong_count(o) >= 1);
    let _: Option<&Arc<MeshUpstream>> = v2.endpoints[0].mesh();
}
