//! `telemetry.istio.io` Telemetry: what parses, what is reported (with
//! exact field paths), and the compiled per-workload policy, checked
//! against the examples of Istio's Telemetry API reference and tasks.

use super::*;
use crate::model::Labels;
use crate::security::WorkloadRef;
use crate::telemetry::{Side, StandardMetric, TagAction, TelemetryPolicies, TelemetryPolicy};
use std::sync::Arc;

/// Loads `yaml` and returns the diagnostics as `severity: Display` lines.
fn lines(yaml: &str) -> (ConfigSet, Vec<String>) {
    let (set, diags) = load_str("tel.yaml", yaml);
    let got = diags
        .iter()
        .map(|d| format!("{}: {d}", d.severity))
        .collect();
    (set, got)
}

/// One Telemetry document; `meta` is `name: x, namespace: y`.
fn doc(version: &str, meta: &str, spec: &str) -> String {
    format!("apiVersion: telemetry.istio.io/{version}\nkind: Telemetry\nmetadata: {{{meta}}}\nspec:\n{spec}")
}

/// Loads documents that must produce no finding and compiles them with
/// the default root namespace.
fn compile(docs: &[String]) -> TelemetryPolicies {
    let (set, got) = lines(&docs.join("---\n"));
    assert!(got.is_empty(), "{got:#?}");
    TelemetryPolicies::compile(&set, crate::security::DEFAULT_ROOT_NAMESPACE)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn policy(p: &TelemetryPolicies, namespace: &str, l: &[(&str, &str)]) -> Arc<TelemetryPolicy> {
    let labels = labels(l);
    p.for_workload(&WorkloadRef {
        namespace,
        labels: &labels,
    })
}

/// The metrics enabled on a side, by Istio name.
fn enabled(p: &TelemetryPolicy, side: Side) -> Vec<&'static str> {
    StandardMetric::ALL
        .into_iter()
        .filter(|m| p.metric_enabled(side, *m))
        .map(|m| m.istio_name())
        .collect()
}

const ALL: [&str; 10] = [
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
];

