//! Outlier detection through `ClusterLb::report`: thresholds, ejection
//! times (paused clock), the max-ejection-percent rule, verdicts.

use std::time::Duration;

use anymesh_core::routes::{ClusterPolicy, OutlierDetection};
use tokio::time::{advance, Instant};

use super::*;
use crate::resilience::outlier::{AttemptOutcome, EjectionReason, LocalFailure, OutlierVerdict};

/// A cluster policy with outlier detection (Istio's defaults, then `f`).
pub(super) fn outlier(f: impl FnOnce(&mut OutlierDetection)) -> ClusterPolicy {
    let mut od = OutlierDetection::default();
    f(&mut od);
    ClusterPolicy {
        outlier: Some(od),
        ..ClusterPolicy::default()
    }
}

/// A cluster of endpoints `e0..e{n-1}` with `policy`.
pub(super) fn endpoints(lb: LbPolicy, n: usize, policy: ClusterPolicy) -> Arc<Cluster> {
    let eps = (0..n).map(|i| ep(&format!("e{i}"), 1)).collect();
    cluster_with("c", lb, eps, policy)
}

pub(super) fn status(code: u16) -> AttemptOutcome {
    AttemptOutcome::Response {
        status: code,
        latency: Duration::from_millis(1),
    }
}

/// Reports `count` times `outcome` for endpoint `i`.
pub(super) fn report_n(lb: &ClusterLb, i: usize, count: usize, outcome: AttemptOutcome) {
    for _ in 0..count {
        lb.report(i, outcome);
    }
}

fn ejection(lb: &ClusterLb, i: usize) -> Option<crate::resilience::outlier::Ejection> {
    match lb.verdicts(i).unwrap().outlier {
        OutlierVerdict::Ejected(e) => Some(e),
        _ => None,
    }
}

fn ejected(lb: &ClusterLb, i: usize) -> bool {
    ejection(lb, i).is_some()
}

/// Distinct endpoint indices picked over `n` picks.
pub(super) fn picked(lb: &ClusterLb, n: usize) -> Vec<usize> {
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let mut seen = vec![0usize; lb.cluster().endpoints.len()];
    for _ in 0..n {
        seen[lb.pick(&ctx).unwrap().index] += 1;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn five_consecutive_5xx_eject_for_30s_then_60s() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, outlier(|_| {})),
    );
    report_n(&lb, 1, 4, status(503));
    assert!(!ejected(&lb, 1), "4 of 5");
    let start = Instant::now();
    lb.report(1, status(500));
    let e = ejection(&lb, 1).expect("ejected at the 5th 5xx");
    assert_eq!(e.until - start, Duration::from_secs(30));
    assert_eq!(
        (e.reason, e.failures, e.nth),
        (EjectionReason::Consecutive5xx, 5, 1)
    );
    assert_eq!(picked(&lb, 300)[1], 0, "never picked while ejected");

    advance(Duration::from_millis(29_999)).await;
    assert_eq!(picked(&lb, 300)[1], 0, "still ejected at 29.999 s");
    advance(Duration::from_millis(1)).await;
    assert_eq!(picked(&lb, 300), [100, 100, 100], "back at 30 s");
    assert_eq!(
        lb.verdicts(1).unwrap().outlier,
        OutlierVerdict::Serving {
            ejections: 1,
            backoff: 1
        }
    );

    // Failing again at once: twice the time.
    let again = Instant::now();
    report_n(&lb, 1, 5, status(502));
    let e = ejection(&lb, 1).expect("ejected again");
    assert_eq!(e.until - again, Duration::from_secs(60));
    assert_eq!(e.nth, 2);
    let until = "12:03:41";
    assert_eq!(
        e.describe(&until).to_string(),
        "ejected until 12:03:41 after 5 consecutive 5xx, 2nd ejection"
    );
    advance(Duration::from_secs(59)).await;
    assert!(ejected(&lb, 1));
    advance(Duration::from_secs(1)).await;
    assert!(!ejected(&lb, 1));
}

