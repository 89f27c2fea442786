//! AuthorizationPolicy through two real proxies: a table of cases written
//! from Istio's task pages (authorization for HTTP traffic, explicit deny,
//! ingress by IP) and the AuthorizationPolicy reference, with httpbin in
//! namespace `foo` behind proxy B, and callers `sleep` (namespace `foo`)
//! and `other` (namespace `bar`) with mutual TLS, or a plaintext client
//! (no principal). Core's unit table (core/tests/security_authz.rs)
//! covers the matching details; here each case is real traffic.

use http::{Method, StatusCode};

use super::{call, caller, endpoint, server, Answer, From, Served};
use crate::harness::{eventually, write, TestMesh};
use crate::mtls::pki::Root;

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// `cluster.local/ns/foo/sa/sleep` through its proxy.
    Sleep,
    /// `cluster.local/ns/bar/sa/other` through its proxy.
    Other,
    /// Plaintext straight to B's inbound listener.
    Plain,
}

/// One request of a case and whether it is allowed.
struct Req {
    who: Who,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    allowed: bool,
}

fn req(who: Who, method: Method, path: &'static str, allowed: bool) -> Req {
    Req {
        who,
        method,
        path,
        headers: &[],
        allowed,
    }
}

fn with(mut r: Req, headers: &'static [(&'static str, &'static str)]) -> Req {
    r.headers = headers;
    r
}

/// A case: its name (and the page it comes from), the policies of
/// namespace `foo`, and requests with their outcome.
struct Case {
    name: &'static str,
    policies: String,
    requests: Vec<Req>,
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n{spec}---\n"
    )
}

const SELECT: &str = "  selector: {matchLabels: {app: httpbin}}\n";

fn allow_nothing() -> String {
    policy("allow-nothing", "  {}\n")
}

fn deny_method_get() -> String {
    policy(
        "deny-method-get",
        &format!("{SELECT}  action: DENY\n  rules:\n  - to:\n    - operation: {{methods: [GET]}}\n    when:\n    - key: request.headers[x-token]\n      notValues: [admin]\n"),
    )
}

const ADMIN: &[(&str, &str)] = &[("x-token", "admin")];
const GUEST: &[(&str, &str)] = &[("x-token", "guest")];

fn cases() -> Vec<Case> {
    use Who::*;
    let get = Method::GET;
    let post = Method::POST;
    vec![
        Case {
            name: "HTTP traffic task: allow-nothing (spec: {}) denies everyone",
            policies: allow_nothing(),
            requests: vec![
                req(Sleep, get.clone(), "/ip", false),
                req(Plain, get.clone(), "/ip", false),
            ],
        },
        Case {
            name: "HTTP traffic task: allow-nothing, then a viewer policy allowing GET",
            policies: allow_nothing()
                + &policy(
                    "httpbin-viewer",
                    &format!("{SELECT}  action: ALLOW\n  rules:\n  - to:\n    - operation: {{methods: [GET]}}\n"),
                ),
            requests: vec![
                req(Sleep, get.clone(), "/ip", true),
                req(Plain, get.clone(), "/ip", true),
                req(Sleep, post.clone(), "/post", false),
            ],
        },
        Case {
            name: "reference: ALLOW GET by principal to the path prefix /info*",
            policies: policy(
                "httpbin",
                "  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/foo/sa/sleep]}\n    to:\n    - operation: {methods: [GET], paths: [\"/info*\"]}\n",
            ),
            requests: vec![
                req(Sleep, get.clone(), "/info/x", true),
                req(Sleep, get.clone(), "/data", false),
                req(Sleep, post.clone(), "/info", false),
                req(Other, get.clone(), "/info", false),
                // Plaintext has no principal: a principal-based ALLOW refuses it.
                req(Plain, get.clone(), "/info", false),
            ],
        },
        Case {
            name: "explicit deny task: deny-method-get unless x-token is admin",
            policies: deny_method_get(),
            requests: vec![
                req(Sleep, get.clone(), "/get", false),
                with(req(Sleep, get.clone(), "/get", false), GUEST),
                with(req(Sleep, get.clone(), "/get", true), ADMIN),
                req(Sleep, post.clone(), "/post", true),
                req(Plain, get.clone(), "/get", false),
            ],
        },
        Case {
            name: "explicit deny task: deny-method-get with allow-path-ip",
            policies: deny_method_get()
                + &policy(
                    "allow-path-ip",
                    &format!("{SELECT}  action: ALLOW\n  rules:\n  - to:\n    - operation: {{paths: [/ip]}}\n"),
                ),
            requests: vec![
                with(req(Sleep, get.clone(), "/ip", true), ADMIN),
                with(req(Sleep, get.clone(), "/get", false), ADMIN),
                with(req(Sleep, get.clone(), "/ip", false), GUEST),
                with(req(Plain, get.clone(), "/ip", true), ADMIN),
            ],
        },
        Case {
            name: "DENY requests without a token except to notPaths /healthz",
            policies: policy(
                "require-jwt-except-health",
                &format!("{SELECT}  action: DENY\n  rules:\n  - from:\n    - source: {{notRequestPrincipals: [\"*\"]}}\n    to:\n    - operation: {{notPaths: [/healthz]}}\n"),
            ),
            requests: vec![
                req(Sleep, get.clone(), "/headers", false),
                req(Sleep, get.clone(), "/healthz", true),
                req(Plain, get.clone(), "/healthz", true),
            ],
        },
        Case {
            name: "ALLOW from namespaces [foo]",
            policies: policy(
                "from-foo",
                "  action: ALLOW\n  rules:\n  - from:\n    - source: {namespaces: [foo]}\n",
            ),
            requests: vec![
                req(Sleep, get.clone(), "/ip", true),
                req(Other, get.clone(), "/ip", false),
                req(Plain, get.clone(), "/ip", false),
            ],
        },
        Case {
            name: "reference: DENY notNamespaces [foo] at /admin",
            policies: policy(
                "httpbin-deny",
                "  action: DENY\n  rules:\n  - from:\n    - source: {notNamespaces: [foo]}\n    to:\n    - operation: {paths: [/admin]}\n",
            ),
            requests: vec![
                req(Other, get.clone(), "/admin", false),
                req(Other, get.clone(), "/ip", true),
                req(Sleep, get.clone(), "/admin", true),
            ],
        },
        Case {
            name: "ingress task: ALLOW ipBlocks [1.2.3.4, 5.6.7.0/24] refuses loopback peers",
            policies: policy(
                "ingress-policy",
                "  action: ALLOW\n  rules:\n  - from:\n    - source: {ipBlocks: [1.2.3.4, \"5.6.7.0/24\"]}\n",
            ),
            requests: vec![
                req(Sleep, get.clone(), "/ip", false),
                req(Plain, get.clone(), "/ip", false),
            ],
        },
        Case {
            name: "DENY ipBlocks [127.0.0.0/8] at /admin*",
            policies: policy(
                "no-local-admin",
                "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"127.0.0.0/8\"]}\n    to:\n    - operation: {paths: [\"/admin*\"]}\n",
            ),
            requests: vec![
                req(Sleep, get.clone(), "/admin/users", false),
                req(Plain, get.clone(), "/admin", false),
                req(Sleep, get.clone(), "/ip", true),
            ],
        },
    ]
}

