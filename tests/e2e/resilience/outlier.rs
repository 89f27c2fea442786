//! Outlier detection's limits: `maxEjectionPercent` (yet at least one
//! endpoint may be ejected) and `minHealthPercent` (below it, ejection is
//! suspended and every endpoint is used: Istio's panic threshold).

use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::ChaosUpstream;

use super::{chaos_mesh, dr, load, vs};

/// Requests each upstream received since `before`.
fn since(ups: &[ChaosUpstream], before: &[usize]) -> Vec<usize> {
    ups.iter()
        .zip(before)
        .map(|(u, b)| u.requests() - b)
        .collect()
}

fn counts(ups: &[ChaosUpstream]) -> Vec<usize> {
    ups.iter().map(ChaosUpstream::requests).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_still_lets_one_endpoint_be_ejected() {
    // 10 % of three endpoints is none, but one may always be ejected.
    let routes = format!(
        "{}{}",
        vs(""),
        dr("    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 10}\n")
    );
    let (mesh, ups) = chaos_mesh(&routes).await;
    for u in &ups {
        u.set(Behaviour::Status(503));
    }
    load(&mesh).concurrency(4).run(100).await;
    let before = counts(&ups);
    let report = load(&mesh).concurrency(4).run(150).await;
    let got = since(&ups, &before);
    println!(
        "all failing, maxEjectionPercent 10: {got:?} of {}",
        report.total()
    );
    assert_eq!(
        got.iter().filter(|&&n| n == 0).count(),
        1,
        "exactly one endpoint ejected: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_health_percent_every_endpoint_is_used() {
    let outlier = "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100";
    // Without a threshold (Istio's default 0), the two failing endpoints
    // are ejected and the third takes everything; with minHealthPercent 50,
    // one healthy endpoint of three is too few: all three are used.
    for (min_health, panics) in [("", false), (", minHealthPercent: 50", true)] {
        let routes = format!("{}{}", vs(""), dr(&format!("{outlier}{min_health}}}\n")));
        let (mesh, ups) = chaos_mesh(&routes).await;
        ups[0].set(Behaviour::Status(503));
        ups[1].set(Behaviour::Status(503));
        load(&mesh).concurrency(4).run(100).await;
        let before = counts(&ups);
        let report = load(&mesh).concurrency(4).run(150).await;
        let got = since(&ups, &before);
        println!(
            "two of three failing{min_health}: {got:?}; {}",
            report.summary()
        );
        assert!(got[2] > 0, "the healthy endpoint serves: {got:?}");
        if panics {
            assert!(
                got[0] > 0 && got[1] > 0,
                "below minHealthPercent ejection is suspended: {got:?}"
            );
        } else {
            assert_eq!(
                (got[0], got[1]),
                (0, 0),
                "both failing endpoints ejected: {got:?}"
            );
        }
    }
}
