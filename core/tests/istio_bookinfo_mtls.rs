//! Istio's `destination-rule-all-mtls.yaml` (Bookinfo's subsets with
//! `tls.mode: ISTIO_MUTUAL`) loads without a warning and compiles to
//! ISTIO_MUTUAL on every cluster, subsets included; and DestinationRule
//! `tls` merges per subset and port as Istio's `MergeTrafficPolicy` does.

use std::path::Path;
use std::time::SystemTime;

use anymesh_core::config::{load_str, parse_str, ConfigSet};
use anymesh_core::routes::compile::compile;
use anymesh_core::routes::{ClusterTls, RouteTable, TlsOrigination};
use anymesh_core::{
    CatalogState, Change, Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol,
    Provenance, Service, ServicePort, SourceId, SourceView, SourcedChange,
};

/// Bookinfo's four services on port 9080 (and reviews on 9443 too), with
/// endpoints per version.
fn bookinfo() -> anymesh_core::Snapshot {
    let source = SourceId::new("file");
    let port = |name: &str, number| ServicePort {
        name: name.into(),
        number,
        protocol: Protocol::Http,
    };
    let services = ["productpage", "reviews", "ratings", "details"]
        .map(|name| Service {
            hostname: Hostname::new(name).expect("hostname"),
            aliases: Vec::new(),
            ports: if name == "reviews" {
                vec![port("http", 9080), port("http-alt", 9443)]
            } else {
                vec![port("http", 9080)]
            },
        })
        .to_vec();
    let versions = [
        ("productpage", "v1"),
        ("reviews", "v1"),
        ("reviews", "v2"),
        ("reviews", "v3"),
        ("ratings", "v1"),
        ("details", "v1"),
    ];
    let endpoints = versions
        .into_iter()
        .enumerate()
        .map(|(i, (svc, version))| Endpoint {
            service: Hostname::new(svc).expect("hostname"),
            address: format!("10.0.0.{}", i + 1),
            ports: vec![
                EndpointPort {
                    name: "http".into(),
                    number: 9080,
                },
                EndpointPort {
                    name: "http-alt".into(),
                    number: 9443,
                },
            ],
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
        })
        .collect();
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

fn fixture(name: &str) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio-bookinfo")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    (path.display().to_string(), text)
}

fn compiled(set: &ConfigSet) -> RouteTable {
    let (table, diagnostics) = compile(&bookinfo(), set, 1);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    table
}

#[test]
fn destination_rule_all_mtls_gives_istio_mutual_everywhere() {
    let mut set = ConfigSet::default();
    let mut diagnostics = Vec::new();
    for name in [
        "destination-rule-all-mtls.yaml",
        "virtual-service-all-v1.yaml",
    ] {
        let (file, text) = fixture(name);
        let (s, d) = parse_str(&file, &text);
        set.merge(s);
        diagnostics.extend(d);
    }
    diagnostics.extend(set.retain_valid());
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert_eq!(set.destination_rules.len(), 4);
    let table = compiled(&set);
    let mutual = ClusterTls::IstioMutual {
        sni: None,
        subject_alt_names: Vec::new(),
    };
    let mut names: Vec<&str> = Vec::new();
    for c in &table.clusters {
        assert_eq!(c.policy.tls.as_ref(), Some(&mutual), "{}", c.name);
        names.push(&c.name);
    }
    for subset in [
        "outbound|9080|v1|productpage",
        "outbound|9080|v1|reviews",
        "outbound|9080|v1|ratings",
        "outbound|9080|v1|details",
    ] {
        assert!(names.contains(&subset), "{subset} in {names:?}");
    }
}

#[test]
fn without_tls_the_cluster_is_auto_mtls() {
    let (file, text) = fixture("destination-rule-all.yaml");
    let (set, diagnostics) = load_str(&file, &text);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let table = compiled(&set);
    assert!(table.clusters.iter().all(|c| c.policy.tls.is_none()));
}