#[test]
fn loads_in_both_versions_with_every_supported_field() {
    let spec = "  selector: {matchLabels: {app: web}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: false
      tagOverrides:
        grpc_response_status: {operation: REMOVE}
        env: {operation: UPSERT, value: \"'prod'\"}
    - match: {customMetric: requests_total, mode: CLIENT_AND_SERVER}
  tracing:
  - match: {mode: SERVER}
    providers: [{name: zipkin}]
    randomSamplingPercentage: 10.00
    disableSpanReporting: false
    customTags:
      team: {literal: {value: payments}}
  accessLogging:
  - match: {mode: CLIENT}
    providers: [{name: envoy}]
    disabled: false
    filter: {expression: 'true'}
";
    let text = [
        doc("v1", "name: a, namespace: foo", spec),
        doc("v1alpha1", "name: b, namespace: foo", spec).replace("app: web", "app: db"),
    ]
    .join("---\n");
    let (set, got) = lines(&text);
    assert!(got.is_empty(), "{got:#?}");
    assert_eq!(set.telemetries.len(), 2);
    let t = &set.telemetries[1];
    assert_eq!((t.kind(), t.id().as_str()), ("Telemetry", "foo/b"));
    assert_eq!(t.spec.tracing[0].random_sampling_percentage, Some(10.0));
}

#[test]
fn wrong_group_or_version() {
    let (set, got) = lines(
        &[
            doc("v2", "name: a", "  tracing: []\n"),
            doc("v1", "name: b", "  tracing: []\n")
                .replace("telemetry.istio.io", "security.istio.io"),
        ]
        .join("---\n"),
    );
    assert!(set.telemetries.is_empty());
    assert_eq!(
        got,
        [
            "error: tel.yaml: Telemetry default/a: apiVersion: unsupported apiVersion \"telemetry.istio.io/v2\" (use telemetry.istio.io/v1 or v1alpha1)",
            "warning: tel.yaml: Telemetry default/b: Telemetry (security.istio.io/v1) is not read by anymesh; skipped",
        ]
    );
}

#[test]
fn unsupported_fields_are_reported_with_their_paths() {
    let spec = "  metrics:
  - reportingInterval: 5s
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        request_host: {value: request.host}
        destination_port: {value: \"string(destination.port)\"}
    - match: {customMetric: my_metric}
  tracing:
  - useRequestIdForTraceSampling: true
    customTags:
      cluster: {environment: {name: CLUSTER_ID}}
      user: {header: {name: x-user, defaultValue: none}}
  accessLogging:
  - filter: {expression: 'response.code >= 400'}
";
    let (set, got) = lines(&doc("v1", "name: t, namespace: foo", spec));
    assert_eq!(
        got,
        [
            "warning: tel.yaml: Telemetry foo/t: spec.metrics[0].reportingInterval: unsupported field 'reportingInterval': not implemented by anymesh, ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.tracing[0].useRequestIdForTraceSampling: unsupported field 'useRequestIdForTraceSampling': not implemented by anymesh, ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.destination_port.value: unsupported: \"string(destination.port)\" is a CEL expression; anymesh takes only a fixed value, a CEL string literal such as \"'canary'\"; this tag override is ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.request_host.value: unsupported: \"request.host\" is a CEL expression; anymesh takes only a fixed value, a CEL string literal such as \"'canary'\"; this tag override is ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[1].match.customMetric: unsupported: anymesh has no metric 'my_metric' (custom metrics name standard ones here: requests_total, request_duration_milliseconds, request_bytes, response_bytes, tcp_connections_opened_total, tcp_connections_closed_total, tcp_sent_bytes_total, tcp_received_bytes_total, request_messages_total, response_messages_total); this override is ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.tracing[0].customTags.cluster.environment: unsupported field 'environment': anymesh adds only literal custom tags to spans; this tag is ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.tracing[0].customTags.user.header: unsupported field 'header': anymesh adds only literal custom tags to spans; this tag is ignored",
            "warning: tel.yaml: Telemetry foo/t: spec.accessLogging[0].filter.expression: unsupported: anymesh evaluates no CEL; only the filters `true` and `false` are applied, \"response.code >= 400\" is ignored and every request is logged",
        ]
    );
    // Warnings only: the resource applies, without what it cannot do.
    let p = TelemetryPolicies::compile(&set, "istio-system");
    let w = policy(&p, "foo", &[]);
    for side in Side::BOTH {
        assert_eq!(enabled(&w, side), ALL);
        assert!(w.metric(side, StandardMetric::RequestCount).tags.is_empty());
        assert!(w.side(side).tracing.custom_tags.is_empty());
        assert_eq!(w.side(side).access_log.enabled, Some(true));
    }
}

#[test]
fn errors_name_their_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
            &["error: tel.yaml: Telemetry foo/t: spec.targetRefs: unsupported field 'targetRefs': anymesh cannot honour it, and ignoring it would apply the rule to traffic it does not select"],
        ),
        (
            "  metrics: [{overrides: [{match: {metric: REQUEST_COUNT, mode: CLIENTS}}]}]\n",
            &["error: tel.yaml:5:64: Telemetry foo/t: spec.metrics[0].overrides[0].match.mode: unknown variant `CLIENTS`, expected one of `CLIENT_AND_SERVER`, `CLIENT`, `SERVER`"],
        ),
        (
            "  metrics: [{overrides: [{match: {metric: REQUEST_COUNTS}}]}]\n",
            &["error: tel.yaml:5:43: Telemetry foo/t: spec.metrics[0].overrides[0].match.metric: unknown variant `REQUEST_COUNTS`, expected one of `ALL_METRICS`, `REQUEST_COUNT`, `REQUEST_DURATION`, `REQUEST_SIZE`, `RESPONSE_SIZE`, `TCP_OPENED_CONNECTIONS`, `TCP_CLOSED_CONNECTIONS`, `TCP_SENT_BYTES`, `TCP_RECEIVED_BYTES`, `GRPC_REQUEST_MESSAGES`, `GRPC_RESPONSE_MESSAGES`"],
        ),
        (
            "  metrics: [{overrides: [{tagOverrides: {x: {operation: DELETE}}}]}]\n",
            &["error: tel.yaml:5:57: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.x.operation: unknown variant `DELETE`, expected `UPSERT` or `REMOVE`"],
        ),
        (
            "  tracing: [{randomSamplingPercentage: ten}]\n",
            &["error: tel.yaml:5:40: Telemetry foo/t: spec.tracing[0].randomSamplingPercentage: invalid type: string \"ten\", expected f64"],
        ),
        (
            "  tracing: [{randomSamplingPercentage: 150, providers: [{name: a}, {name: b}], customTags: {a: {literal: {value: ''}}, b: {}, c: {literal: {value: x}, header: {name: y}}}}]\n  accessLogging: [{providers: [{name: ''}], filter: {expression: ' '}}]\n",
            &[
                "warning: tel.yaml: Telemetry foo/t: spec.tracing[0].providers: several tracing providers: only the first is used (as in Istio)",
                "error: tel.yaml: Telemetry foo/t: spec.tracing[0].randomSamplingPercentage: 150 is not a percentage in [0.0, 100.0]",
                "error: tel.yaml: Telemetry foo/t: spec.tracing[0].customTags.a.literal.value: a literal tag's value may not be empty",
                "error: tel.yaml: Telemetry foo/t: spec.tracing[0].customTags.b: a custom tag needs exactly one of literal, environment or header",
                "error: tel.yaml: Telemetry foo/t: spec.tracing[0].customTags.c: a custom tag needs exactly one of literal, environment or header",
                "warning: tel.yaml: Telemetry foo/t: spec.tracing[0].customTags.c.header: unsupported field 'header': anymesh adds only literal custom tags to spans; this tag is ignored",
                "error: tel.yaml: Telemetry foo/t: spec.accessLogging[0].providers[0].name: a provider name is required",
                "error: tel.yaml: Telemetry foo/t: spec.accessLogging[0].filter.expression: a filter needs an expression",
            ],
        ),
        (
            "  selector: {matchLabels: {app: \"web*\"}}\n  metrics:\n  - providers: [{name: stackdriver}]\n    overrides:\n    - match: {metric: REQUEST_COUNT, customMetric: requests_total}\n      tagOverrides:\n        \"bad-tag\": {operation: REMOVE}\n        __name__: {value: \"'x'\"}\n        empty: {operation: UPSERT}\n        removed: {operation: REMOVE, value: \"'x'\"}\n    - match: {customMetric: ''}\n      tagOverides: {}\n",
            &[
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[1].tagOverides: unknown field 'tagOverides' (did you mean 'tagOverrides'?)",
                "error: tel.yaml: Telemetry foo/t: spec.selector.matchLabels.app: wildcard is not supported in selector: app=web*",
                "warning: tel.yaml: Telemetry foo/t: spec.metrics[0].providers: anymesh exports metrics only as provider 'prometheus': the overrides of this entry change nothing, and where it is the last level naming providers anymesh's metrics are off (as in Istio, only the providers named get metrics)",
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].match: metric and customMetric are exclusive (one of them, or neither for every metric)",
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.__name__: tag \"__name__\": names starting with '__' are reserved by Prometheus",
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.bad-tag: tag \"bad-tag\" is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.empty.value: a value is required with UPSERT",
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[0].tagOverrides.removed.value: a value is only allowed with UPSERT, not REMOVE",
                "error: tel.yaml: Telemetry foo/t: spec.metrics[0].overrides[1].match.customMetric: customMetric may not be empty",
            ],
        ),
    ];
    for (spec, want) in cases {
        let (set, got) = lines(&doc("v1", "name: t, namespace: foo", spec));
        assert_eq!(&got, want, "{spec}");
        if want.iter().any(|w| w.starts_with("error")) {
            assert!(set.telemetries.is_empty(), "{spec}");
        }
    }
}