#[tokio::test(start_paused = true)]
async fn ejection_time_is_capped_and_the_multiplier_decays_per_healthy_interval() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, outlier(|_| {})),
    );
    // Fail again as soon as each ejection ends: 30, 60, ... capped at 300.
    let mut times = Vec::new();
    for _ in 0..13 {
        let now = Instant::now();
        report_n(&lb, 0, 5, status(503));
        let e = ejection(&lb, 0).unwrap();
        times.push((e.until - now).as_secs());
        advance(e.until - now).await;
    }
    assert_eq!(
        times,
        [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300]
    );
    // The multiplier stopped one step past the cap (Envoy): 11.
    assert!(matches!(
        lb.verdicts(0).unwrap().outlier,
        OutlierVerdict::Serving { backoff: 11, .. }
    ));

    // Ten healthy intervals take it to 1: the next ejection is 60 s.
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, outlier(|_| {})),
    );
    advance(Duration::from_secs(100)).await;
    let now = Instant::now();
    report_n(&lb, 0, 5, status(503));
    let e = ejection(&lb, 0).unwrap();
    assert_eq!((e.until - now).as_secs(), 60, "backoff 11 − 10 + 1 = 2");

    // One interval after that ejection ends: 2 − 1 + 1 = 2 → 60 s; two
    // more intervals later: 0 + 1 → 30 s.
    advance(Duration::from_secs(60)).await;
    advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    report_n(&lb, 0, 5, status(503));
    assert_eq!((ejection(&lb, 0).unwrap().until - now).as_secs(), 60);
    advance(Duration::from_secs(60 + 20)).await;
    let now = Instant::now();
    report_n(&lb, 0, 5, status(503));
    assert_eq!((ejection(&lb, 0).unwrap().until - now).as_secs(), 30);
    // Less than an interval healthy does not decay.
    advance(Duration::from_secs(30 + 9)).await;
    let now = Instant::now();
    report_n(&lb, 0, 5, status(503));
    assert_eq!((ejection(&lb, 0).unwrap().until - now).as_secs(), 60);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::Random, 3, outlier(|_| {})),
    );
    report_n(&lb, 2, 4, status(503));
    lb.report(2, status(200));
    report_n(&lb, 2, 4, status(503));
    lb.report(2, status(404));
    report_n(&lb, 2, 4, status(500));
    assert!(!ejected(&lb, 2), "never 5 in a row");
    lb.report(2, status(500));
    assert!(ejected(&lb, 2));
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_allows_at_least_one() {
    let mut balancers = Balancers::new();
    // Three endpoints at the default 10 %: the first ejection is allowed
    // (none is ejected yet), a second is not.
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, outlier(|_| {})),
    );
    report_n(&lb, 0, 5, status(503));
    report_n(&lb, 1, 5, status(503));
    assert!(ejected(&lb, 0));
    assert!(!ejected(&lb, 1), "would make 67 % > 10 %");
    // The refused threshold reset the count: 4 more do not eject, even
    // once the room is there.
    advance(Duration::from_secs(30)).await;
    report_n(&lb, 1, 4, status(503));
    assert!(!ejected(&lb, 1));
    lb.report(1, status(503));
    assert!(ejected(&lb, 1));

    // Ten endpoints at 20 %: two at once, not three.
    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(
            LbPolicy::RoundRobin,
            10,
            outlier(|o| o.max_ejection_percent = 20),
        ),
    );
    for i in 0..3 {
        report_n(&lb, i, 5, status(503));
    }
    assert_eq!(
        (0..10).filter(|&i| ejected(&lb, i)).count(),
        2,
        "100 × 3 / 10 > 20"
    );
}

