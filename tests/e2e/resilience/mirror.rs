//! Mirroring: fire and forget (a hanging mirror costs the primary nothing),
//! the configured share, and the anymesh comparison counting a mirror that
//! answers differently.

use std::time::Duration;

use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::wait::Poll;
use anymesh_testkit::ChaosUpstream;

use super::{load, routed, HOST};
use crate::harness::*;

/// [`HOST`] on `c1..c3` and `shadow` on `s1`.
async fn mirrored_mesh(routes: &str) -> (TestMesh, Vec<ChaosUpstream>, ChaosUpstream) {
    let ups = ChaosUpstream::start_many(&["c1", "c2", "c3"]).await;
    let shadow = ChaosUpstream::start("s1").await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| chaos_endpoint(u, "version: v1"))
        .collect();
    let shadow_service = services("shadow", "http", &[chaos_endpoint(&shadow, "version: v1")]);
    let all = format!(
        "{}{}",
        services(HOST, "http", &eps),
        shadow_service.trim_start_matches("services:\n")
    );
    let mesh = TestMesh::start(&all, routes).await;
    routed(&mesh, HOST, &ups).await;
    (mesh, ups, shadow)
}

fn mirror_vs(annotations: &str, mirror: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {HOST}\n{annotations}\
         spec:\n  hosts: [{HOST}]\n  http:\n  - name: primary\n    route:\n    - destination: {{host: {HOST}}}\n{mirror}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_mirror_costs_the_primary_nothing_and_gets_its_share() {
    let routes = mirror_vs(
        "",
        "    mirror: {host: shadow}\n    mirrorPercentage: {value: 50}\n",
    );
    let (mesh, _ups, shadow) = mirrored_mesh(&routes).await;
    let before = shadow.requests();
    let n = 1000;
    let healthy = load(&mesh).concurrency(4).run(n).await;
    assert_eq!(healthy.ok(), n, "{:?}", healthy.failures());
    // Binomial(1000, 0.5): sigma 15.8; five sigma either side.
    Poll::new()
        .until("the mirror copies to arrive", || {
            shadow.requests() - before >= 421
        })
        .await;
    let mirrored = shadow.requests() - before;
    assert!(
        (421..=579).contains(&mirrored),
        "{mirrored} of {n} requests mirrored at 50 %"
    );

    shadow.set(Behaviour::Hang);
    let hanging = load(&mesh).concurrency(4).run(n).await;
    println!(
        "mirror at 50 %: {mirrored} of {n} mirrored; primary with a healthy mirror: {}; with a hanging mirror: {}",
        healthy.summary(),
        hanging.summary()
    );
    assert_eq!(hanging.ok(), n, "{:?}", hanging.failures());
    // The same distribution, within what a busy test machine allows: a
    // primary that waited for its mirror would take the client's 3 s.
    for (what, with, without) in [
        ("p50", hanging.p50(), healthy.p50()),
        ("p99", hanging.p99(), healthy.p99()),
    ] {
        let bound = (without * 2).max(without + Duration::from_millis(50));
        assert!(
            with <= bound,
            "{what} {with:?} with a hanging mirror against {without:?} without one"
        );
    }
}

/// Sums `anymesh_mirror_responses_total` samples with this `result`.
async fn mirror_results(mesh: &TestMesh, result: &str) -> u64 {
    let (_, text) = mesh.admin("/metrics").await;
    let label = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("anymesh_mirror_responses_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comparison_counts_a_mirror_that_answers_differently() {
    let routes = mirror_vs(
        "  annotations: {mirror.anymesh.io/compare: status}\n",
        "    mirror: {host: shadow}\n",
    );
    let (mesh, _ups, shadow) = mirrored_mesh(&routes).await;
    let (matched, mismatched) = (
        mirror_results(&mesh, "match").await,
        mirror_results(&mesh, "mismatch").await,
    );
    let r = load(&mesh).concurrency(2).run(20).await;
    assert_eq!(r.ok(), 20, "{:?}", r.failures());
    eventually("20 matching mirrored responses", || async {
        mirror_results(&mesh, "match").await >= matched + 20
    })
    .await;

    // From here the shadow answers 500: a mirror it has not answered yet
    // can only mismatch. Once every copy it received is compared, the match
    // count is final for the first batch.
    shadow.set(Behaviour::Status(500));
    eventually("every mirrored copy received is compared", || async {
        let mut compared = 0;
        for result in ["match", "mismatch", "error", "uncompared"] {
            compared += mirror_results(&mesh, result).await;
        }
        compared >= shadow.requests() as u64
    })
    .await;
    let matched = mirror_results(&mesh, "match").await;
    let r = load(&mesh).concurrency(2).run(20).await;
    assert_eq!(
        r.ok(),
        20,
        "the mirror's 500 never reaches the client: {:?}",
        r.failures()
    );
    eventually("20 mismatching mirrored responses", || async {
        mirror_results(&mesh, "mismatch").await >= mismatched + 20
    })
    .await;
    assert_eq!(
        mirror_results(&mesh, "match").await,
        matched,
        "a different status is not a match"
    );
}