/// Istio's reference: "Policy to disable server-side metrics for
/// Prometheus for an entire mesh"; and the task's `ALL_METRICS`/`CLIENT`.
#[test]
fn disable_metrics_per_mode() {
    let mesh = doc(
        "v1",
        "name: mesh-default, namespace: istio-system",
        "  metrics:\n  - providers:\n    - name: prometheus\n    overrides:\n    - match:\n        metric: ALL_METRICS\n        mode: SERVER\n      disabled: true\n",
    );
    let ns = doc(
        "v1",
        "name: no-client-count, namespace: foo",
        "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT, mode: CLIENT}\n      disabled: true\n",
    );
    let p = compile(&[mesh, ns]);
    let bar = policy(&p, "bar", &[]);
    assert_eq!(enabled(&bar, Side::Client), ALL);
    assert!(enabled(&bar, Side::Server).is_empty());
    let foo = policy(&p, "foo", &[("app", "x")]);
    assert_eq!(enabled(&foo, Side::Client), ALL[1..]);
    assert!(enabled(&foo, Side::Server).is_empty());
    assert_eq!(
        foo.sources,
        ["istio-system/mesh-default", "foo/no-client-count"]
    );
}

/// The task "Customizing Istio Metrics with Telemetry API": remove
/// `grpc_response_status` from REQUEST_COUNT; upsert fixed tags.
#[test]
fn remove_and_upsert_tags() {
    let remove = doc(
        "v1",
        "name: remove-tags, namespace: istio-system",
        "  metrics:\n    - providers:\n        - name: prometheus\n      overrides:\n        - match:\n            metric: REQUEST_COUNT\n          tagOverrides:\n            grpc_response_status:\n              operation: REMOVE\n",
    );
    let upsert = doc(
        "v1",
        "name: custom-tags, namespace: foo",
        "  metrics:\n    - overrides:\n        - match: {metric: REQUEST_COUNT, mode: CLIENT}\n          tagOverrides:\n            destination_x: {value: \"'upstream'\"}\n            grpc_response_status: {operation: UPSERT, value: '\"n/a\"'}\n        - tagOverrides:\n            mesh_id: {value: \"'east'\"}\n",
    );
    let p = compile(&[remove, upsert]);
    let root = policy(&p, "istio-system", &[]);
    for side in Side::BOTH {
        let rc = root.metric(side, StandardMetric::RequestCount);
        assert!(rc.removes("grpc_response_status"));
        assert_eq!(rc.removed().collect::<Vec<_>>(), ["grpc_response_status"]);
        assert!(root
            .metric(side, StandardMetric::RequestDuration)
            .tags
            .is_empty());
    }
    let foo = policy(&p, "foo", &[]);
    let client = foo.metric(Side::Client, StandardMetric::RequestCount);
    assert!(client.enabled);
    // The workload's namespace upserts over the mesh's REMOVE, on CLIENT only.
    assert_eq!(
        client.upserted().collect::<Vec<_>>(),
        [
            ("destination_x", "upstream"),
            ("grpc_response_status", "n/a"),
            ("mesh_id", "east")
        ]
    );
    assert_eq!(client.removed().count(), 0);
    let server = foo.metric(Side::Server, StandardMetric::RequestCount);
    assert_eq!(
        server.action("grpc_response_status"),
        Some(&TagAction::Remove)
    );
    assert_eq!(
        server.action("mesh_id"),
        Some(&TagAction::Upsert("east".into()))
    );
    assert_eq!(server.action("destination_x"), None);
    // No `match`: every metric.
    let size = foo.metric(Side::Server, StandardMetric::ResponseSize);
    assert_eq!(size.upserted().collect::<Vec<_>>(), [("mesh_id", "east")]);
}

