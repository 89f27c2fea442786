//! `anymesh explain` and `/explain` on mutual TLS: per endpoint, whether the
//! proxy speaks mTLS, to which address, the identity expected in
//! anymesh.yaml's trust domain, and why; the proxy's own certificate.

use http::StatusCode;
use serde_json::Value;

use super::{endpoint_block, run};
use crate::harness::*;
use crate::mtls::pki::{identity_files, Root};

/// `reviews`: r1 behind a mesh proxy, r2 with none; `ratings`: a mesh
/// endpoint whose DestinationRule sets tls DISABLE.
const SERVICES: &str = "services:\n  - name: reviews\n    ports: [{name: http, port: 9080}]\n    endpoints:\n      - {id: r1, address: 10.0.0.1, port: 9080, mesh: {port: 15006, namespace: shop, service_account: reviews}}\n      - {id: r2, address: 10.0.0.2, port: 9080}\n  - name: ratings\n    ports: [{name: http, port: 9080}]\n    endpoints:\n      - {id: t1, address: 10.0.0.5, port: 9080, mesh: {port: 15006, service_account: ratings}}\n";

const ROUTES: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy:\n    tls: {mode: DISABLE}\n";

/// A config dir in trust domain `example.org` whose proxy (workload
/// `productpage`) has certificate files.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Root::new("example.org");
    root.write_svid(&dir.path().join("id"), "shop", "productpage", false);
    write(&dir.path().join("services.yaml"), SERVICES);
    write(&dir.path().join("routes.yaml"), ROUTES);
    write(
        &dir.path().join("anymesh.yaml"),
        &format!(
            "routing: [routes.yaml]\nmesh: {{trust_domain: example.org}}\n{}\
             workloads:\n  - {{name: productpage, namespace: shop, service_account: productpage, ports: [{{port: 9080, protocol: http}}]}}\n",
            identity_files(&dir.path().join("id"))
        ),
    );
    dir
}

fn trimmed<'a>(block: &[&'a str]) -> Vec<&'a str> {
    block.iter().map(|l| l.trim()).collect()
}

#[test]
fn cli_says_per_endpoint_whether_mtls_is_used_and_why() {
    let dir = config_dir();
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out, err) = run(&["explain", "--host", "reviews"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    let r1 = trimmed(&endpoint_block(&out, "10.0.0.1 port 9080"));
    assert!(
        r1.contains(&"mesh proxy: spiffe://example.org/ns/shop/sa/reviews on port 15006, per registry file (mesh port 15006, namespace shop, service account reviews)"),
        "{out}"
    );
    assert!(
        r1.contains(
            &"mtls: yes (mesh) -> 10.0.0.1:15006, expects spiffe://example.org/ns/shop/sa/reviews"
        ),
        "{out}"
    );
    assert!(
        r1.contains(&"why: auto mTLS: registry file marks a mesh proxy (mesh port 15006, namespace shop, service account reviews)"),
        "{out}"
    );
    let r2 = trimmed(&endpoint_block(&out, "10.0.0.2 port 9080"));
    assert!(
        r2.contains(&"mesh proxy: none in the registry (file)"),
        "{out}"
    );
    assert!(
        r2.contains(&"mtls: no (plaintext) -> 10.0.0.2:9080"),
        "{out}"
    );
    assert!(
        r2.contains(&"why: plaintext: no mesh proxy in the registry (file) and no DestinationRule tls (auto mTLS)"),
        "{out}"
    );
    assert!(!out.contains("PROBLEM"), "{out}");
    // The proxy itself: its identity and the certificate files, read and dated.
    assert!(
        out.contains("  trust domain example.org (anymesh.yaml mesh.trust_domain)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  identity spiffe://example.org/ns/shop/sa/productpage (anymesh.yaml workloads)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  certificate source: files (identity.files): cert "),
        "{out}"
    );
    assert!(
        out.contains(
            "  certificate: spiffe://example.org/ns/shop/sa/productpage, valid now, not before "
        ),
        "{out}"
    );

    let (code, out, err) = run(&["explain", "--host", "ratings"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    let t1 = trimmed(&endpoint_block(&out, "10.0.0.5 port 9080"));
    assert!(
        t1.contains(&"mtls: no (plaintext) -> 10.0.0.5:9080"),
        "{out}"
    );
    assert!(
        t1.contains(&"why: DestinationRule tls DISABLE: plaintext to the endpoint itself, though registry file marks a mesh proxy (mesh port 15006, service account ratings)"),
        "{out}"
    );
}

#[test]
fn cli_json_carries_the_same_transports() {
    let dir = config_dir();
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out, err) = run(&["explain", "--host", "reviews", "--json"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["proxy"]["trust_domain"], "example.org");
    assert_eq!(v["proxy"]["certificate"]["state"], "held");
    assert_eq!(v["proxy"]["certificate"]["valid_now"], true);
    let r1 = &v["endpoints"][0];
    assert_eq!(
        r1["mesh"]["identity"],
        "spiffe://example.org/ns/shop/sa/reviews"
    );
    let t = &r1["clusters"][0]["transport"];
    assert_eq!(t["mtls"], true);
    assert_eq!(t["tls"], "mesh_mtls");
    assert_eq!(t["connect"], "10.0.0.1:15006");
    assert_eq!(
        t["identities"],
        serde_json::json!(["spiffe://example.org/ns/shop/sa/reviews"])
    );
    let t = &v["endpoints"][1]["clusters"][0]["transport"];
    assert_eq!(t["mtls"], false);
    assert_eq!(t["tls"], "plaintext");
    assert_eq!(t["connect"], "10.0.0.2:9080");
    assert_eq!(v["endpoints"][1]["mesh"], Value::Null);
}

#[tokio::test]
async fn admin_explain_shows_the_certificate_in_force() {
    let dir = config_dir();
    let app = crate::harness::upstreams(&["v1"]).await;
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\nmesh: {{trust_domain: example.org}}\n{}\
         workloads:\n  - {{name: productpage, namespace: shop, service_account: productpage, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0}}\n",
        identity_files(&dir.path().join("id")),
        app[0].addr.port()
    );
    let mesh = crate::mtls::launch(dir, &yaml).await;
    let (status, text) = mesh.admin("/explain?host=reviews&format=text").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains("  certificate: spiffe://example.org/ns/shop/sa/productpage, valid now, "),
        "{text}"
    );
    assert!(
        text.contains("      mtls: yes (mesh) -> 10.0.0.1:15006, expects spiffe://example.org/ns/shop/sa/reviews\n"),
        "{text}"
    );
    let (status, body) = mesh.admin("/explain?host=ratings").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["live"], true);
    assert_eq!(v["proxy"]["certificate"]["state"], "held");
    let t = &v["endpoints"][0]["clusters"][0]["transport"];
    assert_eq!(t["mtls"], false, "{body}");
    assert_eq!(t["connect"], "10.0.0.5:9080");
    assert!(
        t["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("DestinationRule tls DISABLE"),
        "{body}"
    );
}
