use super::*;

fn req<'a>(
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    headers: &'a HeaderMap,
) -> RequestInfo<'a> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    RequestInfo {
        method,
        authority,
        path,
        query,
        headers,
    }
}

fn direct(name: &str, matches: Vec<RequestMatch>) -> Route {
    Route {
        name: name.into(),
        matches,
        action: RouteAction::DirectResponse(DirectResponse {
            status: 200,
            body: None,
        }),
        timeout: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        rewrite: None,
        retry: RetryPolicy::istio_default(),
        fault: None,
        mirrors: Vec::new(),
        mirror_compare: None,
    }
}

fn table(routes: Vec<Route>) -> RouteTable {
    let vh = Arc::new(VirtualHost {
        name: "vs".into(),
        domains: vec!["web".into()],
        routes,
    });
    RouteTable {
        virtual_hosts: vec![vh],
        exact: [("web".into(), 0), ("web:80".into(), 0)]
            .into_iter()
            .collect(),
        wildcards: vec![(".example.com".into(), 0)],
        ..RouteTable::default()
    }
}

#[test]
fn host_lookup_strips_port_case_and_wildcards() {
    let t = table(vec![]);
    assert!(t.virtual_host("web").is_some());
    assert!(t.virtual_host("WEB:80").is_some());
    assert!(
        t.virtual_host("web:8080").is_some(),
        "unknown port falls back to host"
    );
    assert!(t.virtual_host("web.").is_some());
    assert!(t.virtual_host("a.example.com").is_some());
    assert!(t.virtual_host("example.com").is_none());
    assert!(t.virtual_host("other").is_none());
    assert!(t.virtual_host("[::1]:80").is_none());
}

#[test]
fn first_matching_route_wins_and_blocks_are_or() {
    let h = HeaderMap::new();
    let mut ua = HeaderMap::new();
    ua.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla (iPhone; CPU)"),
    );
    let t = table(vec![
        direct(
            "iphone",
            vec![RequestMatch {
                headers: vec![(
                    HeaderName::from_static("user-agent"),
                    StringMatch::regex(".*iPhone.*").unwrap(),
                )],
                ..Default::default()
            }],
        ),
        direct(
            "api",
            vec![
                RequestMatch {
                    uri: Some(StringMatch::Prefix("/api".into())),
                    ..Default::default()
                },
                RequestMatch {
                    method: Some(StringMatch::Exact("DELETE".into())),
                    ..Default::default()
                },
            ],
        ),
        direct("rest", vec![]),
    ]);
    let name = |r: RequestInfo<'_>| t.route(&r).unwrap().route.name.to_string();
    assert_eq!(name(req("GET", "web", "/", &ua)), "iphone");
    assert_eq!(name(req("GET", "web", "/api/x", &h)), "api");
    assert_eq!(
        t.route(&req("DELETE", "web", "/x", &h)).unwrap().matched,
        Some(1)
    );
    assert_eq!(name(req("GET", "web", "/x", &h)), "rest");
    assert_eq!(
        t.route(&req("GET", "nope", "/", &h)).unwrap_err(),
        RouteMiss::NoVirtualHost
    );
}

#[test]
fn no_route_when_nothing_matches() {
    let h = HeaderMap::new();
    let t = table(vec![direct(
        "only",
        vec![RequestMatch {
            uri: Some(StringMatch::Exact("/a".into())),
            ..Default::default()
        }],
    )]);
    assert_eq!(
        t.route(&req("GET", "web", "/b", &h)).unwrap_err(),
        RouteMiss::NoRoute
    );
}

#[test]
fn string_match_semantics() {
    let re = StringMatch::regex("v[0-9]+").unwrap();
    assert!(re.matches("v12"));
    assert!(!re.matches("xv12"), "regex is a full match");
    assert!(StringMatch::Prefix("/Api".into()).matches_ignore_case("/api/v1"));
    assert!(!StringMatch::Prefix("/Api".into()).matches("/api/v1"));
    assert!(StringMatch::Exact("/A".into()).matches_ignore_case("/a"));
    assert!(!StringMatch::Prefix("/long-prefix".into()).matches_ignore_case("/lo"));
}

#[test]
fn query_params_and_multi_value_headers() {
    let mut h = HeaderMap::new();
    h.append("x-tag", HeaderValue::from_static("a"));
    h.append("x-tag", HeaderValue::from_static("canary"));
    let m = RequestMatch {
        headers: vec![(
            HeaderName::from_static("x-tag"),
            StringMatch::Exact("canary".into()),
        )],
        query_params: vec![("debug".into(), StringMatch::Exact("1".into()))],
        ..Default::default()
    };
    assert!(m.matches(&req("GET", "web", "/p?x=2&debug=1", &h)));
    assert!(!m.matches(&req("GET", "web", "/p?debug=0", &h)));
    assert!(!m.matches(&req("GET", "web", "/p", &h)));
}

#[test]
fn split_pick_covers_weights() {
    let mk = |w| WeightedCluster {
        weight: w,
        cluster: Arc::new(Cluster {
            name: format!("c{w}"),
            index: 0,
            service: Hostname::new("web").unwrap(),
            subset: None,
            selector: Labels::new(),
            port: ServicePort {
                name: "http".into(),
                number: 80,
                protocol: crate::model::Protocol::Http,
            },
            lb: LbPolicy::RoundRobin,
            policy: Default::default(),
            endpoints: vec![],
            excluded: vec![],
        }),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    };
    let s = Split::new(vec![mk(95), mk(5)]);
    assert_eq!(s.total_weight, 100);
    assert_eq!(s.pick(0).unwrap().weight, 95);
    assert_eq!(s.pick(94).unwrap().weight, 95);
    assert_eq!(s.pick(95).unwrap().weight, 5);
    assert_eq!(s.pick(99).unwrap().weight, 5);
}

#[test]
fn header_ops_order() {
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("old"));
    h.insert("x-gone", HeaderValue::from_static("1"));
    let ops = HeaderOps {
        set: vec![(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("new"),
        )],
        add: vec![(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("more"),
        )],
        remove: vec![HeaderName::from_static("x-gone")],
    };
    ops.apply(&mut h);
    let vals: Vec<_> = h
        .get_all("x-a")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vals, ["new", "more"]);
    assert!(!h.contains_key("x-gone"));
}