/// The reference's "random sampling for 10% of traffic" mesh-wide, with a
/// namespace overriding it to 100 %, and a workload turning span reporting
/// off.
#[test]
fn sampling_mesh_wide_with_namespace_override() {
    let p = compile(&[
        doc("v1", "name: mesh-default, namespace: istio-system", "  tracing:\n  - randomSamplingPercentage: 10.00\n"),
        doc("v1alpha1", "name: all, namespace: debug", "  tracing:\n  - randomSamplingPercentage: 100\n"),
        doc(
            "v1",
            "name: foo-tracing, namespace: debug",
            "  selector:\n    matchLabels:\n      service.istio.io/canonical-name: foo\n  tracing:\n  - disableSpanReporting: true\n    customTags:\n      my_new_foo_tag:\n        literal:\n          value: \"foo\"\n",
        ),
    ]);
    let prod = policy(&p, "prod", &[]);
    assert_eq!(prod.sampling_percentage(Side::Client, 1.0), 10.0);
    let debug = policy(&p, "debug", &[("app", "bar")]);
    assert_eq!(debug.sampling_percentage(Side::Server, 1.0), 100.0);
    assert!(!debug.side(Side::Client).tracing.span_reporting_disabled);
    let foo = policy(&p, "debug", &[("service.istio.io/canonical-name", "foo")]);
    assert_eq!(foo.sampling_percentage(Side::Client, 1.0), 100.0);
    assert!(foo.side(Side::Client).tracing.span_reporting_disabled);
    assert_eq!(
        foo.side(Side::Server).tracing.custom_tags,
        [("my_new_foo_tag".to_string(), "foo".to_string())]
    );
    // Without any Telemetry: the mesh default.
    let none = TelemetryPolicies::compile(&ConfigSet::default(), "istio-system");
    assert!(none.is_empty());
    let w = policy(&none, "prod", &[]);
    assert_eq!(w.sampling_percentage(Side::Client, 1.0), 1.0);
    assert_eq!(enabled(&w, Side::Server), ALL);
    assert!(!w.access_log_enabled(Side::Server, false));
    assert!(w.access_log_enabled(Side::Server, true));
}

