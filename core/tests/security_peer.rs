//! PeerAuthentication precedence (Istio's PeerAuthentication reference and
//! its composition: workload over namespace over mesh, UNSET inherits,
//! port-level overrides, PERMISSIVE by default) and which
//! RequestAuthentication rules apply to a workload.

use std::collections::BTreeMap;

use anymesh_core::config::load_str;
use anymesh_core::security::jwt::{JwksSource, TokenHeader};
use anymesh_core::security::{MtlsMode, SecurityPolicies, WorkloadRef};

fn pa(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, \
         namespace: {ns}}}\nspec:\n{spec}---\n"
    )
}

fn compile(docs: &[String]) -> SecurityPolicies {
    let (set, diags) = load_str("peer.yaml", &docs.concat());
    assert!(diags.is_empty(), "{diags:#?}");
    SecurityPolicies::compile(&set, "istio-system")
}

fn mode(p: &SecurityPolicies, ns: &str, app: &str, port: u16) -> MtlsMode {
    let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
    p.mtls_mode(
        &WorkloadRef {
            namespace: ns,
            labels: &labels,
        },
        port,
    )
}

use MtlsMode::{Disable, Permissive, Strict};

#[test]
fn no_policy_is_permissive() {
    let p = compile(&[]);
    assert_eq!(mode(&p, "foo", "finance", 8080), Permissive);
}

#[test]
fn mesh_namespace_workload_precedence() {
    let mesh = pa("istio-system", "default", "  mtls: {mode: STRICT}\n");
    let foo = pa("foo", "default", "  mtls: {mode: PERMISSIVE}\n");
    let finance = pa(
        "foo",
        "finance",
        "  selector: {matchLabels: {app: finance}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
    );
    let p = compile(std::slice::from_ref(&mesh));
    assert_eq!(mode(&p, "foo", "web", 80), Strict, "mesh-wide");
    assert_eq!(
        mode(&p, "istio-system", "gw", 80),
        Strict,
        "the root namespace too"
    );
    let p = compile(&[mesh.clone(), foo.clone()]);
    assert_eq!(
        mode(&p, "foo", "web", 80),
        Permissive,
        "namespace over mesh"
    );
    assert_eq!(
        mode(&p, "bar", "web", 80),
        Strict,
        "other namespaces keep the mesh's"
    );
    let p = compile(&[mesh, foo, finance]);
    assert_eq!(
        mode(&p, "foo", "finance", 80),
        Strict,
        "workload over namespace"
    );
    assert_eq!(
        mode(&p, "foo", "finance", 8080),
        Disable,
        "port-level over workload"
    );
    assert_eq!(
        mode(&p, "foo", "web", 8080),
        Permissive,
        "only the selected workload"
    );
    assert_eq!(
        mode(&p, "bar", "finance", 8080),
        Strict,
        "only in its namespace"
    );
}

#[test]
fn unset_inherits() {
    let mesh = pa("istio-system", "default", "  mtls: {mode: STRICT}\n");
    let foo_unset = pa("foo", "default", "  mtls: {mode: UNSET}\n");
    // The reference's example: the workload keeps its namespace's mode and
    // disables mTLS on one port; a port set to UNSET inherits too.
    let finance = pa(
        "foo",
        "finance",
        "  selector: {matchLabels: {app: finance}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    9090: {mode: UNSET}\n",
    );
    let p = compile(&[mesh, foo_unset, finance]);
    assert_eq!(mode(&p, "foo", "web", 80), Strict);
    assert_eq!(mode(&p, "foo", "finance", 80), Strict);
    assert_eq!(mode(&p, "foo", "finance", 8080), Disable);
    assert_eq!(mode(&p, "foo", "finance", 9090), Strict);
    let policy = p.peer_authentication(&WorkloadRef {
        namespace: "foo",
        labels: &BTreeMap::from([("app".to_string(), "finance".to_string())]),
    });
    assert_eq!(
        policy.from,
        ["istio-system/default", "foo/default", "foo/finance"]
    );
}

#[test]
fn selector_policies_in_the_root_namespace_are_ignored_and_the_first_wins() {
    let root_selector = pa(
        "istio-system",
        "sel",
        "  selector: {matchLabels: {app: web}}\n  mtls: {mode: DISABLE}\n",
    );
    let first = pa("foo", "a", "  mtls: {mode: STRICT}\n");
    let second = pa("foo", "b", "  mtls: {mode: DISABLE}\n");
    let p = compile(&[root_selector, first, second]);
    assert_eq!(mode(&p, "istio-system", "web", 80), Permissive);
    assert_eq!(mode(&p, "foo", "web", 80), Strict);
}

fn ra(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, \
         namespace: {ns}}}\nspec:\n{spec}---\n"
    )
}

#[test]
fn request_authentication_rules_merge_for_a_workload() {
    let p = compile(&[
        ra(
            "istio-system",
            "mesh",
            "  jwtRules:\n  - issuer: mesh-issuer\n    jwksUri: https://mesh.example/jwks\n",
        ),
        ra(
            "foo",
            "httpbin",
            "  selector: {matchLabels: {app: httpbin}}\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: '{\"keys\": []}'\n    audiences: [a]\n    fromHeaders: [{name: X-Jwt-Assertion, prefix: \"Bearer \"}]\n    fromParams: [token]\n    outputPayloadToHeader: X-Payload\n    outputClaimToHeaders: [{header: X-Sub, claim: sub}]\n    forwardOriginalToken: true\n    timeout: 2s\n",
        ),
        ra(
            "bar",
            "other",
            "  jwtRules:\n  - issuer: bar-issuer\n    jwksUri: https://bar.example/jwks\n",
        ),
    ]);
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    let rules = p.jwt_rules(&WorkloadRef {
        namespace: "foo",
        labels: &labels,
    });
    let issuers: Vec<&str> = rules.iter().map(|r| r.issuer.as_str()).collect();
    assert_eq!(issuers, ["mesh-issuer", "testing@secure.istio.io"]);
    let r = &rules[1];
    assert_eq!(r.jwks, JwksSource::Inline("{\"keys\": []}".into()));
    assert_eq!(
        r.from_headers,
        [TokenHeader {
            name: "x-jwt-assertion".into(),
            prefix: "Bearer ".into()
        }]
    );
    assert_eq!(r.from_params, ["token"]);
    assert_eq!(r.output_payload_to_header.as_deref(), Some("x-payload"));
    assert_eq!(r.output_claim_to_headers[0].header, "x-sub");
    assert!(r.forward_original_token);
    assert_eq!(r.fetch_timeout, std::time::Duration::from_secs(2));
    assert_eq!(rules[0].fetch_timeout, std::time::Duration::from_secs(5));
    let other = BTreeMap::new();
    let rules = p.jwt_rules(&WorkloadRef {
        namespace: "foo",
        labels: &other,
    });
    assert_eq!(
        rules.len(),
        1,
        "the selector does not match: only the mesh rule"
    );
}
