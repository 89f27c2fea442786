//! Table-driven tests: each row is a YAML file and the exact diagnostics
//! (`severity: Display`) it must produce, plus how many resources survive.

use super::*;

mod resilience;
mod security;
mod telemetry;

const DR: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// A VirtualService for `reviews` (line 1) with the given `http:` items
/// (starting on line 8), followed by [`DR`].
fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  \
         name: reviews\nspec:\n  hosts: [reviews]\n  http:\n{}---\n{DR}",
        http.trim_start_matches('\n')
    )
}

/// A DestinationRule `reviews` with the given spec lines (starting on line 5).
fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: \
         {{name: reviews, namespace: prod}}\nspec:\n{spec}"
    )
}

const SPLIT: &str = r"
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
";

struct Row {
    name: &'static str,
    yaml: String,
    /// `(virtual services, destination rules)` kept.
    kept: (usize, usize),
    expect: &'static [&'static str],
}

fn row(
    name: &'static str,
    yaml: String,
    kept: (usize, usize),
    expect: &'static [&'static str],
) -> Row {
    Row {
        name,
        yaml,
        kept,
        expect,
    }
}

const VS_RES: &str = "VirtualService default/reviews";

fn rows() -> Vec<Row> {
    vec![
        row(
            "full featured VirtualService and DestinationRule",
            vs(r"
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
      uri: {prefix: /api}
      ignoreUriCase: true
    - queryParams: {debug: {regex: '1|true'}}
      method: {exact: GET}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      headers: {request: {set: {x-v: '2'}, remove: [x-debug]}}
    timeout: 1m30s
    rewrite: {uri: /v2}
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 308, scheme: https, port: 8443}
  - match: [{uri: {exact: /gone}}]
    directResponse: {status: 410, body: {string: gone}}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v2}
      weight: 25
"),
            (1, 1),
            &[],
        ),
        row(
            "weights must sum to 100",
            vs(SPLIT),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].route: weights sum to 90, must sum to 100"],
        ),
        row(
            "a missing weight among several counts as 0",
            vs(r"
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 100
    - destination: {host: reviews, subset: v2}
"),
            (1, 1),
            &[],
        ),
        row(
            "negative weight",
            vs(r"
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -10
    - destination: {host: reviews, subset: v2}
      weight: 110
"),
            (0, 1),
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].route[0].weight: weight -10 is out of range 0..=100",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].route[1].weight: weight 110 is out of range 0..=100",
            ],
        ),
        row(
            "a single destination ignores its weight",
            vs("  - route:\n    - destination: {host: reviews}\n      weight: 50\n"),
            (1, 1),
            &["warning: routes.yaml: VirtualService default/reviews: spec.http[0].route[0].weight: weight 50 is ignored: a single destination receives all traffic"],
        ),
        row(
            "unknown subset",
            vs("  - route:\n    - destination: {host: reviews, subset: v3}\n"),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].route[0].destination.subset: unknown subset 'v3': DestinationRule default/reviews for host 'reviews' defines only v1, v2"],
        ),
        row(
            // `ratings` may be an alias of a service whose rule defines v1:
            // only the compiler, with the catalog, can tell.
            "subset of a host no DestinationRule may apply to",
            vs("  - route:\n    - destination: {host: ratings, subset: v1}\n"),
            (1, 1),
            &[],
        ),
        row(
            "invalid regex",
            vs("  - match: [{uri: {regex: '/api/(v1'}}]\n    route: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex \"/api/(v1\": unclosed group"],
        ),
        row(
            "string match with nothing set",
            vs("  - match: [{headers: {x-user: {}}}]\n    route: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].match[0].headers.x-user: exactly one of exact, prefix or regex is required (a presence match `{}` is not supported; use regex: \".*\")"],
        ),
        row(
            "string match with two conditions",
            vs("  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].match[0].uri: only one of exact, prefix or regex may be set, found exact and prefix"],
        ),
        row(
            "empty hosts",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: []\n  http: [{route: [{destination: {host: reviews}}]}]\n".into(),
            (0, 0),
            &["error: routes.yaml: VirtualService default/r: spec.hosts: at least one host is required"],
        ),
        row(
            "invalid hostnames",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: ['bad host', 'a.*.com', 'r:80']\n  http: [{route: [{destination: {host: '*.r'}}]}]\n".into(),
            (0, 0),
            &[
                "error: routes.yaml: VirtualService default/r: spec.hosts[0]: invalid host \"bad host\": only letters, digits, '-', '_' and '.' are allowed",
                "error: routes.yaml: VirtualService default/r: spec.hosts[1]: invalid host \"a.*.com\": '*' is only allowed as the whole first label (`*.example.com`)",
                "error: routes.yaml: VirtualService default/r: spec.hosts[2]: invalid host \"r:80\": a port is not allowed here",
                "error: routes.yaml: VirtualService default/r: spec.http[0].route[0].destination.host: invalid host \"*.r\": only letters, digits, '-', '_' and '.' are allowed",
            ],
        ),
        row(
            "invalid header name and value",
            vs("  - match: [{headers: {'x user': {exact: a}}}]\n    headers: {response: {set: {x-ok: \"a\\x01b\"}, remove: ['(bad)']}}\n    route: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].match[0].headers.x user: invalid header name \"x user\"",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].headers.response.set.x-ok: invalid header value \"a\\u{1}b\": control characters are not allowed",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].headers.response.remove[0]: invalid header name \"(bad)\"",
            ],
        ),
        row(
            "duplicate subset names",
            dr("  host: reviews\n  subsets:\n  - {name: v1}\n  - {name: v1, labels: {version: v1}}\n"),
            (0, 0),
            &["error: routes.yaml: DestinationRule prod/reviews: spec.subsets[1].name: duplicate subset 'v1' (first at spec.subsets[0])"],
        ),
        row(
            "duplicate resource names",
            format!("{DR}---\n{DR}"),
            (0, 1),
            &[
                "error: routes.yaml: DestinationRule default/reviews: metadata.name: duplicate DestinationRule default/reviews: already defined in routes.yaml (document 1)",
            ],
        ),
        row(
            "redirect together with route",
            vs("  - redirect: {uri: /x}\n    route: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].redirect: redirect cannot be combined with route"],
        ),
        row(
            "no action at all, and rewrite without route",
            vs("  - directResponse: {status: 700}\n    rewrite: {uri: /x}\n  - name: empty\n"),
            (0, 1),
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].rewrite: rewrite only applies to a route; it cannot be combined with redirect or directResponse",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].directResponse.status: status 700 is out of range 200..=599",
                "error: routes.yaml: VirtualService default/reviews: spec.http[1]: one of route, redirect or directResponse is required",
            ],
        ),
        row(
            "redirect code and scheme",
            vs("  - redirect: {redirectCode: 305, scheme: ftp, port: 70000}\n"),
            (0, 1),
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].redirect.redirectCode: redirect code 305 is not one of 301, 302, 303, 307, 308",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].redirect.port: port 70000 is out of range 1..=65535",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].redirect.scheme: scheme \"ftp\" must be http or https",
            ],
        ),
        row(
            "timeout that does not parse, with line and column",
            vs("  - route: [{destination: {host: reviews}}]\n    timeout: 10\n"),
            (0, 1),
            &["error: routes.yaml:9:14: VirtualService default/reviews: spec.http[0].timeout: invalid duration \"10\": missing unit after 10 (use ns, us, ms, s, m or h, e.g. 10s)"],
        ),
        row(
            "wrong type, with line and column",
            vs(SPLIT).replace("weight: 90", "weight: ninety"),
            (0, 1),
            &["error: routes.yaml:10:15: VirtualService default/reviews: spec.http[0].route[0].weight: invalid type: string \"ninety\", expected i64"],
        ),
        row(
            "YAML syntax error, with line and column",
            format!("{DR}---\nkind: VirtualService\nmetadata: {{name: x\nspec: {{}}\n"),
            (0, 1),
            &["error: routes.yaml:12:5: did not find expected ',' or '}', while parsing a flow mapping at line 11 column 11"],
        ),
        row(
            "unsupported Istio fields are warnings",
            vs("  - route: [{destination: {host: reviews}}]\n    corsPolicy: {allowOrigins: [{exact: a}]}\n    fault: {delay: {fixedDelay: 1s, exponentialDelay: 2s, percentage: {value: 5}}}\n"),
            (1, 1),
            &[
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].corsPolicy: unsupported field 'corsPolicy': not implemented by anymesh, ignored",
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.exponentialDelay: unsupported field 'exponentialDelay': not implemented by anymesh, ignored",
            ],
        ),
        row(
            "a typo is an error, with a suggestion",
            vs("  - rout: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].rout: unknown field 'rout' (did you mean 'route'?)",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0]: one of route, redirect or directResponse is required",
            ],
        ),
        row(
            "match conditions anymesh cannot honour are errors",
            vs("  - match: [{sourceLabels: {app: web}}]\n    route: [{destination: {host: reviews}}]\n"),
            (0, 1),
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].match[0].sourceLabels: unsupported field 'sourceLabels': anymesh cannot honour it, and ignoring it would apply the rule to traffic it does not select"],
        ),
        row(
            "other kinds are skipped with a warning; empty documents are skipped",
            format!("---\n# nothing here\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n---\n{DR}---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext}}\nspec: {{}}\n"),
            (0, 1),
            &[
                "warning: routes.yaml: Deployment default/web: Deployment (apps/v1) is not read by anymesh; skipped",
                "warning: routes.yaml: ServiceEntry default/ext: ServiceEntry (networking.istio.io/v1) is not read by anymesh; skipped",
            ],
        ),
        row(
            "unknown or missing apiVersion, missing name, not a mapping",
            "apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nspec: {host: a}\n---\nkind: VirtualService\nmetadata: {name: b}\n---\n[a, list]\n".into(),
            (0, 0),
            &[
                "error: routes.yaml: DestinationRule default/a: apiVersion: unsupported apiVersion \"networking.istio.io/v2\" (use networking.istio.io/v1, v1beta1 or v1alpha3)",
                "error: routes.yaml: DestinationRule: document 2: metadata.name: a name is required",
                "error: routes.yaml: VirtualService default/b: apiVersion: missing field `apiVersion` (use networking.istio.io/v1)",
                "error: routes.yaml: document 4: expected a resource (a mapping with apiVersion, kind, metadata and spec)",
            ],
        ),
        row(
            "load balancer policies",
            dr("  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: PASSTHROUGH}\n    tunnel: {protocol: CONNECT}\n  subsets:\n  - name: a\n    trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}\n  - name: b\n    trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: 0s}, ringHash: {minimumRingSize: 1024}}}}\n"),
            (0, 1),
            &[
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.tunnel: unsupported field 'tunnel': not implemented by anymesh, ignored",
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.simple: unsupported load balancer PASSTHROUGH: round robin is used",
            ],
        ),
        row(
            "load balancer mistakes",
            dr("  host: reviews\n  trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}\n  subsets:\n  - {name: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: false}}}}\n  - {name: b, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, httpQueryParameterName: y}}}}\n"),
            (0, 0),
            &[
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer: only one of simple or consistentHash may be set",
                "error: routes.yaml: DestinationRule prod/reviews: spec.subsets[0].trafficPolicy.loadBalancer.consistentHash: one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
                "error: routes.yaml: DestinationRule prod/reviews: spec.subsets[1].trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
            ],
        ),
        row(
            "unknown load balancer name",
            dr("  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}}\n"),
            (0, 0),
            &["error: routes.yaml:6:42: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.simple: unknown variant `ROUND_ROBBIN`, expected one of `UNSPECIFIED`, `ROUND_ROBIN`, `LEAST_REQUEST`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `PEAK_EWMA`"],
        ),
        row(
            "gateways without mesh, and several rules for one host",
            format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: gw}}\nspec:\n  hosts: [reviews]\n  gateways: [edge]\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n---\n{DR}---\n{}", DR.replace("name: reviews}", "name: other}")),
            (1, 2),
            &[
                "warning: routes.yaml: VirtualService default/gw: spec.gateways: binds only to gateways [\"edge\"]; anymesh has no gateways yet, so this VirtualService routes nothing (add 'mesh' to apply it to mesh traffic)",
                "warning: routes.yaml: DestinationRule default/other: spec.host: host 'reviews' already has DestinationRule default/reviews (routes.yaml); only that one applies",
            ],
        ),
        row(
            "missing destination host",
            vs("  - route: [{destination: {subset: v1}}]\n"),
            (0, 1),
            &["error: routes.yaml:8:27: VirtualService default/reviews: spec.http[0].route[0].destination: missing field `host`"],
        ),
    ]
}

