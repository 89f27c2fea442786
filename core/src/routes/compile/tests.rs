//! Pure compiler tests: a catalog snapshot and YAML config in, a table out.

use std::time::SystemTime;

use http::HeaderMap;

use super::*;

mod resilience;
use crate::catalog::CatalogState;
use crate::config::load_str;
use crate::model::{Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Provenance};
use crate::model::{Service, SourceId};
use crate::registry::{Change, SourceView, SourcedChange};
use crate::routes::table::{
    ExclusionReason, HashKey, LbPolicy, RequestInfo, RouteAction, RouteMiss,
};

fn host(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn port(name: &str, number: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        number,
        protocol,
    }
}

fn service(name: &str, aliases: &[&str], ports: Vec<ServicePort>) -> Service {
    Service {
        hostname: host(name),
        aliases: aliases.iter().map(|a| host(a)).collect(),
        ports,
    }
}

/// An endpoint serving every service port on 8080.
fn ep(id: &str, svc: &str, version: &str, health: Health) -> Endpoint {
    Endpoint {
        service: host(svc),
        address: format!(
            "10.0.0.{}",
            id.bytes().map(usize::from).sum::<usize>() % 250
        ),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 8080,
        }],
        labels: Labels::from([("version".to_string(), version.to_string())]),
        health,
        weight: 1,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("file"),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    }
}

fn snapshot(services: Vec<Service>, endpoints: Vec<Endpoint>) -> Snapshot {
    let mut state = CatalogState::new([SourceId::new("file")]);
    state.apply(SourcedChange {
        source: SourceId::new("file"),
        change: Change::Reset(SourceView {
            services,
            endpoints,
        }),
        at: SystemTime::now(),
    });
    state.snapshot(7)
}

fn config(yaml: &str) -> ConfigSet {
    let (set, diags) = load_str("routes.yaml", yaml);
    assert!(!crate::config::has_errors(&diags), "{diags:#?}");
    set
}

/// The reviews service: ports 9080 (http) and 9090 (grpc), alias `reviews`,
/// endpoints v1 (healthy), v2 (healthy), v3 (unhealthy).
fn bookinfo() -> Snapshot {
    snapshot(
        vec![
            service(
                "reviews.prod.svc",
                &["reviews"],
                vec![
                    port("http", 9080, Protocol::Http),
                    port("grpc", 9090, Protocol::Grpc),
                ],
            ),
            service("ratings", &[], vec![port("http", 80, Protocol::Http)]),
        ],
        vec![
            ep("r1", "reviews.prod.svc", "v1", Health::Healthy),
            ep("r2", "reviews.prod.svc", "v2", Health::Healthy),
            ep("r3", "reviews.prod.svc", "v3", Health::Unhealthy),
            ep("ra", "ratings", "v1", Health::Healthy),
        ],
    )
}

const DR: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}}
";

const VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
";

/// `(cluster name, weight)` of the route a request hits.
fn targets(table: &RouteTable, authority: &str, headers: &HeaderMap) -> Vec<(String, u32)> {
    let req = RequestInfo {
        method: "GET",
        authority,
        path: "/",
        query: None,
        headers,
    };
    match table.route(&req).map(|hit| &hit.route.action) {
        Ok(RouteAction::Forward(split)) => split
            .targets
            .iter()
            .map(|t| (t.cluster.name.clone(), t.weight))
            .collect(),
        other => panic!("{authority}: no forward route: {other:?}"),
    }
}

