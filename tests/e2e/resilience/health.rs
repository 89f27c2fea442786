//! Active health checks: an endpoint whose health path fails leaves routing
//! before any request fails, and returns once it passes again.

use std::time::Duration;

use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::wait::Poll;
use anymesh_testkit::ChaosUpstream;

use super::{load, routed, vs, HOST};
use crate::harness::*;

/// Probes of `/healthz` on every endpoint of [`HOST`], fast enough for a
/// test: two failures mark an endpoint unhealthy, two passes healthy again.
const CHECKS: &str = "health_checks:
  - service: chaos
    http: {path: /healthz}
    interval: 100ms
    timeout: 50ms
    unhealthy_threshold: 2
    healthy_threshold: 2
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_takes_an_endpoint_out_before_any_request_fails() {
    let ups = ChaosUpstream::start_many(&["c1", "c2", "c3"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| chaos_endpoint(u, "version: v1"))
        .collect();
    let mesh =
        TestMesh::start_with_services_and_settings(&services(HOST, "http", &eps), &vs(""), CHECKS)
            .await;
    routed(&mesh, HOST, &ups).await;
    Poll::new()
        .until("every endpoint probed", || {
            ups.iter().all(|u| u.health_checks() >= 2)
        })
        .await;
    let sick = &ups[1];
    let running = load(&mesh).concurrency(8).start();
    running.wait_for(50).await;

    sick.set_healthy(false);
    Poll::new()
        .every(Duration::ZERO)
        .until_async("the failing endpoint to leave routing", || async {
            let seen = sick.requests();
            running.wait_for(100).await;
            sick.requests() == seen
        })
        .await;
    // Out of routing: a request reaching it now would fail.
    sick.set(Behaviour::Status(503));
    running.wait_for(300).await;
    let while_out = sick.requests();

    sick.set(Behaviour::Normal);
    sick.set_healthy(true);
    Poll::new()
        .until_async("the endpoint to return to routing", || async {
            running.wait_for(20).await;
            sick.requests() > while_out
        })
        .await;
    let report = running.stop().await;
    println!("active health checks: {}", report.summary());
    assert_eq!(
        report.ok(),
        report.total(),
        "a request failed although the endpoint's health check failed first: {:?}",
        report.failures()
    );
}