#[test]
fn table() {
    let rows = rows();
    assert!(rows.len() >= 20);
    let mut failures = Vec::new();
    for r in rows {
        let (set, diags) = load_str("routes.yaml", &r.yaml);
        let got: Vec<String> = diags
            .iter()
            .map(|d| format!("{}: {d}", d.severity))
            .collect();
        let kept = (set.virtual_services.len(), set.destination_rules.len());
        if got != r.expect || kept != r.kept {
            failures.push(format!(
                "row {:?}:\n  got  {got:#?} kept {kept:?}\n  want {:#?} kept {:?}",
                r.name, r.expect, r.kept
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn resources_carry_identity_and_origin() {
    let (set, diags) = load_str("r.yaml", &format!("# hi\n---\n{DR}"));
    assert!(diags.is_empty(), "{diags:?}");
    let dr = &set.destination_rules[0];
    assert_eq!(
        (dr.namespace.as_str(), dr.name.as_str()),
        ("default", "reviews")
    );
    assert_eq!(
        dr.origin,
        Origin {
            file: "r.yaml".into(),
            document: 0,
            line: 3
        }
    );
    assert_eq!(dr.spec.subset("v2").map(|s| s.labels.len()), Some(1));
    let _ = VS_RES;
}

#[test]
fn merge_then_check_across_files() {
    let (mut set, d1) = parse_str(
        "vs.yaml",
        &vs("  - route: [{destination: {host: reviews, subset: v1}}]\n")
            .replace(&format!("---\n{DR}"), ""),
    );
    assert!(d1.is_empty(), "{d1:?}");
    // With only a rule for `reviews` that lacks v1, v1 is unknown.
    let (other, d2) = parse_str("dr.yaml", &DR.replace("{name: v1,", "{name: v0,"));
    assert!(d2.is_empty());
    let mut alone = set.clone();
    alone.merge(other);
    assert_eq!(alone.validate().len(), 1);
    let (other, d2) = parse_str("dr.yaml", DR);
    assert!(d2.is_empty());
    set.merge(other);
    assert!(set.retain_valid().is_empty());
    assert_eq!(set.virtual_services.len(), 1);
    assert_eq!(
        set.destination_rule_for(["reviews"])
            .map(|r| r.origin.file.as_str()),
        Some("dr.yaml")
    );
}

#[test]
fn load_files_reports_unreadable_files() {
    let (set, diags) = load_files(&[PathBuf::from("/nonexistent/anymesh/routes.yaml")]);
    assert!(set.is_empty());
    assert_eq!(diags.len(), 1);
    assert!(diags[0]
        .to_string()
        .starts_with("/nonexistent/anymesh/routes.yaml: cannot read file:"));
}

#[test]
fn rejected_resources_are_still_cross_checked_but_never_kept() {
    // The VirtualService has its own error (bad regex) and a cross-resource
    // one (unknown subset): both are reported; the DR with its own error
    // still defines subsets, so no false "unknown subset" cascades from it.
    let text = format!(
        "{}---\n{}",
        vs("  - match:\n    - uri: {regex: \"(\"}\n    route:\n    - destination: {host: reviews, subset: v9}\n"),
        dr("  host: ratings\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n")
    );
    let text = text.replace(
        "name: reviews, namespace: prod",
        "name: ratings, namespace: prod",
    );
    let text = format!(
        "{text}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r2}}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {{host: ratings, subset: v1}}\n"
    );
    let (set, diags) = load_str("f.yaml", &text);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(errors.iter().any(|e| e.contains("regex")), "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("subset") && e.contains("v9")),
        "{errors:#?}"
    );
    assert!(
        !errors.iter().any(|e| e.contains("r2")),
        "no cascade from the rejected DR: {errors:#?}"
    );
    assert_eq!(set.virtual_services.len(), 1, "only r2 is kept");
    assert_eq!(set.virtual_services[0].name, "r2");
    assert_eq!(set.destination_rules.len(), 1, "the valid reviews DR");
    assert_eq!(set.rejected.virtual_services.len(), 1);
    assert_eq!(set.rejected.destination_rules.len(), 1);
}

#[test]
fn subsets_of_hosts_no_rule_may_apply_to_are_left_to_the_compiler() {
    // `rv` is an alias of `reviews` in the catalog; nothing here can know.
    let text = vs("  - route: [{destination: {host: rv, subset: v1}}]\n");
    let (set, diags) = load_str("routes.yaml", &text);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(set.virtual_services.len(), 1);
}

#[test]
fn a_wildcard_rule_does_not_hide_an_exact_rule_for_an_alias() {
    // The mesh-wide rule may apply to `rv`, but an exact rule for another
    // name of the same service (here `reviews`) would beat it.
    let mesh = dr("  host: '*'\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n")
        .replace("name: reviews", "name: mesh");
    let text = format!(
        "{}---\n{mesh}",
        vs("  - route: [{destination: {host: rv, subset: v1}}]\n")
    );
    let (set, diags) = load_str("routes.yaml", &text);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(set.virtual_services.len(), 1);
    // No exact rule defines v9 anywhere: the wildcard rule is the one.
    let text = text.replace("subset: v1}", "subset: v9}");
    let (set, diags) = load_str("routes.yaml", &text);
    let got: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["routes.yaml: VirtualService default/reviews: spec.http[0].route[0].destination.subset: unknown subset 'v9': DestinationRule prod/mesh for host 'rv' defines no subsets"]
    );
    assert!(set.virtual_services.is_empty());
}

#[test]
fn the_most_specific_destination_rule_applies() {
    let rule = |name: &str, host: &str| {
        dr(&format!("  host: '{host}'\n")).replace("name: reviews", &format!("name: {name}"))
    };
    let text = [
        rule("all", "*"),
        rule("com", "*.com"),
        rule("example", "*.example.com"),
        rule("exact", "a.example.com"),
    ]
    .join("---\n");
    let (set, diags) = load_str("routes.yaml", &text);
    assert!(diags.is_empty(), "{diags:#?}");
    let pick = |names: &[&str]| {
        set.destination_rule_for(names.iter().copied())
            .map(|r| r.name.clone())
    };
    // File order does not matter among wildcards: the longest suffix wins.
    assert_eq!(pick(&["b.example.com"]).as_deref(), Some("example"));
    assert_eq!(pick(&["b.other.com"]).as_deref(), Some("com"));
    assert_eq!(pick(&["ratings"]).as_deref(), Some("all"));
    // An exact host beats every wildcard, for any name of the service.
    assert_eq!(
        pick(&["z.example.com", "a.example.com"]).as_deref(),
        Some("exact")
    );
}
