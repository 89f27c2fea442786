//! Istio's standard metrics from both proxies of a mutual TLS hop: the
//! caller reports as `source`, the callee as `destination`, each with the
//! labels Istio's dashboards read.

use http::StatusCode;

use super::pki::Root;
use super::*;

/// The series of `metric` in `text` whose labels include every one of
/// `pairs`, with their values.
pub(super) fn series<'t>(text: &'t str, metric: &str, pairs: &[&str]) -> Vec<(&'t str, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| pairs.iter().all(|p| l.contains(p)))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

pub(super) async fn scrape(mesh: &TestMesh) -> String {
    let (status, body) = mesh.admin("/stats/prometheus").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_proxies_report_istio_standard_metrics_with_istio_labels() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, "").await;

    // The caller fronts workload `a` (app a, version v1) and reaches the
    // application through `b`'s proxy.
    let a = caller(
        &app,
        &b,
        "b",
        |dir| root.write_svid(dir, "default", "a", false),
        "app: reviews, version: v2",
        "workloads:\n  - {name: a, namespace: default, service_account: a, labels: {app: a, version: v1}, ports: [{port: 9, protocol: http}]}\n\
         inbound: {listen: 127.0.0.1:0}\n",
    )
    .await;
    let inbound = b.mesh.inbound.expect("inbound");

    for _ in 0..3 {
        let (status, who, body) = a.get("reviews", "/", &[]).await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    }
    let outbound = [
        "reporter=\"source\"",
        "source_workload=\"a\"",
        "source_canonical_service=\"a\"",
        "source_canonical_revision=\"v1\"",
        "source_workload_namespace=\"default\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/a\"",
        "source_app=\"a\"",
        "source_version=\"v1\"",
        "destination_workload=\"reviews\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/b\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v2\"",
        "destination_canonical_revision=\"v2\"",
        "destination_service_name=\"reviews\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"unknown\"",
    ];
    let text = eventually("the caller's three requests", || async {
        let text = scrape(&a).await;
        let s = series(&text, "istio_requests_total", &outbound);
        (s.len() == 1 && s[0].1 == 3.0).then_some(text)
    })
    .await;
    assert!(
        series(
            &text,
            "istio_request_duration_milliseconds_count",
            &outbound
        )
        .iter()
        .any(|(_, v)| *v == 3.0),
        "{text}"
    );
    assert!(text.contains("istio_build{component=\"proxy\""), "{text}");

    // The callee learns the caller's workload labels from `x-anymesh-peer`
    // (its namespace and principal from the certificate), and the
    // application never sees the header.
    let inbound_mtls = [
        "reporter=\"destination\"",
        "source_workload=\"a\"",
        "source_app=\"a\"",
        "source_version=\"v1\"",
        "source_canonical_service=\"a\"",
        "source_canonical_revision=\"v1\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/a\"",
        "source_workload_namespace=\"default\"",
        "destination_workload=\"b\"",
        "destination_app=\"b\"",
        "destination_workload_namespace=\"default\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/b\"",
        "destination_service=\"b.default.svc.cluster.local\"",
        "response_code=\"200\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    eventually("the callee's three requests", || async {
        let text = scrape(&b).await;
        let s = series(&text, "istio_requests_total", &inbound_mtls);
        (s.len() == 1 && s[0].1 == 3.0).then_some(())
    })
    .await;

    let resp = a
        .send(
            http::Request::get(format!("http://{}/", a.proxy()))
                .header("host", "reviews")
                .body(http_body_util::Full::default())
                .expect("request"),
        )
        .await;
    let seen = resp.headers()["x-seen-headers"].to_str().expect("ascii");
    assert!(!seen.contains("x-anymesh-peer"), "{seen}");

    // A plaintext caller (PERMISSIVE): no principal, policy `none`; the
    // workload labels it claims are not believed, and removed.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let resp = client
        .request(
            http::Request::get(format!("http://{inbound}/"))
                .header("host", "reviews")
                .header("x-anymesh-peer", "w=forged;a=forged")
                .body(http_body_util::Full::default())
                .expect("request"),
        )
        .await
        .expect("plaintext answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = resp.headers()["x-seen-headers"].to_str().expect("ascii");
    assert!(!seen.contains("x-anymesh-peer"), "{seen}");
    let inbound_plain = [
        "reporter=\"destination\"",
        "source_principal=\"unknown\"",
        "source_workload=\"unknown\"",
        "destination_workload=\"b\"",
        "connection_security_policy=\"none\"",
    ];
    let text = eventually("the plaintext request", || async {
        let text = scrape(&b).await;
        (series(&text, "istio_requests_total", &inbound_plain).len() == 1).then_some(text)
    })
    .await;
    assert!(!text.contains("forged"), "{text}");
}