/// The task "Envoy Access Logs": enabled mesh-wide with provider `envoy`,
/// disabled for the workload `app: sleep`; and a client-only entry.
#[test]
fn access_logging_per_workload_and_mode() {
    let p = compile(&[
        doc("v1", "name: mesh-default, namespace: istio-system", "  accessLogging:\n    - providers:\n      - name: envoy\n"),
        doc(
            "v1",
            "name: disable-sleep-logging, namespace: default",
            "  selector:\n    matchLabels:\n      app: sleep\n  accessLogging:\n  - providers:\n    - name: envoy\n    disabled: true\n",
        ),
        doc(
            "v1",
            "name: server-only, namespace: shop",
            "  accessLogging:\n  - match: {mode: CLIENT}\n    disabled: true\n  - match: {mode: SERVER}\n    filter: {expression: \"false\"}\n  - match: {mode: SERVER}\n    providers: [{name: otel}]\n",
        ),
    ]);
    let sleep = policy(&p, "default", &[("app", "sleep")]);
    let other = policy(&p, "default", &[("app", "httpbin")]);
    for side in Side::BOTH {
        assert!(!sleep.access_log_enabled(side, true));
        assert!(other.access_log_enabled(side, false));
        assert_eq!(other.side(side).access_log.providers, ["envoy"]);
    }
    let shop = policy(&p, "shop", &[]);
    assert_eq!(shop.side(Side::Client).access_log.enabled, Some(false));
    assert_eq!(shop.side(Side::Client).access_log.providers, ["envoy"]);
    // The later SERVER entry wins over the `false` filter.
    assert_eq!(shop.side(Side::Server).access_log.enabled, Some(true));
    assert_eq!(shop.side(Side::Server).access_log.providers, ["otel"]);
}

#[test]
fn precedence_across_levels() {
    let p = compile(&[
        // Mesh: 10 %, REQUEST_SIZE off, access logs on.
        doc(
            "v1",
            "name: mesh, namespace: istio-system",
            "  tracing: [{randomSamplingPercentage: 10}]\n  metrics: [{overrides: [{match: {metric: REQUEST_SIZE}, disabled: true}]}]\n  accessLogging: [{}]\n",
        ),
        // A selector in the root namespace: only its own workloads.
        doc(
            "v1",
            "name: root-gw, namespace: istio-system",
            "  selector: {matchLabels: {app: gw}}\n  tracing: [{randomSamplingPercentage: 50}]\n",
        ),
        // Namespace foo: 100 %, REQUEST_SIZE back on for the server side.
        doc(
            "v1",
            "name: ns, namespace: foo",
            "  tracing: [{randomSamplingPercentage: 100}]\n  metrics: [{overrides: [{match: {metric: REQUEST_SIZE, mode: SERVER}, disabled: false}]}]\n",
        ),
        // Workloads of foo: the first selector that matches applies.
        doc(
            "v1",
            "name: web, namespace: foo",
            "  selector: {matchLabels: {app: web}}\n  tracing: [{randomSamplingPercentage: 0}]\n  accessLogging: [{disabled: true}]\n",
        ),
        doc(
            "v1",
            "name: web-v2, namespace: foo",
            "  selector: {matchLabels: {app: web, version: v2}}\n  tracing: [{randomSamplingPercentage: 75}]\n",
        ),
    ]);
    let pct =
        |ns: &str, l: &[(&str, &str)]| policy(&p, ns, l).sampling_percentage(Side::Client, 1.0);
    assert_eq!(pct("bar", &[("app", "gw")]), 10.0);
    assert_eq!(pct("istio-system", &[("app", "gw")]), 50.0);
    assert_eq!(pct("istio-system", &[]), 10.0);
    assert_eq!(pct("foo", &[]), 100.0);
    assert_eq!(pct("foo", &[("app", "web"), ("version", "v2")]), 0.0);
    let web = policy(&p, "foo", &[("app", "web")]);
    assert_eq!(web.sources, ["istio-system/mesh", "foo/ns", "foo/web"]);
    assert!(!web.access_log_enabled(Side::Server, true));
    assert!(!web.metric_enabled(Side::Client, StandardMetric::RequestSize));
    assert!(web.metric_enabled(Side::Server, StandardMetric::RequestSize));
    let bar = policy(&p, "bar", &[]);
    assert!(bar.access_log_enabled(Side::Server, false));
    assert!(!bar.metric_enabled(Side::Server, StandardMetric::RequestSize));
    // Computed once: workloads with the same levels share one policy.
    let other = policy(&p, "baz", &[("app", "x")]);
    assert!(Arc::ptr_eq(&bar, &other));
    assert!(Arc::ptr_eq(
        &web,
        &policy(&p, "foo", &[("app", "web"), ("tier", "1")])
    ));
}

