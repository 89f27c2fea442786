//! Which failures are retried: a POST whose body reached an upstream is not
//! replayed by Istio's default policy (istio#50506) but is when the
//! operator asks with `retryOn`; a response reset after its head is never
//! retried; a gRPC `unavailable` read from the response head is; the route
//! timeout bounds all attempts together.

use std::time::Duration;

use anymesh_testkit::chaos::load::Load;
use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::ChaosUpstream;
use hyper::Method;

use super::{chaos_mesh, load, routed, upstream_total, vs, HOST};
use crate::harness::*;

fn post(mesh: &TestMesh) -> Load {
    load(mesh)
        .method(Method::POST)
        .body(b"order #1")
        .concurrency(1)
}

fn posts(ups: &[ChaosUpstream]) -> usize {
    ups.iter().map(|u| u.requests_by("POST")).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_never_replays_a_post_the_upstream_has_read() {
    let (mesh, ups) = chaos_mesh(&vs("")).await;
    for u in &ups {
        u.set(Behaviour::CloseBeforeResponse);
    }
    let report = post(&mesh).run(10).await;
    println!("default policy, POSTs closed on: {}", report.summary());
    assert_eq!(report.ok(), 0, "{}", report.summary());
    assert_eq!(
        posts(&ups),
        10,
        "each POST reached an upstream exactly once: {}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_retry_on_reset_replays_a_post() {
    let (mesh, ups) = chaos_mesh(&vs("    retries: {attempts: 2, retryOn: reset}\n")).await;
    for u in &ups {
        u.set(Behaviour::CloseBeforeResponse);
    }
    let report = post(&mesh).run(5).await;
    println!("retryOn reset, POSTs closed on: {}", report.summary());
    assert_eq!(report.ok(), 0, "{}", report.summary());
    assert_eq!(
        posts(&ups),
        15,
        "each POST tried three times (the operator asked): {}",
        report.summary()
    );
    // And a retry succeeds when the next endpoint answers.
    let before = posts(&ups);
    ups[0].set(Behaviour::Normal);
    ups[1].set(Behaviour::Normal);
    let report = post(&mesh).run(10).await;
    assert_eq!(report.ok(), 10, "{:?}", report.failures());
    assert!(posts(&ups) - before >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_reset_after_its_head_is_not_retried() {
    let routes = vs("    retries: {attempts: 2, retryOn: \"reset,5xx\"}\n");
    let (mesh, ups) = chaos_mesh(&routes).await;
    let (before, broken_before) = (upstream_total(&ups), ups[0].requests());
    ups[0].set(Behaviour::ResetMidResponse);
    let report = load(&mesh).concurrency(4).run(60).await;
    println!("one endpoint resetting mid-response: {}", report.summary());
    let broken = ups[0].requests() - broken_before;
    assert!(broken > 0, "{}", report.summary());
    let failed: Vec<_> = report.outcomes.iter().filter(|o| !o.is_ok()).collect();
    assert_eq!(
        failed.len(),
        broken,
        "every response cut mid-body reaches the client cut: {:?}",
        report.failures()
    );
    assert!(
        failed
            .iter()
            .all(|o| o.status == Some(200) && o.error.is_some()),
        "the head was passed on, then the body failed: {:?}",
        report.failures()
    );
    assert_eq!(
        upstream_total(&ups) - before,
        report.total(),
        "a response already started is never retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_bounds_all_attempts_together() {
    // Per-try 200 ms with five retries, but 300 ms for the whole request:
    // the first try times out, the second is cut by the route timeout.
    let routes = vs("    timeout: 300ms\n    retries: {attempts: 5, perTryTimeout: 200ms, retryOn: gateway-error}\n");
    let (mesh, ups) = chaos_mesh(&routes).await;
    let before = upstream_total(&ups);
    for u in &ups {
        u.set(Behaviour::Hang);
    }
    let report = load(&mesh).concurrency(1).run(5).await;
    println!("all hung, timeout 300ms: {}", report.summary());
    assert_eq!(report.status(504), 5, "{:?}", report.failures());
    let route_timeout = Duration::from_millis(300);
    assert!(
        report.quantile(0.0) >= route_timeout
            && report.max() < route_timeout + Duration::from_millis(150),
        "each request ends at the route timeout: {}",
        report.summary()
    );
    assert_eq!(
        upstream_total(&ups) - before,
        10,
        "two tries per request fit in the route timeout"
    );
}

/// [`HOST`] as a gRPC service on `c1..c3`, routed, with `routes`.
async fn grpc_mesh(routes: &str) -> (TestMesh, Vec<ChaosUpstream>) {
    let ups = ChaosUpstream::start_many(&["c1", "c2", "c3"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| chaos_endpoint(u, "version: v1"))
        .collect();
    let mesh = TestMesh::start(&services(HOST, "grpc", &eps), routes).await;
    routed(&mesh, HOST, &ups).await;
    (mesh, ups)
}

fn grpc_call(mesh: &TestMesh) -> Load {
    load(mesh)
        .http2()
        .method(Method::POST)
        .path("/shop.Orders/Place")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(b"\0\0\0\0\x02hi")
        .concurrency(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_in_the_response_head_is_retried_when_asked() {
    let routes = vs("    retries: {attempts: 2, retryOn: unavailable}\n");
    let (mesh, ups) = grpc_mesh(&routes).await;
    let (before, sick_before) = (upstream_total(&ups), ups[0].requests());
    ups[0].set(Behaviour::GrpcStatus(14));
    let report = grpc_call(&mesh).run(60).await;
    println!(
        "gRPC, one endpoint UNAVAILABLE, retryOn unavailable: {}",
        report.summary()
    );
    let unavailable = ups[0].requests() - sick_before;
    assert!(unavailable > 0, "{}", report.summary());
    assert_eq!(report.ok(), 60, "{:?}", report.failures());
    assert!(
        report.outcomes.iter().all(|o| o.grpc_status.is_none()),
        "an UNAVAILABLE reached the client"
    );
    assert_eq!(
        upstream_total(&ups) - before,
        60 + unavailable,
        "one retry per UNAVAILABLE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_after_the_upstream_read_the_call_reaches_the_client_by_default() {
    // Istio's default lists `unavailable`, but a gRPC call is a POST the
    // upstream has read: the default policy does not replay it.
    let (mesh, ups) = grpc_mesh(&vs("")).await;
    let (before, sick_before) = (upstream_total(&ups), ups[0].requests());
    ups[0].set(Behaviour::GrpcStatus(14));
    let report = grpc_call(&mesh).run(60).await;
    println!(
        "gRPC, one endpoint UNAVAILABLE, default policy: {}",
        report.summary()
    );
    let unavailable = ups[0].requests() - sick_before;
    let seen = report
        .outcomes
        .iter()
        .filter(|o| o.grpc_status.as_deref() == Some("14"))
        .count();
    assert!(unavailable > 0);
    assert_eq!(seen, unavailable, "every UNAVAILABLE reaches the client");
    assert_eq!(upstream_total(&ups) - before, 60, "nothing replayed");

    // Istio's metrics say which calls were gRPC and how they ended.
    let (_, text) = mesh.admin("/stats/prometheus").await;
    let count = |status: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .filter(|l| l.contains("request_protocol=\"grpc\""))
            .filter(|l| l.contains(&format!("grpc_response_status=\"{status}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("14"), seen as f64, "{text}");
    // (The chaos upstream's healthy answers carry no grpc-status.)
    assert_eq!(count(""), (60 - seen) as f64, "{text}");
    // Every call sent one gRPC message; it is counted as it goes upstream,
    // and the chaos upstream answers without waiting for it, so a call
    // answered first counts none.
    let sent: f64 = text
        .lines()
        .filter(|l| l.starts_with("istio_request_messages_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(sent > 0.0 && sent <= 60.0, "{sent} {text}");
}

/// A POST whose body streams from an HTTP/2 client is never sent twice, but
/// while no connection could be made nothing of it left the proxy: Istio's
/// default `connect-failure` sends it to another endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_post_goes_elsewhere_when_its_endpoint_refuses_connections() {
    let (mesh, ups) = chaos_mesh(&vs("")).await;
    ups[0].kill().await;
    let report = post(&mesh).http2().concurrency(2).run(30).await;
    println!(
        "default policy, HTTP/2 POSTs, one endpoint down: {}",
        report.summary()
    );
    assert_eq!(report.ok(), 30, "{:?}", report.failures());
    assert_eq!(posts(&ups), 30, "each POST reached a live upstream once");
}
