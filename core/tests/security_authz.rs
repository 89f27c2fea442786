//! AuthorizationPolicy decisions, one row per case, written from Istio's
//! documentation: the AuthorizationPolicy reference examples and the
//! authorization tasks (HTTP traffic, explicit deny, JWT, ingress, trust
//! domain migration, TCP). Each row loads its policies as a file would,
//! compiles them and checks one request against one workload.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anymesh_core::config::load_str;
use anymesh_core::security::jwt::RequestAuth;
use anymesh_core::security::{
    AuthzInput, DecisionReason, HttpAttributes, SecurityOptions, SecurityPolicies, WorkloadRef,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A request as the inbound side sees it.
#[derive(Clone)]
struct Req {
    principal: Option<&'static str>,
    source_ip: &'static str,
    remote_ip: Option<&'static str>,
    port: u16,
    /// `None`: a plain TCP connection.
    http: Option<(&'static str, &'static str, &'static str)>,
    headers: Vec<(&'static str, &'static str)>,
    jwt: Option<RequestAuth>,
}

fn get(path: &'static str) -> Req {
    Req {
        principal: None,
        source_ip: "10.0.0.9",
        remote_ip: None,
        port: 8000,
        http: Some(("GET", path, "httpbin.foo:8000")),
        headers: Vec::new(),
        jwt: None,
    }
}

impl Req {
    fn method(mut self, m: &'static str) -> Self {
        if let Some(h) = &mut self.http {
            h.0 = m;
        }
        self
    }
    fn from(mut self, principal: &'static str) -> Self {
        self.principal = Some(principal);
        self
    }
    fn ip(mut self, ip: &'static str) -> Self {
        self.source_ip = ip;
        self
    }
    fn remote(mut self, ip: &'static str) -> Self {
        self.remote_ip = Some(ip);
        self
    }
    fn host(mut self, host: &'static str) -> Self {
        if let Some(h) = &mut self.http {
            h.2 = host;
        }
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    fn tcp(mut self) -> Self {
        self.http = None;
        self
    }
    fn jwt(mut self, iss: &str, sub: &str, claims: serde_json::Value) -> Self {
        let mut map = claims.as_object().cloned().unwrap_or_default();
        map.insert("iss".into(), iss.into());
        map.insert("sub".into(), sub.into());
        let audiences = match map.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        self.jwt = Some(RequestAuth {
            principal: format!("{iss}/{sub}"),
            audiences,
            presenter: map.get("azp").and_then(|v| v.as_str()).map(str::to_string),
            claims: map,
        });
        self
    }
}

/// The workload checked: `namespace` and `app` label.
struct Workload(&'static str, &'static str);

fn decide(
    policies: &str,
    options: &SecurityOptions,
    w: &Workload,
    r: &Req,
) -> (bool, DecisionReason, Option<String>) {
    let (set, diags) = load_str("policies.yaml", policies);
    assert!(
        diags.iter().all(|d| !d.is_error()),
        "policies do not load: {diags:#?}"
    );
    let compiled = SecurityPolicies::compile_with(&set, options);
    let labels = BTreeMap::from([("app".to_string(), w.1.to_string())]);
    let authz = compiled.authorization(&WorkloadRef {
        namespace: w.0,
        labels: &labels,
    });
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let input = AuthzInput {
        source_ip: ip(r.source_ip),
        remote_ip: ip(r.remote_ip.unwrap_or(r.source_ip)),
        destination_ip: ip("10.0.0.1"),
        destination_port: r.port,
        principal: r.principal,
        sni: None,
        http: r.http.map(|(method, path, host)| HttpAttributes {
            host,
            method,
            path,
            headers: &headers,
            request_auth: r.jwt.as_ref(),
        }),
    };
    let d = authz.check(&input);
    (d.allowed, d.reason, d.policy.map(str::to_string))
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n{spec}---\n"
    )
}

const PRODUCTPAGE_SA: &str = "cluster.local/ns/default/sa/bookinfo-productpage";
const REVIEWS_SA: &str = "cluster.local/ns/default/sa/bookinfo-reviews";
const SLEEP_SA: &str = "cluster.local/ns/foo/sa/sleep";

fn http_task() -> String {
    [
        policy("default", "allow-nothing", "  {}\n"),
        policy(
            "default",
            "productpage-viewer",
            "  selector: {matchLabels: {app: productpage}}\n  action: ALLOW\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n",
        ),
        policy(
            "default",
            "details-viewer",
            "  selector: {matchLabels: {app: details}}\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}\n    to:\n    - operation: {methods: [GET]}\n",
        ),
        policy(
            "default",
            "ratings-viewer",
            "  selector: {matchLabels: {app: ratings}}\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/bookinfo-reviews]}\n    to:\n    - operation: {methods: [GET]}\n",
        ),
    ]
    .concat()
}

fn deny_task(with_allow: bool) -> String {
    let mut out = policy(
        "foo",
        "deny-method-get",
        "  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n    when:\n    - key: request.headers[x-token]\n      notValues: [admin]\n",
    );
    if with_allow {
        out += &policy(
            "foo",
            "allow-path-ip",
            "  selector: {matchLabels: {app: httpbin}}\n  action: ALLOW\n  rules:\n  - to:\n    - operation: {paths: [/ip]}\n",
        );
    }
    out
}

const JWT_REQUIRE: &str = "  selector: {matchLabels: {app: httpbin}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {requestPrincipals: [testing@secure.istio.io/testing@secure.istio.io]}\n";
const JWT_GROUPS: &str = "  selector: {matchLabels: {app: httpbin}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {requestPrincipals: [testing@secure.istio.io/testing@secure.istio.io]}\n    when:\n    - key: request.auth.claims[groups]\n      values: [group1]\n";
const ISS: &str = "testing@secure.istio.io";

/// One case: name, policies, workload, request, allowed, and (when
/// denied by a policy) its `namespace/name`.
type Case = (
    &'static str,
    String,
    Workload,
    Req,
    bool,
    Option<&'static str>,
);

fn cases() -> Vec<Case> {
    let httpbin = || Workload("foo", "httpbin");
    vec![
        // --- Authorization for HTTP traffic (bookinfo, namespace default).
        ("allow-nothing denies the product page", policy("default", "allow-nothing", "  {}\n"), Workload("default", "productpage"), get("/productpage"), false, None),
        ("productpage-viewer allows GET", http_task(), Workload("default", "productpage"), get("/productpage"), true, Some("default/productpage-viewer")),
        ("productpage-viewer does not allow POST", http_task(), Workload("default", "productpage"), get("/productpage").method("POST"), false, None),
        ("details: productpage's identity may GET", http_task(), Workload("default", "details"), get("/details/0").from(PRODUCTPAGE_SA), true, Some("default/details-viewer")),
        ("details: another identity may not", http_task(), Workload("default", "details"), get("/details/0").from(REVIEWS_SA), false, None),
        ("details: plaintext (no principal) may not", http_task(), Workload("default", "details"), get("/details/0"), false, None),
        ("ratings: reviews' identity may GET", http_task(), Workload("default", "ratings"), get("/ratings/0").from(REVIEWS_SA), true, Some("default/ratings-viewer")),
        ("the default namespace's policies do not reach foo", http_task(), httpbin(), get("/ip"), true, None),
        // --- Explicit deny (httpbin in foo).
        ("deny GET without the admin token", deny_task(false), httpbin(), get("/get"), false, Some("foo/deny-method-get")),
        ("deny GET: x-token guest is denied", deny_task(false), httpbin(), get("/get").header("x-token", "guest"), false, Some("foo/deny-method-get")),
        ("deny GET: x-token admin passes", deny_task(false), httpbin(), get("/get").header("x-token", "admin"), true, None),
        ("deny GET: POST is not denied", deny_task(false), httpbin(), get("/post").method("POST"), true, None),
        ("allow-path-ip: admin may GET /ip", deny_task(true), httpbin(), get("/ip").header("x-token", "admin"), true, Some("foo/allow-path-ip")),
        ("allow-path-ip: admin may not GET /get", deny_task(true), httpbin(), get("/get").header("x-token", "admin"), false, None),
        ("allow-path-ip: DENY is evaluated first", deny_task(true), httpbin(), get("/ip").header("x-token", "guest"), false, Some("foo/deny-method-get")),
        // --- JWT (RequestAuthentication verified the token before this).
        ("require-jwt: a valid token is allowed", policy("foo", "require-jwt", JWT_REQUIRE), httpbin(), get("/headers").jwt(ISS, ISS, serde_json::json!({})), true, Some("foo/require-jwt")),
        ("require-jwt: no token is denied", policy("foo", "require-jwt", JWT_REQUIRE), httpbin(), get("/headers"), false, None),
        ("require-jwt: another subject is denied", policy("foo", "require-jwt", JWT_REQUIRE), httpbin(), get("/headers").jwt(ISS, "someone", serde_json::json!({})), false, None),
        ("groups claim: group1 among the groups", policy("foo", "require-jwt", JWT_GROUPS), httpbin(), get("/headers").jwt(ISS, ISS, serde_json::json!({"groups": ["group1", "group2"]})), true, Some("foo/require-jwt")),
        ("groups claim: a token without groups", policy("foo", "require-jwt", JWT_GROUPS), httpbin(), get("/headers").jwt(ISS, ISS, serde_json::json!({})), false, None),
        ("nested claim [a][b]", policy("foo", "nested", "  rules:\n  - when:\n    - key: request.auth.claims[realm][roles]\n      values: [admin]\n"), httpbin(), get("/").jwt(ISS, "u", serde_json::json!({"realm": {"roles": ["user", "admin"]}})), true, Some("foo/nested")),
        ("requestPrincipals * needs a token", policy("foo", "any-jwt", "  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n"), httpbin(), get("/"), false, None),
        ("requestPrincipals * with a token", policy("foo", "any-jwt", "  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n"), httpbin(), get("/").jwt("iss", "sub", serde_json::json!({})), true, Some("foo/any-jwt")),
        ("deny requests without a token (notRequestPrincipals *)", policy("foo", "deny-no-jwt", "  action: DENY\n  rules:\n  - from:\n    - source: {notRequestPrincipals: [\"*\"]}\n"), httpbin(), get("/"), false, Some("foo/deny-no-jwt")),
        ("audiences and presenter", policy("foo", "aud", "  rules:\n  - when:\n    - {key: request.auth.audiences, values: [\"*.my-svc.com\"]}\n    - {key: request.auth.presenter, values: [app.my-svc.com]}\n"), httpbin(), get("/").jwt("i", "s", serde_json::json!({"aud": ["x", "api.my-svc.com"], "azp": "app.my-svc.com"})), true, Some("foo/aud")),
        ("request.auth.principal condition", policy("foo", "who", "  rules:\n  - when:\n    - {key: request.auth.principal, values: [\"accounts.my-svc.com/104958560606\"]}\n"), httpbin(), get("/").jwt("accounts.my-svc.com", "104958560606", serde_json::json!({})), true, Some("foo/who")),
        // --- The AuthorizationPolicy reference examples.
        ("reference ALLOW: sleep's identity GETs /info*", reference_allow(), httpbin(), get("/info/x").from(SLEEP_SA).jwt("issuer.example.com", "u", serde_json::json!({})), true, Some("foo/httpbin")),
        ("reference ALLOW: sleep without a token", reference_allow(), httpbin(), get("/info/x").from(SLEEP_SA), false, None),
        ("reference ALLOW: namespace test may POST /data", reference_allow(), httpbin(), get("/data").method("POST").from("cluster.local/ns/test/sa/x").jwt("issuer.example.com", "u", serde_json::json!({})), true, Some("foo/httpbin")),
        ("reference ALLOW: namespace test may not GET /data", reference_allow(), httpbin(), get("/data").from("cluster.local/ns/test/sa/x").jwt("issuer.example.com", "u", serde_json::json!({})), false, None),
        ("reference ALLOW: another issuer is refused", reference_allow(), httpbin(), get("/info").from(SLEEP_SA).jwt("other.example.com", "u", serde_json::json!({})), false, None),
        ("reference DENY: not from foo, at /admin", reference_deny(), httpbin(), get("/admin").jwt("iss", "s", serde_json::json!({})), false, Some("foo/httpbin-deny")),
        ("reference DENY: from foo is fine", reference_deny(), httpbin(), get("/admin").from(SLEEP_SA).jwt("iss", "s", serde_json::json!({})), true, None),
        ("reference DENY: without a token", reference_deny(), httpbin(), get("/public").from(SLEEP_SA), false, Some("foo/httpbin-deny")),
        ("allow-all rule {} allows", policy("foo", "allow-all", "  rules:\n  - {}\n"), httpbin(), get("/anything").method("DELETE"), true, Some("foo/allow-all")),
        ("deny-all rule {} denies", policy("foo", "deny-all", "  action: DENY\n  rules:\n  - {}\n"), httpbin(), get("/"), false, Some("foo/deny-all")),
        ("root namespace policy applies to every namespace", policy("istio-system", "global-deny", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin*]}\n"), httpbin(), get("/admin/x"), false, Some("istio-system/global-deny")),
        ("selector in another namespace does not apply", policy("bar", "deny-httpbin", "  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules:\n  - {}\n"), httpbin(), get("/"), true, None),
        ("selector that does not match does not apply", policy("foo", "deny-other", "  selector: {matchLabels: {app: other}}\n  action: DENY\n  rules:\n  - {}\n"), httpbin(), get("/"), true, None),
        ("AUDIT only marks", policy("foo", "audit", "  action: AUDIT\n  rules:\n  - {}\n"), httpbin(), get("/"), true, None),
        ("CUSTOM fails closed on a match", policy("foo", "ext", "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n"), httpbin(), get("/admin"), false, Some("foo/ext")),
        ("CUSTOM does not touch what it does not match", policy("foo", "ext", "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n"), httpbin(), get("/public"), true, None),
        // --- Matching details.
        ("hosts are case-insensitive", policy("foo", "h", "  rules:\n  - to:\n    - operation: {hosts: [\"*.example.com\"]}\n"), httpbin(), get("/").host("API.Example.COM"), true, Some("foo/h")),
        ("hosts compare the port as sent", policy("foo", "h", "  rules:\n  - to:\n    - operation: {hosts: [api.example.com]}\n"), httpbin(), get("/").host("api.example.com:8000"), false, None),
        ("hosts with a port wildcard", policy("foo", "h", "  rules:\n  - to:\n    - operation: {hosts: [api.example.com, \"api.example.com:*\"]}\n"), httpbin(), get("/").host("api.example.com:8000"), true, Some("foo/h")),
        ("notPaths with a suffix", policy("foo", "p", "  rules:\n  - to:\n    - operation: {notPaths: [\"*.secret\"]}\n"), httpbin(), get("/a/b.secret"), false, None),
        ("path template {*}", policy("foo", "t", "  rules:\n  - to:\n    - operation: {paths: [\"/users/{*}/profile\"]}\n"), httpbin(), get("/users/ann/profile"), true, Some("foo/t")),
        ("path template {*} is one segment", policy("foo", "t", "  rules:\n  - to:\n    - operation: {paths: [\"/users/{*}/profile\"]}\n"), httpbin(), get("/users/a/b/profile"), false, None),
        ("ports as numbers", policy("foo", "port", "  rules:\n  - to:\n    - operation: {ports: [\"8000\"]}\n"), httpbin(), get("/").port(9000), false, None),
        ("principal prefix", policy("foo", "pp", "  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/foo/*\"]}\n"), httpbin(), get("/").from(SLEEP_SA), true, Some("foo/pp")),
        ("principal suffix", policy("foo", "ps", "  rules:\n  - from:\n    - source: {principals: [\"*/sa/sleep\"]}\n"), httpbin(), get("/").from("td/ns/x/sa/sleep"), true, Some("foo/ps")),
        ("principal * needs mTLS", policy("foo", "any", "  rules:\n  - from:\n    - source: {principals: [\"*\"]}\n"), httpbin(), get("/"), false, None),
        ("namespace wildcard", policy("foo", "nsw", "  rules:\n  - from:\n    - source: {namespaces: [\"prod-*\"]}\n"), httpbin(), get("/").from("cluster.local/ns/prod-eu/sa/a"), true, Some("foo/nsw")),
        ("serviceAccounts: bare name is in the policy's namespace", policy("foo", "sa", "  rules:\n  - from:\n    - source: {serviceAccounts: [sleep]}\n"), httpbin(), get("/").from(SLEEP_SA), true, Some("foo/sa")),
        ("serviceAccounts: other namespace", policy("foo", "sa", "  rules:\n  - from:\n    - source: {serviceAccounts: [sleep]}\n"), httpbin(), get("/").from("cluster.local/ns/bar/sa/sleep"), false, None),
        ("ipBlocks CIDR", policy("foo", "ip", "  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.0/16\"], notIpBlocks: [10.0.0.66]}\n"), httpbin(), get("/").ip("10.0.3.4"), true, Some("foo/ip")),
        ("notIpBlocks excludes", policy("foo", "ip", "  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.0/16\"], notIpBlocks: [10.0.0.66]}\n"), httpbin(), get("/").ip("10.0.0.66"), false, None),
        ("ipv6 blocks", policy("foo", "ip6", "  rules:\n  - from:\n    - source: {ipBlocks: [\"2001:db8::/32\"]}\n"), httpbin(), get("/").ip("2001:db8::5"), true, Some("foo/ip6")),
        // --- Ingress task: source IP and original client IP.
        ("ingress: remoteIpBlocks reads the original client", policy("foo", "ingress-policy", "  action: ALLOW\n  rules:\n  - from:\n    - source: {remoteIpBlocks: [1.2.3.4, \"5.6.7.0/24\"]}\n"), httpbin(), get("/").ip("10.0.0.2").remote("5.6.7.8"), true, Some("foo/ingress-policy")),
        ("ingress: ipBlocks reads the peer, not the client", policy("foo", "ingress-policy", "  action: ALLOW\n  rules:\n  - from:\n    - source: {ipBlocks: [1.2.3.4]}\n"), httpbin(), get("/").ip("10.0.0.2").remote("1.2.3.4"), false, None),
        ("ingress: DENY a client block", policy("foo", "ingress-policy", "  action: DENY\n  rules:\n  - from:\n    - source: {remoteIpBlocks: [1.2.3.4]}\n"), httpbin(), get("/").remote("1.2.3.4"), false, Some("foo/ingress-policy")),
        // --- TCP (no HTTP request).
        ("tcp: ALLOW on ports allows", policy("foo", "tcp", "  rules:\n  - to:\n    - operation: {ports: [\"9000\"]}\n"), httpbin(), get("/").tcp().port(9000), true, Some("foo/tcp")),
        ("tcp: an ALLOW rule with HTTP fields never matches", policy("foo", "tcp", "  rules:\n  - to:\n    - operation: {methods: [GET], ports: [\"9000\"]}\n"), httpbin(), get("/").tcp().port(9000), false, None),
        ("tcp: a DENY rule drops its HTTP fields", policy("foo", "tcp-deny", "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [GET], ports: [\"9000\"]}\n"), httpbin(), get("/").tcp().port(9000), false, Some("foo/tcp-deny")),
        // --- Conditions.
        ("when source.namespace and destination.port", policy("foo", "w", "  rules:\n  - when:\n    - {key: source.namespace, values: [foo]}\n    - {key: destination.port, values: [\"8000\"]}\n"), httpbin(), get("/").from(SLEEP_SA), true, Some("foo/w")),
        ("when header prefix", policy("foo", "w", "  rules:\n  - when:\n    - key: request.headers[User-Agent]\n      values: [\"Mozilla/*\"]\n"), httpbin(), get("/").header("user-agent", "Mozilla/5.0"), true, Some("foo/w")),
        ("when header * is presence", policy("foo", "w", "  rules:\n  - when:\n    - key: request.headers[x-id]\n      values: [\"*\"]\n"), httpbin(), get("/").header("x-id", ""), true, Some("foo/w")),
        ("experimental keys: ALLOW never matches", policy("foo", "x", "  rules:\n  - when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n"), httpbin(), get("/"), false, None),
        ("experimental keys: DENY always matches", policy("foo", "x", "  action: DENY\n  rules:\n  - when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n"), httpbin(), get("/"), false, Some("foo/x")),
    ]
}

fn reference_allow() -> String {
    policy(
        "foo",
        "httpbin",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/sleep\", \"cluster.local/ns/foo/sa/sleep\"]\n        requestPrincipals: [\"issuer.example.com/*\"]\n    to:\n    - operation: {methods: [GET], paths: [\"/info*\"]}\n  - from:\n    - source:\n        namespaces: [test]\n        requestPrincipals: [\"issuer.example.com/*\"]\n    to:\n    - operation: {methods: [POST], paths: [/data]}\n",
    )
}

fn reference_deny() -> String {
    policy(
        "foo",
        "httpbin-deny",
        "  action: DENY\n  rules:\n  - from:\n    - source: {notNamespaces: [foo]}\n    to:\n    - operation: {paths: [/admin]}\n  - from:\n    - source: {notRequestPrincipals: [\"*\"]}\n",
    )
}

#[test]
fn authorization_policy_cases_from_istio_docs() {
    let options = SecurityOptions::default();
    let mut failures = Vec::new();
    let cases = cases();
    for (name, policies, workload, req, allowed, policy) in &cases {
        let (got, reason, by) = decide(policies, &options, workload, req);
        if got != *allowed || by.as_deref() != *policy {
            failures.push(format!(
                "{name}: allowed {got} ({reason:?}, {by:?}), want {allowed} ({policy:?})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn trust_domain_migration() {
    // Istio's task: a policy written for the old trust domain keeps
    // working for peers of the new one when the old is an alias.
    let p = policy(
        "default",
        "service-httpbin.default.svc.cluster.local",
        "  rules:\n  - from:\n    - source: {principals: [old-td/ns/foo/sa/sleep]}\n",
    );
    let w = Workload("default", "httpbin");
    let peer = get("/ip").from("new-td/ns/foo/sa/sleep");
    let without = SecurityOptions {
        trust_domain: "new-td".into(),
        ..SecurityOptions::default()
    };
    assert!(!decide(&p, &without, &w, &peer).0, "no alias: denied");
    let with = SecurityOptions {
        trust_domain_aliases: vec!["old-td".into()],
        ..without.clone()
    };
    assert!(
        decide(&p, &with, &w, &peer).0,
        "old-td is an alias: allowed"
    );
    // `cluster.local` in a principal stands for the mesh's trust domain.
    let local = policy(
        "default",
        "local",
        "  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/foo/sa/sleep]}\n",
    );
    assert!(decide(&local, &without, &w, &peer).0);
    assert!(
        !decide(
            &local,
            &without,
            &w,
            &get("/").from("other-td/ns/foo/sa/sleep")
        )
        .0
    );
}

#[test]
fn audit_marks_without_deciding() {
    let (set, _) = load_str(
        "p.yaml",
        &[
            policy(
                "foo",
                "audit-admin",
                "  action: AUDIT\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n",
            ),
            policy(
                "foo",
                "deny-delete",
                "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [DELETE]}\n",
            ),
        ]
        .concat(),
    );
    let compiled = SecurityPolicies::compile(&set, "istio-system");
    let labels = BTreeMap::new();
    let authz = compiled.authorization(&WorkloadRef {
        namespace: "foo",
        labels: &labels,
    });
    let headers = HeaderMap::new();
    let input = |method, path| AuthzInput {
        source_ip: [10, 0, 0, 1].into(),
        remote_ip: [10, 0, 0, 1].into(),
        destination_ip: [10, 0, 0, 2].into(),
        destination_port: 80,
        principal: None,
        sni: None,
        http: Some(HttpAttributes {
            host: "h",
            method,
            path,
            headers: &headers,
            request_auth: None,
        }),
    };
    let d = authz.check(&input("GET", "/admin"));
    assert!(d.allowed);
    assert_eq!(d.audit, Some("foo/audit-admin"));
    let d = authz.check(&input("DELETE", "/admin"));
    assert!(!d.allowed);
    assert_eq!(
        (d.policy, d.audit),
        (Some("foo/deny-delete"), Some("foo/audit-admin"))
    );
    assert_eq!(authz.check(&input("GET", "/")).audit, None);
}
