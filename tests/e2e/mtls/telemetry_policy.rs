//! Istio's Telemetry API on the standard metrics of a mutual TLS hop: the
//! callee's workload Telemetry removes a label from one metric on the
//! server side, and a mesh-wide Telemetry loaded into the running caller
//! turns its request count off on the client side.

use http::StatusCode;

use super::metrics::{scrape, series};
use super::pki::Root;
use super::*;

/// On `b`'s server side, `istio_requests_total` without `request_protocol`
/// and with a fixed `mesh_id`; the other metrics untouched.
const SERVER_TELEMETRY: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: b-metrics, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        mesh_id: {value: \"'east'\"}
";

/// Mesh-wide: no request count on the client side.
const CLIENT_TELEMETRY: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
";

/// The value of the only series of `metric` with `pairs`, 0 when none.
fn value(text: &str, metric: &str, pairs: &[&str]) -> f64 {
    let s = series(text, metric, pairs);
    assert!(s.len() <= 1, "several {metric} series: {text}");
    s.first().map_or(0.0, |(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_resources_disable_a_metric_per_side_and_override_tags() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, SERVER_TELEMETRY).await;
    let a = caller(
        &app,
        &b,
        "b",
        |dir| root.write_svid(dir, "default", "a", false),
        "app: reviews",
        "workloads:\n  - {name: a, namespace: default, service_account: a, labels: {app: a}, ports: [{port: 9, protocol: http}]}\n\
         inbound: {listen: 127.0.0.1:0}\n",
    )
    .await;
    let get = || async {
        let (status, who, body) = a.get("reviews", "/", &[]).await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    };
    let source = ["reporter=\"source\"", "source_workload=\"a\""];
    let count = "istio_requests_total";
    let durations = "istio_request_duration_milliseconds_count";

    // No Telemetry on the caller yet: both metrics count.
    get().await;
    eventually("the caller's first request", || async {
        let text = scrape(&a).await;
        (value(&text, count, &source) == 1.0 && value(&text, durations, &source) == 1.0)
            .then_some(())
    })
    .await;

    // The callee: one request-count series without `request_protocol`,
    // with `mesh_id`; its durations keep `request_protocol`.
    let server = ["reporter=\"destination\"", "source_workload=\"a\""];
    let text = eventually("the callee's request", || async {
        let text = scrape(&b).await;
        (value(&text, durations, &server) == 1.0).then_some(text)
    })
    .await;
    let counted = series(&text, count, &server);
    assert_eq!(counted.len(), 1, "{text}");
    let (labels, n) = counted[0];
    assert_eq!(n, 1.0, "{text}");
    assert!(!labels.contains("request_protocol"), "{labels}");
    assert!(labels.contains("mesh_id=\"east\""), "{labels}");
    assert!(
        labels.contains("connection_security_policy=\"mutual_tls\""),
        "{labels}"
    );
    let timed = series(&text, durations, &server);
    assert!(timed[0].0.contains("request_protocol=\"http\""), "{text}");
    assert!(!timed[0].0.contains("mesh_id"), "{text}");

    // The caller's config gains the mesh-wide Telemetry: once reloaded,
    // its requests are timed but no longer counted.
    write(&a.dir.path().join("routes.yaml"), CLIENT_TELEMETRY);
    let (counted, timed) = eventually("the caller's new policy", || async {
        get().await;
        let text = scrape(&a).await;
        let (c, t) = (
            value(&text, count, &source),
            value(&text, durations, &source),
        );
        (t > c).then_some((c, t))
    })
    .await;
    for _ in 0..3 {
        get().await;
    }
    // A recording ends after the caller has its response: poll.
    let text = eventually("the caller times three more requests", || async {
        let text = scrape(&a).await;
        (value(&text, durations, &source) == timed + 3.0).then_some(text)
    })
    .await;
    assert_eq!(value(&text, count, &source), counted, "{text}");
    // The callee, whose policy did not change, counts every request.
    eventually("the callee counts every request", || async {
        let text = scrape(&b).await;
        (value(&text, count, &server) == timed + 3.0).then_some(())
    })
    .await;
}
