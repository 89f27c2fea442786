//! How each endpoint is connected to: auto mTLS from the registry's mesh
//! metadata, plaintext without it, and what a DestinationRule's `tls` changes.

use super::*;
use crate::model::MeshProxy;

/// `reviews`: r1 (v1) behind a mesh proxy named by namespace and service
/// account, r2 (v1) with none, r3 (v2) behind a proxy the registry names by
/// raw labels (Eureka style).
fn mesh_catalog() -> Snapshot {
    let mut state = CatalogState::new([SourceId::new("file")]);
    let svc = Service {
        hostname: host("reviews"),
        aliases: vec![],
        ports: vec![ServicePort {
            name: "http".into(),
            number: 9080,
            protocol: Protocol::Http,
        }],
    };
    let mut r1 = ep("file", "r1", "10.0.0.1", "v1", Health::Healthy);
    r1.mesh = Some(MeshProxy::new(
        15006,
        Some("shop".into()),
        Some("reviews".into()),
    ));
    let r2 = ep("file", "r2", "10.0.0.2", "v1", Health::Healthy);
    let mut r3 = ep("file", "r3", "10.0.0.3", "v2", Health::Healthy);
    r3.mesh = Some(MeshProxy {
        port: 15443,
        spiffe_id: Some("spiffe://other.org/reviews-v2".into()),
        ..MeshProxy::default()
    });
    r3.provenance
        .raw_labels
        .insert("anymesh.proxy-port".into(), "15443".into());
    apply(
        &mut state,
        "file",
        Change::Reset(SourceView {
            services: vec![svc],
            endpoints: vec![r1, r2, r3],
        }),
        1,
    );
    state.snapshot(1)
}

fn routes(v1_tls: &str, v2_tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n{v1_tls}  - name: v2\n    labels: {{version: v2}}\n{v2_tls}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 50\n    - destination: {{host: reviews, subset: v2}}\n      weight: 50\n"
    )
}

fn explained(v1_tls: &str, v2_tls: &str, proxy: &LocalProxy) -> Explanation {
    let snap = mesh_catalog();
    let (set, diags) = load_str("routes.yaml", &routes(v1_tls, v2_tls));
    assert!(diags.is_empty(), "{diags:?}");
    let table = compile(&snap, &set, 1).0;
    explain(&snap, &table, "reviews", proxy).unwrap()
}

fn with_identity() -> LocalProxy {
    LocalProxy {
        certificate_source: Some("files".into()),
        ..LocalProxy::new("example.org")
    }
}

const V1: &str = "outbound|9080|v1|reviews";
const V2: &str = "outbound|9080|v2|reviews";

fn transport<'x>(x: &'x Explanation, id: &str, cluster: &str) -> &'x Transport {
    let e = x.endpoints.iter().find(|e| e.native_id == id).unwrap();
    let v = e.clusters.iter().find(|v| v.cluster == cluster).unwrap();
    v.transport.as_ref().unwrap()
}

#[test]
fn auto_mtls_follows_the_registrys_mesh_metadata() {
    let x = explained("", "", &with_identity());
    let r1 = transport(&x, "r1", V1);
    assert!(r1.mtls);
    assert_eq!(r1.tls, TlsKind::MeshMtls);
    assert_eq!(r1.connect, "10.0.0.1:15006");
    assert_eq!(r1.identities, ["spiffe://example.org/ns/shop/sa/reviews"]);
    assert_eq!(
        r1.reason,
        "auto mTLS: registry file marks a mesh proxy (mesh port 15006, namespace shop, service account reviews)"
    );
    assert_eq!(r1.problem, None);

    let r2 = transport(&x, "r2", V1);
    assert!(!r2.mtls);
    assert_eq!(r2.tls, TlsKind::Plaintext);
    assert_eq!(r2.connect, "10.0.0.2:9080");
    assert!(r2.identities.is_empty());
    assert!(
        r2.reason
            .starts_with("plaintext: no mesh proxy in the registry (file)"),
        "{}",
        r2.reason
    );

    // A whole SPIFFE ID wins over the trust domain; raw marker keys are named.
    let r3 = transport(&x, "r3", V2);
    assert_eq!(r3.connect, "10.0.0.3:15443");
    assert_eq!(r3.identities, ["spiffe://other.org/reviews-v2"]);
    assert!(
        r3.reason.ends_with(
            "(mesh port 15443, spiffe id spiffe://other.org/reviews-v2, registry keys anymesh.proxy-port=15443)"
        ),
        "{}",
        r3.reason
    );
    // Excluded endpoints are not connected to: no transport.
    let r3_in_v1 = &x.endpoints[2].clusters[0];
    assert_eq!(r3_in_v1.cluster, V1);
    assert!(r3_in_v1.transport.is_none());
}

