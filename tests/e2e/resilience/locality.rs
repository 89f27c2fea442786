//! Locality failover: endpoints in two zones, the proxy's zone failing,
//! traffic moving to the other zone and returning when it heals.

use std::time::Duration;

use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::wait::Poll;
use anymesh_testkit::ChaosUpstream;
use tokio::time::Instant;

use super::{dr, load, routed, vs, HOST};
use crate::harness::*;

fn endpoint_in(up: &ChaosUpstream, zone: &str) -> String {
    format!(
        "      - {{address: 127.0.0.1, port: {}, id: {}, locality: {{region: eu, zone: {zone}}}}}\n",
        up.port(),
        up.name()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_leaves_a_failing_local_zone_and_returns() {
    // c1 and c2 share the proxy's zone; c3 is in the next zone.
    let ups = ChaosUpstream::start_many(&["c1", "c2", "c3"]).await;
    let eps = vec![
        endpoint_in(&ups[0], "eu-1a"),
        endpoint_in(&ups[1], "eu-1a"),
        endpoint_in(&ups[2], "eu-1b"),
    ];
    // Failover acts only with outlier detection (Istio's rule); a short
    // ejection so the zone comes back within the test.
    let routes = format!(
        "{}{}",
        vs(""),
        dr("    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 100}\n")
    );
    let mesh = TestMesh::start_with_services_and_settings(
        &services(HOST, "http", &eps),
        &routes,
        "locality: {region: eu, zone: eu-1a}\n",
    )
    .await;
    let (local, remote) = (&ups[..2], &ups[2]);
    routed(&mesh, HOST, local).await;

    let running = load(&mesh).concurrency(4).start();
    running.wait_for(200).await;
    assert_eq!(
        remote.requests(),
        0,
        "traffic stays in the proxy's zone while it is healthy"
    );

    for u in local {
        u.set(Behaviour::Status(503));
    }
    Poll::new()
        .until("traffic to reach the other zone", || remote.requests() > 0)
        .await;
    let moved = Instant::now();
    running.wait_for(200).await;
    let report = running.report().since(moved);
    assert_eq!(
        report.by_upstream().get("c3").copied(),
        Some(report.total()),
        "the other zone serves everything once the local zone is ejected: {}",
        report.summary()
    );

    for u in local {
        u.set(Behaviour::Normal);
    }
    let before: usize = local.iter().map(ChaosUpstream::requests).sum();
    Poll::new()
        .deadline(Duration::from_secs(10))
        .until("traffic to return to the local zone", || {
            local.iter().map(ChaosUpstream::requests).sum::<usize>() > before
        })
        .await;
    let returned = Instant::now();
    // Once back, the local tier takes it all again (an endpoint still
    // ejected for a moment may leave some to the other zone at first).
    Poll::new()
        .until_async("the local zone to take all traffic again", || async {
            let remote_before = remote.requests();
            running.wait_for(100).await;
            remote.requests() == remote_before
        })
        .await;
    let report = running.stop().await;
    println!("locality failover: {}", report.summary());
    let after = report.since(returned);
    assert_eq!(after.ok(), after.total(), "{:?}", after.failures());
}