/// The tls of `outbound|<port>|<subset>|reviews` for this rule.
fn tls_of(rule: &str, port: u16, subset: Option<&str>) -> Option<ClusterTls> {
    let mut text = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: \
         reviews}}\nspec:\n  host: reviews\n{rule}---\napiVersion: \
         networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  \
         hosts: [reviews]\n  http:\n  - route:\n"
    );
    // One destination per (subset, port), so each cluster exists.
    for subset in ["subset: s1, ", ""] {
        for port in [9080, 9443] {
            text += &format!(
                "    - destination: {{host: reviews, {subset}port: {{number: {port}}}}}\n      \
                 weight: 25\n"
            );
        }
    }
    let (set, diagnostics) = load_str("dr.yaml", &text);
    assert!(
        diagnostics.iter().all(|d| !d.is_error()),
        "{diagnostics:#?}"
    );
    let table = compiled(&set);
    let name = format!("outbound|{port}|{}|reviews", subset.unwrap_or(""));
    table
        .cluster(&name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .policy
        .tls
        .clone()
}

#[test]
fn tls_merges_per_subset_and_port_as_istio() {
    let simple = |sni: &str| {
        ClusterTls::Simple(TlsOrigination {
            ca_certificates: Some("/etc/ca.pem".into()),
            sni: Some(sni.into()),
            ..TlsOrigination::default()
        })
    };
    let mutual = ClusterTls::IstioMutual {
        sni: None,
        subject_alt_names: Vec::new(),
    };
    // Top-level tls reaches every port and subset without its own.
    let top = "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n  subsets:\n  - name: s1\n    labels: {version: v1}\n";
    assert_eq!(tls_of(top, 9080, Some("s1")), Some(mutual.clone()));
    assert_eq!(tls_of(top, 9443, None), Some(mutual.clone()));
    // A port-level entry replaces the top level for its port, wholesale:
    // one without tls means no tls (auto mTLS) there.
    let port_level = "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings:\n    - port: {number: 9443}\n      tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: a.example}\n    - port: {number: 9080}\n      connectionPool: {tcp: {maxConnections: 5}}\n  subsets:\n  - name: s1\n    labels: {version: v1}\n";
    assert_eq!(tls_of(port_level, 9443, None), Some(simple("a.example")));
    assert_eq!(tls_of(port_level, 9080, None), None);
    assert_eq!(
        tls_of(port_level, 9443, Some("s1")),
        Some(simple("a.example"))
    );
    // A subset's tls replaces the rule's; its port-level entry replaces
    // even when it sets no tls.
    let subset = "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n  subsets:\n  - name: s1\n    labels: {version: v1}\n    trafficPolicy:\n      tls: {mode: DISABLE}\n      portLevelSettings:\n      - port: {number: 9443}\n        loadBalancer: {simple: RANDOM}\n";
    assert_eq!(tls_of(subset, 9080, Some("s1")), Some(ClusterTls::Disable));
    assert_eq!(tls_of(subset, 9443, Some("s1")), None);
    assert_eq!(tls_of(subset, 9080, None), Some(mutual.clone()));
    // A subset without tls keeps the rule's.
    let keeps = "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, sni: reviews.mesh, subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]}\n  subsets:\n  - name: s1\n    labels: {version: v1}\n    trafficPolicy: {loadBalancer: {simple: RANDOM}}\n";
    assert_eq!(
        tls_of(keeps, 9080, Some("s1")),
        Some(ClusterTls::IstioMutual {
            sni: Some("reviews.mesh".into()),
            subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/reviews".into()],
        })
    );
    // MUTUAL carries its files.
    let files = "  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, insecureSkipVerify: true}\n";
    assert_eq!(
        tls_of(
            &format!("{files}  subsets:\n  - name: s1\n    labels: {{version: v1}}\n"),
            9080,
            None
        ),
        Some(ClusterTls::Mutual(TlsOrigination {
            client_certificate: Some("/c.pem".into()),
            private_key: Some("/k.pem".into()),
            insecure_skip_verify: true,
            ..TlsOrigination::default()
        }))
    );
}