/// A policy set under which everything is allowed except requests with
/// `x-baseline: <n>`: a version B provably has in force once such a
/// request is refused while the same request without the header passes.
fn baseline(n: usize) -> String {
    policy(
        "baseline",
        &format!("  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-baseline]\n      values: [\"{n}\"]\n"),
    )
}

struct Setup {
    b: TestMesh,
    sleep: TestMesh,
    other: TestMesh,
}

impl Setup {
    fn from(&self, who: Who) -> From<'_> {
        match who {
            Who::Sleep => From::Proxy(&self.sleep),
            Who::Other => From::Proxy(&self.other),
            Who::Plain => From::Plaintext(self.b.mesh.inbound.expect("inbound")),
        }
    }

    async fn send(&self, r: &Req) -> Answer {
        call(self.from(r.who), "httpbin", &r.method, r.path, r.headers).await
    }

    /// Installs `policies` after a baseline, returning once they are in
    /// force: configs replace each other whole and in order, so once a
    /// request the baseline allows is refused, the new set is in force.
    async fn install(&self, n: usize, case: &Case) {
        write(&self.b.path("routes.yaml"), &baseline(n));
        let probe = req(Who::Sleep, Method::GET, "/baseline", true);
        let value = n.to_string();
        let marked = [("x-baseline", value.as_str())];
        eventually("the baseline in force", || async {
            let open = self.send(&probe).await.0 == StatusCode::OK;
            let sleep = From::Proxy(&self.sleep);
            let closed = call(sleep, "httpbin", &Method::GET, "/baseline", &marked)
                .await
                .0
                == StatusCode::FORBIDDEN;
            (open && closed).then_some(())
        })
        .await;
        write(&self.b.path("routes.yaml"), &case.policies);
        let refused = case
            .requests
            .iter()
            .find(|r| !r.allowed)
            .expect("every case refuses a request");
        eventually(case.name, || async {
            (self.send(refused).await.0 == StatusCode::FORBIDDEN).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_cases_from_istio_docs_through_two_proxies() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let served = [Served {
        name: "httpbin",
        labels: "app: httpbin",
        app: &app,
    }];
    let b = server(&root, "foo", "httpbin", &served, "", "").await;
    let inbound = b.mesh.inbound.expect("inbound");
    let endpoints = [endpoint(
        &app,
        "app: httpbin",
        Some((inbound, "foo", "httpbin")),
    )];
    let sleep = caller(&root, "foo", "sleep", "httpbin", &endpoints, "").await;
    let other = caller(&root, "bar", "other", "httpbin", &endpoints, "").await;
    let s = Setup { b, sleep, other };

    let cases = cases();
    let mut failures = Vec::new();
    let mut requests = 0;
    for (n, case) in cases.iter().enumerate() {
        s.install(n, case).await;
        for r in &case.requests {
            requests += 1;
            let (status, who, body) = s.send(r).await;
            let ok = if r.allowed {
                status == StatusCode::OK && who == "app"
            } else {
                status == StatusCode::FORBIDDEN && body == "RBAC: access denied"
            };
            if !ok {
                failures.push(format!(
                    "{}: {:?} {} {} {:?}: expected {}, got {status} from {who}: {body}",
                    case.name,
                    r.who,
                    r.method,
                    r.path,
                    r.headers,
                    if r.allowed { "200" } else { "403" }
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} requests in {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        super::super::mtls::stats(&s.b)
            .mtls
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2,
        "the callers' proxies spoke mutual TLS"
    );
}