fn cluster<'t>(table: &'t RouteTable, name: &str) -> &'t Cluster {
    table
        .cluster(name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn one(name: &str) -> Vec<(String, u32)> {
    vec![(name.to_string(), 100)]
}

#[test]
fn default_routes_cover_every_name_and_port() {
    let (t, diags) = compile(&bookinfo(), &ConfigSet::default(), 3);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!((t.version, t.catalog_version), (3, 7));
    let h = HeaderMap::new();
    for authority in [
        "reviews.prod.svc",
        "reviews",
        "REVIEWS:9080",
        "reviews:1234",
    ] {
        assert_eq!(
            targets(&t, authority, &h),
            one("outbound|9080||reviews.prod.svc"),
            "{authority}"
        );
    }
    assert_eq!(
        targets(&t, "reviews:9090", &h),
        one("outbound|9090||reviews.prod.svc")
    );
    assert_eq!(targets(&t, "ratings", &h), one("outbound|80||ratings"));
    assert_eq!(
        t.route(&RequestInfo {
            method: "GET",
            authority: "nowhere",
            path: "/",
            query: None,
            headers: &h
        })
        .err(),
        Some(RouteMiss::NoVirtualHost)
    );
    let c = cluster(&t, "outbound|9080||reviews.prod.svc");
    assert_eq!(c.lb, LbPolicy::RoundRobin);
    assert_eq!(c.endpoints.len(), 2);
    assert!(c.endpoints.iter().all(|e| e.authority.ends_with(":8080")));
    for (i, c) in t.clusters.iter().enumerate() {
        assert_eq!(c.index, i);
    }
}

#[test]
fn virtual_service_replaces_default_routes() {
    let (t, diags) = compile(&bookinfo(), &config(&format!("{VS}---\n{DR}")), 1);
    assert!(diags.is_empty(), "{diags:?}");
    let mut jason = HeaderMap::new();
    jason.insert("end-user", "jason".parse().unwrap());
    assert_eq!(
        targets(&t, "reviews", &jason),
        one("outbound|9080|v2|reviews.prod.svc")
    );
    assert_eq!(
        targets(&t, "reviews.prod.svc", &HeaderMap::new()),
        vec![
            ("outbound|9080|v1|reviews.prod.svc".to_string(), 75),
            ("outbound|9080|v2|reviews.prod.svc".to_string(), 25)
        ]
    );
    // The destination port follows the request's port when the service has it.
    assert_eq!(
        targets(&t, "reviews:9090", &jason),
        one("outbound|9090|v2|reviews.prod.svc")
    );
    // Other services keep their default route.
    assert_eq!(targets(&t, "ratings", &jason), one("outbound|80||ratings"));
    let vh = t.virtual_host("reviews").unwrap();
    assert_eq!(vh.name, "VirtualService default/reviews port 9080");
    assert_eq!(&*vh.routes[1].name, "default/reviews/http[1]");
}

#[test]
fn subsets_select_by_label_and_health() {
    let drain = |id, v| ep(id, "reviews.prod.svc", v, Health::Draining);
    let snap = snapshot(
        vec![service(
            "reviews.prod.svc",
            &["reviews"],
            vec![port("http", 9080, Protocol::Http)],
        )],
        vec![
            ep("r1", "reviews.prod.svc", "v1", Health::Healthy),
            ep("r1-bad", "reviews.prod.svc", "v1", Health::Unhealthy),
            drain("r1-drain", "v1"),
            drain("r2-drain", "v2"),
        ],
    );
    let (t, _) = compile(&snap, &config(&format!("{VS}---\n{DR}")), 1);
    let v1 = cluster(&t, "outbound|9080|v1|reviews.prod.svc");
    let eligible: Vec<&str> = v1.endpoints.iter().map(|e| &*e.key.native_id).collect();
    assert_eq!(eligible, ["r1"]);
    let excluded: Vec<(&str, &ExclusionReason)> = v1
        .excluded
        .iter()
        .map(|e| (&*e.key.native_id, &e.reason))
        .collect();
    assert_eq!(
        excluded,
        [
            ("r1-bad", &ExclusionReason::Unhealthy),
            (
                "r2-drain",
                &ExclusionReason::LabelMismatch {
                    missing: Labels::from([("version".into(), "v1".into())])
                }
            ),
            ("r1-drain", &ExclusionReason::Draining),
        ]
    );
    // Nothing healthy in v2: the draining endpoint is used.
    let v2 = cluster(&t, "outbound|9080|v2|reviews.prod.svc");
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(&*v2.endpoints[0].key.native_id, "r2-drain");
    assert_eq!(v2.selector, Labels::from([("version".into(), "v2".into())]));
}

#[test]
fn load_balancer_subset_policy_overrides_rule_policy() {
    let vs = VS.replace(
        "subset: v2}}]",
        "subset: v2}}]\n  - route: [{destination: {host: reviews}}]",
    );
    let (t, _) = compile(&bookinfo(), &config(&format!("{vs}---\n{DR}")), 1);
    assert_eq!(
        cluster(&t, "outbound|9080|v1|reviews.prod.svc").lb,
        LbPolicy::Random
    );
    match &cluster(&t, "outbound|9080|v2|reviews.prod.svc").lb {
        LbPolicy::ConsistentHash(h) => {
            assert_eq!(
                h.key,
                HashKey::Header(http::HeaderName::from_static("x-user"))
            );
            assert_eq!(h.table_size, Some(65537));
        }
        other => panic!("{other:?}"),
    }
    // Without VirtualService, the default route uses the rule's top-level policy.
    let (t, _) = compile(
        &bookinfo(),
        &config(&DR.replace("LEAST_REQUEST", "LEAST_CONN")),
        1,
    );
    assert_eq!(
        cluster(&t, "outbound|9080||reviews.prod.svc").lb,
        LbPolicy::LeastRequest
    );
}

#[test]
fn wildcard_hosts_claim_services_and_unknown_names() {
    let snap = snapshot(
        vec![
            service("a.example.com", &[], vec![port("http", 80, Protocol::Http)]),
            service("b.example.com", &[], vec![port("http", 80, Protocol::Http)]),
        ],
        vec![],
    );
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild}
spec:
  hosts: ['*.example.com']
  http: [{route: [{destination: {host: a.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: exact}
spec:
  hosts: [b.example.com]
  http: [{directResponse: {status: 204}}]
";
    let (t, diags) = compile(&snap, &config(yaml), 1);
    assert!(diags.is_empty(), "{diags:?}");
    let h = HeaderMap::new();
    // Claimed by the wildcard, routed to a.
    assert_eq!(
        targets(&t, "a.example.com", &h),
        one("outbound|80||a.example.com")
    );
    // Not a service, but covered by the wildcard.
    assert_eq!(
        targets(&t, "zzz.example.com:8080", &h),
        one("outbound|80||a.example.com")
    );
    // An exact host beats the wildcard.
    let req = RequestInfo {
        method: "GET",
        authority: "b.example.com",
        path: "/",
        query: None,
        headers: &h,
    };
    let hit = t.route(&req).unwrap();
    assert_eq!(hit.vhost.name, "VirtualService default/exact");
    assert!(matches!(hit.route.action, RouteAction::DirectResponse(ref d) if d.status == 204));
}

#[test]
fn unknown_hosts_warn_and_still_compile() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost}
spec:
  hosts: [ratings, ghost.example]
  http: [{route: [{destination: {host: nowhere, port: {number: 8000}}}]}]
";
    let (t, diags) = compile(&bookinfo(), &config(yaml), 1);
    let lines: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {d}", d.severity))
        .collect();
    assert_eq!(
        lines,
        [
            "warning: routes.yaml: VirtualService default/ghost: spec.http[0].route[0].destination.host: host 'nowhere' resolves to no service; requests sent to this destination get 503",
            "warning: routes.yaml: VirtualService default/ghost: spec.hosts[1]: host 'ghost.example' resolves to no service",
        ]
    );
    let h = HeaderMap::new();
    assert_eq!(
        targets(&t, "ghost.example", &h),
        one("outbound|8000||nowhere")
    );
    assert_eq!(targets(&t, "ratings", &h), one("outbound|8000||nowhere"));
    assert!(cluster(&t, "outbound|8000||nowhere").endpoints.is_empty());
}

#[test]
fn aliases_resolve_hosts_destinations_and_rules() {
    // Everything says `reviews`; the service is `reviews.prod.svc` with alias `reviews`.
    let (t, diags) = compile(&bookinfo(), &config(&format!("{VS}---\n{DR}")), 1);
    assert!(diags.is_empty(), "{diags:?}");
    let c = cluster(&t, "outbound|9080|v1|reviews.prod.svc");
    assert_eq!(c.service.as_str(), "reviews.prod.svc");
    assert_eq!(c.endpoints.len(), 1);
    assert!(t.virtual_host("reviews.prod.svc:9090").is_some());
}

#[test]
fn unknown_subset_against_the_catalog_is_an_error() {
    // `parse_str` skips the cross-resource checks, as a config built by other
    // means might; the compiler still finds that v9 is missing.
    let vs = VS.replace("subset: v2}}]", "subset: v9}}]");
    let (set, load_diags) = crate::config::parse_str("routes.yaml", &format!("{vs}---\n{DR}"));
    assert!(load_diags.is_empty(), "{load_diags:?}");
    let (t, diags) = compile(&bookinfo(), &set, 1);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(
        diags[0].to_string(),
        "routes.yaml: VirtualService default/reviews: spec.http[0].route[0].destination.subset: unknown subset 'v9' of service 'reviews.prod.svc': its DestinationRule default/reviews does not define it; requests sent to this destination get 503"
    );
    assert!(cluster(&t, "outbound|9080|v9|reviews.prod.svc")
        .endpoints
        .is_empty());
}

#[test]
fn subsets_through_an_alias_load_and_compile() {
    // The VirtualService says `rv`, the DestinationRule says `reviews`: both
    // name the service `reviews` (alias `rv`), which only the catalog knows.
    let snap = snapshot(
        vec![service(
            "reviews",
            &["rv"],
            vec![port("http", 9080, Protocol::Http)],
        )],
        vec![ep("r1", "reviews", "v1", Health::Healthy)],
    );
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rv}
spec:
  hosts: [rv]
  http: [{route: [{destination: {host: rv, subset: v1}}]}]
";
    let (t, diags) = compile(&snap, &config(&format!("{vs}---\n{DR}")), 1);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(
        targets(&t, "rv", &HeaderMap::new()),
        one("outbound|9080|v1|reviews")
    );
    assert_eq!(cluster(&t, "outbound|9080|v1|reviews").endpoints.len(), 1);
}

#[test]
fn compile_errors_say_what_the_proxy_does() {
    // Config that skipped validation (built by other means): a bad regex, a
    // rule whose destinations all have weight 0, an unknown subset. Each
    // error says what the running proxy does, and the table does just that.
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /b}}]
    route:
    - {destination: {host: ratings}, weight: 50}
    - {destination: {host: reviews}, weight: 50}
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: reviews, subset: v9}}]
";
    let (mut set, load_diags) =
        crate::config::parse_str("routes.yaml", &format!("{yaml}---\n{DR}"));
    assert!(load_diags.is_empty(), "{load_diags:?}");
    let http = &mut set.virtual_services[0].spec.http;
    http[0].matches[0].uri = Some(crate::config::StringMatch {
        regex: Some("(".into()),
        ..Default::default()
    });
    for d in &mut http[1].route {
        d.weight = Some(0);
    }
    let (t, diags) = compile(&bookinfo(), &set, 1);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert_eq!(
        errors,
        [
            "spec.http[0].match[0]: invalid regex \"(\": unclosed group; rule skipped: its requests go to the next rule that matches, else get 404",
            "spec.http[1].route: no destination with a weight above 0; rule skipped: its requests go to the next rule that matches, else get 404",
            "spec.http[2].route[0].destination.subset: unknown subset 'v9' of service 'reviews.prod.svc': its DestinationRule default/reviews does not define it; requests sent to this destination get 503",
        ]
    );
    let routes = &t.virtual_host("ratings").unwrap().routes;
    assert_eq!(routes.len(), 1, "two rules skipped");
    let h = HeaderMap::new();
    let get = |path| RequestInfo {
        method: "GET",
        authority: "ratings",
        path,
        query: None,
        headers: &h,
    };
    assert_eq!(t.route(&get("/a")).err(), Some(RouteMiss::NoRoute), "404");
    match t.route(&get("/c")).map(|hit| &hit.route.action) {
        Ok(RouteAction::Forward(s)) => assert!(s.targets[0].cluster.endpoints.is_empty(), "503"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_alias_never_steals_a_hostname() {
    let http = |name: &str, aliases: &[&str]| {
        service(name, aliases, vec![port("http", 80, Protocol::Http)])
    };
    // `a` is compiled first and claims `b` as an alias; `b` is a service.
    // `c` and `d` both claim `x`.
    let snap = snapshot(
        vec![
            http("a", &["b"]),
            http("b", &[]),
            http("c", &["x"]),
            http("d", &["x"]),
        ],
        vec![],
    );
    let (t, diags) = compile(&snap, &ConfigSet::default(), 1);
    let h = HeaderMap::new();
    assert_eq!(targets(&t, "b", &h), one("outbound|80||b"));
    assert_eq!(targets(&t, "b:80", &h), one("outbound|80||b"));
    assert_eq!(targets(&t, "x", &h), one("outbound|80||c"));
    let lines: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {d}", d.severity))
        .collect();
    assert_eq!(
        lines,
        [
            "warning: registry file: alias 'b' of service 'a' is ignored: 'b' is a service's hostname",
            "warning: registry file: alias 'x' is claimed by services 'c' and 'd'; 'c' wins",
        ]
    );
}

#[test]
fn hostnames_win_domains_even_in_a_hand_built_snapshot() {
    // A snapshot not made by the catalog may still list a hostname as an
    // alias; the compiler registers every hostname before any alias.
    let mut snap = snapshot(
        vec![
            service("a", &[], vec![port("http", 80, Protocol::Http)]),
            service("b", &[], vec![port("http", 80, Protocol::Http)]),
        ],
        vec![],
    );
    let mut a = snap.services[&host("a")].as_ref().clone();
    a.aliases.push(host("b"));
    snap.services.insert(host("a"), Arc::new(a));
    let (t, _) = compile(&snap, &ConfigSet::default(), 1);
    assert_eq!(targets(&t, "b", &HeaderMap::new()), one("outbound|80||b"));
}

#[test]
fn a_second_exact_rule_for_a_service_warns() {
    // `reviews` and `rv` are different hosts as written, one service here.
    let snap = snapshot(
        vec![service(
            "reviews",
            &["rv"],
            vec![port("http", 9080, Protocol::Http)],
        )],
        vec![],
    );
    let rv = DR
        .replace("name: reviews}", "name: rv}")
        .replace("host: reviews", "host: rv");
    let (_, diags) = compile(&snap, &config(&format!("{DR}---\n{rv}")), 1);
    let lines: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {d}", d.severity))
        .collect();
    assert_eq!(
        lines,
        ["warning: routes.yaml: DestinationRule default/rv: spec.host: host 'rv' names service 'reviews', which already has DestinationRule default/reviews (routes.yaml, host 'reviews'); only that one applies"]
    );
}

#[test]
fn gateway_only_virtual_services_do_not_route_mesh_traffic() {
    let vs = VS.replace("hosts: [reviews]", "hosts: [reviews]\n  gateways: [edge]");
    let (t, _) = compile(&bookinfo(), &config(&format!("{vs}---\n{DR}")), 1);
    assert_eq!(
        targets(&t, "reviews", &HeaderMap::new()),
        one("outbound|9080||reviews.prod.svc")
    );
}

#[test]
fn route_details_carry_over() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {regex: '/API/.*'}, ignoreUriCase: true}]
    timeout: 0s
    rewrite: {uri: /v2/}
    headers: {request: {set: {x-a: '1'}, remove: [x-b]}}
    route: [{destination: {host: ratings}, headers: {response: {add: {x-c: '2'}}}}]
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new}
  - timeout: 2s
    directResponse: {status: 404, body: {string: nope}}
";
    let (t, diags) = compile(&bookinfo(), &config(yaml), 1);
    assert!(diags.is_empty(), "{diags:?}");
    let routes = &t.virtual_host("ratings").unwrap().routes;
    let h = HeaderMap::new();
    let req = RequestInfo {
        method: "GET",
        authority: "ratings",
        path: "/api/x",
        query: None,
        headers: &h,
    };
    assert!(routes[0].matching(&req).is_some(), "case-insensitive regex");
    assert_eq!(routes[0].timeout, None, "0s disables the timeout");
    assert_eq!(
        routes[0].rewrite.as_ref().and_then(|r| r.uri.as_deref()),
        Some("/v2/")
    );
    assert_eq!(routes[0].request_headers.set.len(), 1);
    assert_eq!(routes[0].request_headers.remove.len(), 1);
    match &routes[0].action {
        RouteAction::Forward(s) => assert_eq!(s.targets[0].response_headers.add.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&routes[1].action, RouteAction::Redirect(r) if r.code == 301));
    assert_eq!(routes[2].timeout, Some(std::time::Duration::from_secs(2)));
    assert!(
        matches!(&routes[2].action, RouteAction::DirectResponse(d) if d.body.as_deref() == Some("nope"))
    );
}
