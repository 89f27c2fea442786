//! AuthorizationPolicy evaluation cost: `WorkloadAuthz::check` for a
//! workload under a namespace-wide DENY (a header condition), two ALLOW
//! policies (principals and methods, a JWT claim) and an AUDIT policy; an
//! allowed request (the second ALLOW matches), a denied one (no ALLOW
//! matches) and one the DENY policy stops.
//!
//! `cargo bench -p anymesh-core --bench authz_check`

use std::collections::BTreeMap;
use std::hint::black_box;

use anymesh_core::config::load_str;
use anymesh_core::security::jwt::RequestAuth;
use anymesh_core::security::{AuthzInput, HttpAttributes, SecurityPolicies, WorkloadRef};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-guest, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE], ports: ["8000"]}}]
    when: [{key: "request.headers[x-token]", values: [guest]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: viewers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage, "cluster.local/ns/ops/*"]}}]
    to: [{operation: {methods: [GET, HEAD], paths: ["/status/*", /ip]}}]
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"], namespaces: [foo, "prod-*"]}}]
    to: [{operation: {methods: [GET, POST], paths: ["/api/{*}/items"]}}]
    when: [{key: "request.auth.claims[groups]", values: [admins, editors]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-admin, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#;

fn bench(c: &mut Criterion) {
    let (set, diags) = load_str("bench.yaml", POLICIES);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let compiled = SecurityPolicies::compile(&set, "istio-system");
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    let authz = compiled.authorization(&WorkloadRef {
        namespace: "foo",
        labels: &labels,
    });
    let mut headers = HeaderMap::new();
    headers.insert("x-token", HeaderValue::from_static("admin"));
    headers.insert("user-agent", HeaderValue::from_static("curl/8.0"));
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), "https://issuer.example".into());
    claims.insert("sub".into(), "alice".into());
    claims.insert("groups".into(), serde_json::json!(["users", "editors"]));
    let auth = RequestAuth {
        principal: "https://issuer.example/alice".into(),
        audiences: vec!["api".into()],
        presenter: None,
        claims,
    };
    let input = |method, path, principal, auth| AuthzInput {
        source_ip: [10, 0, 0, 7].into(),
        remote_ip: [10, 0, 0, 7].into(),
        destination_ip: [10, 0, 0, 1].into(),
        destination_port: 8000,
        principal,
        sni: None,
        http: Some(HttpAttributes {
            host: "httpbin.foo:8000",
            method,
            path,
            headers: &headers,
            request_auth: auth,
        }),
    };
    let allowed = input(
        "POST",
        "/api/v2/items",
        Some("cluster.local/ns/prod-eu/sa/web"),
        Some(&auth),
    );
    assert!(authz.check(&allowed).allowed);
    let denied = input("GET", "/admin", Some("cluster.local/ns/x/sa/y"), None);
    assert!(!authz.check(&denied).allowed);
    let mut guest_headers = HeaderMap::new();
    guest_headers.insert("x-token", HeaderValue::from_static("guest"));
    let mut stopped = input("DELETE", "/ip", None, None);
    if let Some(h) = &mut stopped.http {
        h.headers = &guest_headers;
    }
    assert!(!authz.check(&stopped).allowed);

    let mut g = c.benchmark_group("authz_check");
    g.bench_function("allowed_by_second_allow_rule", |b| {
        b.iter(|| black_box(authz.check(black_box(&allowed))))
    });
    g.bench_function("denied_no_allow_matches", |b| {
        b.iter(|| black_box(authz.check(black_box(&denied))))
    });
    g.bench_function("denied_by_deny_policy", |b| {
        b.iter(|| black_box(authz.check(black_box(&stopped))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