#[test]
fn a_destination_rule_decides_over_the_registry() {
    let disable = "    trafficPolicy: {tls: {mode: DISABLE}}\n";
    let istio = "    trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://example.org/ns/shop/sa/pinned]}}\n";
    let x = explained(disable, istio, &with_identity());
    let r1 = transport(&x, "r1", V1);
    assert!(!r1.mtls);
    assert_eq!(r1.tls, TlsKind::Plaintext);
    assert_eq!(r1.connect, "10.0.0.1:9080");
    assert!(
        r1.reason.starts_with(
            "DestinationRule tls DISABLE: plaintext to the endpoint itself, though registry file marks a mesh proxy"
        ),
        "{}",
        r1.reason
    );
    assert_eq!(
        transport(&x, "r2", V1).reason,
        "DestinationRule tls DISABLE"
    );
    let r3 = transport(&x, "r3", V2);
    assert!(r3.mtls);
    assert_eq!(r3.connect, "10.0.0.3:15443");
    assert_eq!(r3.identities, ["spiffe://example.org/ns/shop/sa/pinned"]);
    assert!(
        r3.reason
            .starts_with("DestinationRule tls ISTIO_MUTUAL; registry file marks")
            && r3
                .reason
                .ends_with("identities from the DestinationRule's subjectAltNames"),
        "{}",
        r3.reason
    );
}

#[test]
fn istio_mutual_without_a_mesh_proxy_and_origination() {
    let istio = "    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n";
    let simple = "    trafficPolicy: {tls: {mode: SIMPLE, sni: api.example.com}}\n";
    let x = explained(istio, simple, &with_identity());
    let r2 = transport(&x, "r2", V1);
    assert!(r2.mtls);
    assert_eq!(r2.connect, "10.0.0.2:9080");
    assert_eq!(
        r2.identities,
        ["spiffe://example.org/ns/default/sa/default"]
    );
    assert!(r2.reason.contains("no mesh proxy in the registry (file)"));
    let r3 = transport(&x, "r3", V2);
    assert!(!r3.mtls);
    assert_eq!(r3.tls, TlsKind::OriginationSimple);
    assert_eq!(r3.connect, "10.0.0.3:9080");
    assert_eq!(r3.sni.as_deref(), Some("api.example.com"));
    assert_eq!(
        r3.reason,
        "DestinationRule tls SIMPLE: TLS origination (sni api.example.com, server verified against the platform's roots, name api.example.com)"
    );
}

#[test]
fn a_proxy_without_an_identity_is_told_mesh_connections_fail() {
    let x = explained("", "", &LocalProxy::new("example.org"));
    let r1 = transport(&x, "r1", V1);
    assert!(r1.mtls);
    assert!(
        r1.problem.as_deref().unwrap().contains("no identity"),
        "{r1:?}"
    );
    assert_eq!(transport(&x, "r2", V1).problem, None);
}

#[test]
fn text_and_json_say_the_same() {
    let disable = "    trafficPolicy: {tls: {mode: DISABLE}}\n";
    let x = explained("", disable, &with_identity());
    let text = x.render(at(5));
    assert!(
        text.contains(
            "    mesh proxy: spiffe://example.org/ns/shop/sa/reviews on port 15006, per registry file \
             (mesh port 15006, namespace shop, service account reviews)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("    mesh proxy: none in the registry (file)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "      mtls: yes (mesh) -> 10.0.0.1:15006, expects spiffe://example.org/ns/shop/sa/reviews\n        why: auto mTLS: registry file marks a mesh proxy"
        ),
        "{text}"
    );
    assert!(
        text.contains("      mtls: no (plaintext) -> 10.0.0.3:9080\n        why: DestinationRule tls DISABLE: plaintext to the endpoint itself"),
        "{text}"
    );
    assert!(text.contains("  trust domain example.org"), "{text}");
    // Every transport in the JSON is a line of the text, and no more.
    let v = serde_json::to_value(&x).unwrap();
    let mut lines = 0;
    for e in v["endpoints"].as_array().unwrap() {
        for c in e["clusters"].as_array().unwrap() {
            let Some(t) = c.get("transport") else {
                continue;
            };
            let yes = if t["mtls"] == true { "yes" } else { "no" };
            let line = format!("mtls: {yes} ");
            let connect = format!("-> {}", t["connect"].as_str().unwrap());
            let reason = format!("why: {}\n", t["reason"].as_str().unwrap());
            assert!(
                text.lines()
                    .any(|l| l.contains(&line) && l.contains(&connect)),
                "{line}{connect} not in {text}"
            );
            assert!(text.contains(&reason), "{reason} not in {text}");
            lines += 1;
        }
    }
    assert_eq!(lines, 3);
    assert_eq!(text.matches("      mtls: ").count(), lines, "{text}");
    assert_eq!(v["proxy"]["trust_domain"], "example.org");
    assert_eq!(v["endpoints"][0]["mesh"]["port"], 15006);
    assert_eq!(v["endpoints"][1]["mesh"], serde_json::Value::Null);
}