#[test]
fn a_second_namespace_wide_telemetry_is_reported_and_ignored() {
    let text = [
        doc(
            "v1",
            "name: first, namespace: foo",
            "  tracing: [{randomSamplingPercentage: 5}]\n",
        ),
        doc(
            "v1",
            "name: second, namespace: foo",
            "  tracing: [{randomSamplingPercentage: 95}]\n",
        ),
        doc("v1", "name: first, namespace: foo", "  tracing: []\n"),
    ]
    .join("---\n");
    let (set, got) = lines(&text);
    assert_eq!(
        got,
        [
            "error: tel.yaml: Telemetry foo/first: metadata.name: duplicate Telemetry foo/first: already defined in tel.yaml (document 1)",
            "warning: tel.yaml: Telemetry foo/second: spec: namespace 'foo' already has Telemetry foo/first without a selector (tel.yaml); only that one applies",
        ]
    );
    let p = TelemetryPolicies::compile(&set, "istio-system");
    assert_eq!(
        policy(&p, "foo", &[]).sampling_percentage(Side::Server, 1.0),
        5.0
    );
}

/// Istio's `mergeMetrics`: `ALL_METRICS` disabled turns a side off until an
/// `ALL_METRICS` override without `disabled: true`; enabling one metric
/// does not; and a level naming providers without `prometheus` turns
/// anymesh's metrics off.
#[test]
fn all_metrics_and_providers() {
    let p = compile(&[
        doc(
            "v1",
            "name: mesh, namespace: istio-system",
            "  metrics:\n  - overrides:\n    - match: {metric: ALL_METRICS}\n      disabled: true\n",
        ),
        doc(
            "v1",
            "name: ns, namespace: one",
            "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      disabled: false\n",
        ),
        doc(
            "v1",
            "name: ns, namespace: back",
            "  metrics:\n  - overrides:\n    - match: {metric: ALL_METRICS, mode: SERVER}\n",
        ),
    ]);
    assert!(enabled(&policy(&p, "one", &[]), Side::Client).is_empty());
    let back = policy(&p, "back", &[]);
    assert!(enabled(&back, Side::Client).is_empty());
    assert_eq!(enabled(&back, Side::Server), ALL);

    let (set, got) = lines(&[
        doc("v1", "name: mesh, namespace: istio-system", "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      disabled: true\n"),
        doc("v1", "name: sd, namespace: sd", "  metrics:\n  - providers: [{name: stackdriver}]\n"),
        doc("v1", "name: again, namespace: again", "  metrics:\n  - providers: [{name: stackdriver}]\n  - providers: [{name: Prometheus}]\n    overrides: [{match: {metric: REQUEST_COUNT}, disabled: false}]\n"),
    ].join("---\n"));
    assert_eq!(got.len(), 2, "{got:#?}");
    let p = TelemetryPolicies::compile(&set, "istio-system");
    assert!(enabled(&policy(&p, "sd", &[]), Side::Server).is_empty());
    assert_eq!(enabled(&policy(&p, "again", &[]), Side::Server), ALL);
    assert_eq!(enabled(&policy(&p, "x", &[]), Side::Server), ALL[1..]);
}