#[tokio::test(start_paused = true)]
async fn local_origin_failures_count_as_5xx_without_the_split() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, outlier(|_| {})),
    );
    let local = |f| AttemptOutcome::LocalOrigin(f);
    lb.report(0, local(LocalFailure::Connect));
    lb.report(0, local(LocalFailure::Reset));
    lb.report(0, local(LocalFailure::Timeout));
    lb.report(0, status(500));
    lb.report(0, local(LocalFailure::Connect));
    let e = ejection(&lb, 0).expect("5 in a row");
    assert_eq!(e.reason, EjectionReason::Consecutive5xx);

    // Gateway errors: 502/503/504 and local failures; a 500 breaks the run.
    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(
            LbPolicy::RoundRobin,
            3,
            outlier(|o| {
                o.consecutive_5xx = None;
                o.consecutive_gateway = Some(3);
            }),
        ),
    );
    lb.report(0, status(502));
    lb.report(0, local(LocalFailure::Timeout));
    lb.report(0, status(500));
    lb.report(0, status(504));
    lb.report(0, local(LocalFailure::Connect));
    assert!(!ejected(&lb, 0));
    lb.report(0, status(503));
    let e = ejection(&lb, 0).expect("3 gateway errors in a row");
    assert_eq!(
        (e.reason, e.failures),
        (EjectionReason::ConsecutiveGateway, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn split_counts_local_origin_failures_apart() {
    let mut balancers = Balancers::new();
    let split = || {
        outlier(|o| {
            o.split_external_local_origin = true;
            o.consecutive_local_origin = Some(3);
        })
    };
    let lb = lb_for(&mut balancers, endpoints(LbPolicy::RoundRobin, 3, split()));
    let local = |f| AttemptOutcome::LocalOrigin(f);
    // Local failures do not touch the 5xx count, nor 5xx the local one;
    // any response resets the local count.
    report_n(&lb, 0, 4, status(503));
    lb.report(0, local(LocalFailure::Connect));
    lb.report(0, local(LocalFailure::Timeout));
    assert!(!ejected(&lb, 0));
    lb.report(0, status(503));
    assert_eq!(
        ejection(&lb, 0).map(|e| e.reason),
        Some(EjectionReason::Consecutive5xx)
    );

    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(LbPolicy::RoundRobin, 3, split()),
    );
    lb.report(1, local(LocalFailure::Connect));
    lb.report(1, local(LocalFailure::Reset));
    lb.report(1, status(200));
    lb.report(1, local(LocalFailure::Connect));
    lb.report(1, local(LocalFailure::Reset));
    assert!(!ejected(&lb, 1), "the response reset the count");
    lb.report(1, local(LocalFailure::Timeout));
    let e = ejection(&lb, 1).expect("3 local failures in a row");
    assert_eq!(
        (e.reason, e.failures),
        (EjectionReason::ConsecutiveLocalOrigin, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn ejection_survives_a_table_swap() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, outlier(|_| {})),
    );
    report_n(&lb, 2, 5, status(503));
    // A new table with the same endpoints (a new cluster Arc).
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::LeastRequest, 3, outlier(|_| {})),
    );
    assert!(ejected(&lb, 2));
    assert_eq!(picked(&lb, 100)[2], 0);
}

#[tokio::test(start_paused = true)]
async fn without_outlier_detection_reports_eject_nothing() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, ClusterPolicy::default()),
    );
    report_n(&lb, 0, 50, status(503));
    assert_eq!(
        lb.verdicts(0).unwrap().outlier,
        OutlierVerdict::NotConfigured
    );
    assert_eq!(picked(&lb, 300), [100, 100, 100]);
    assert!(lb.verdicts(3).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_gateway_error_reaching_both_thresholds_is_considered_for_both() {
    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(
            LbPolicy::RoundRobin,
            3,
            outlier(|o| o.consecutive_gateway = Some(5)),
        ),
    );
    report_n(&lb, 0, 5, status(503));
    // Both counters reach 5 at once; both ejections are refused (one of
    // three is out already), and both counters start over.
    report_n(&lb, 1, 5, status(502));
    assert!(!ejected(&lb, 1));
    advance(Duration::from_secs(30)).await;
    report_n(&lb, 1, 4, status(500));
    assert!(!ejected(&lb, 1));
    lb.report(1, status(500));
    assert_eq!(
        ejection(&lb, 1).map(|e| e.reason),
        Some(EjectionReason::Consecutive5xx)
    );
}