#[test]
fn the_proxys_certificate_is_dated() {
    let mut proxy = with_identity();
    proxy.identity = Some("spiffe://example.org/ns/shop/sa/productpage".into());
    proxy.certificate = Certificate::Held {
        identity: "spiffe://example.org/ns/shop/sa/productpage".into(),
        not_before: at(0),
        not_after: at(3600),
        valid_now: true,
        last_error: None,
    };
    let x = explained("", "", &proxy);
    let text = x.render(at(600));
    assert!(
        text.contains(
            "  certificate: spiffe://example.org/ns/shop/sa/productpage, valid now, \
             not before 2023-11-14T22:13:20Z, not after 2023-11-14T23:13:20Z (expires in 3000s)\n"
        ),
        "{text}"
    );
    let v = serde_json::to_value(&x).unwrap();
    assert_eq!(v["proxy"]["certificate"]["state"], "held");
    assert_eq!(v["proxy"]["certificate"]["valid_now"], true);
    assert_eq!(
        v["proxy"]["certificate"]["not_after"],
        (T0.as_secs() + 3600) as f64
    );
}

/// The explanation says what the compiled table does: for every eligible
/// endpoint under each `tls` mode, the same kind, address, identities and
/// server name as the cluster's [`UpstreamTls`] decision the pool follows.
#[test]
fn the_explanation_agrees_with_the_compiled_decision() {
    use crate::routes::UpstreamTls;
    let modes = [
        "",
        "    trafficPolicy: {tls: {mode: DISABLE}}\n",
        "    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
        "    trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: x.example, subjectAltNames: [spiffe://example.org/ns/a/sa/b]}}\n",
        "    trafficPolicy: {tls: {mode: SIMPLE}}\n",
        "    trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}\n",
    ];
    let proxy = with_identity();
    let mut checked = 0;
    for v1 in modes {
        for v2 in modes {
            let snap = mesh_catalog();
            let (set, diags) = load_str("routes.yaml", &routes(v1, v2));
            assert!(diags.iter().all(|d| !d.is_error()), "{v1}{v2}: {diags:?}");
            let table = compile(&snap, &set, 1).0;
            let x = explain(&snap, &table, "reviews", &proxy).unwrap();
            for c in table
                .clusters
                .iter()
                .filter(|c| c.service.as_str() == "reviews")
            {
                for e in &c.endpoints {
                    let t = transport(&x, &e.key.native_id, &c.name);
                    let (kind, connect, identities, sni) = match &e.tls {
                        None => (TlsKind::Plaintext, e.authority.clone(), vec![], None),
                        Some(UpstreamTls::Mesh(m)) => (
                            TlsKind::MeshMtls,
                            m.connect.clone(),
                            if m.subject_alt_names.is_empty() {
                                vec![m.proxy.identity(&proxy.trust_domain)]
                            } else {
                                m.subject_alt_names.clone()
                            },
                            m.sni.clone(),
                        ),
                        Some(UpstreamTls::Origination(o)) => (
                            if o.mutual {
                                TlsKind::OriginationMutual
                            } else {
                                TlsKind::OriginationSimple
                            },
                            e.authority.clone(),
                            o.settings.subject_alt_names.clone(),
                            Some(o.server_name.clone()),
                        ),
                    };
                    let context = format!("{} {}: {v1}{v2}{t:?}", c.name, e.key);
                    assert_eq!(t.tls, kind, "{context}");
                    assert_eq!(t.connect, connect, "{context}");
                    assert_eq!(t.identities, identities, "{context}");
                    assert_eq!(t.sni, sni, "{context}");
                    assert_eq!(
                        t.mtls,
                        matches!(kind, TlsKind::MeshMtls | TlsKind::OriginationMutual),
                        "{context}"
                    );
                    checked += 1;
                }
            }
        }
    }
    // 6 × 6 rule pairs, two v1 endpoints and one v2 endpoint each.
    assert_eq!(checked, 6 * 6 * 3);
}

#[test]
fn a_proxy_without_a_usable_certificate_is_told_mesh_connections_fail() {
    let cases = [
        (
            Certificate::Missing { last_error: None },
            "holds no certificate yet",
        ),
        (
            Certificate::Held {
                identity: "spiffe://example.org/ns/shop/sa/productpage".into(),
                not_before: at(0),
                not_after: at(1),
                valid_now: false,
                last_error: None,
            },
            "not valid now",
        ),
    ];
    for (certificate, why) in cases {
        let proxy = LocalProxy {
            certificate,
            ..with_identity()
        };
        let x = explained("", "", &proxy);
        let problem = transport(&x, "r1", V1).problem.clone().unwrap_or_default();
        assert!(problem.contains(why), "{problem}");
        assert!(x.render(at(5)).contains(&format!("PROBLEM: {problem}\n")));
        assert_eq!(transport(&x, "r2", V1).problem, None);
    }
    // Held and valid, or not known offline: no problem claimed.
    let x = explained("", "", &with_identity());
    assert_eq!(transport(&x, "r1", V1).problem, None);
}
