//! Health-aware picks: ejected and failing endpoints skipped by every
//! policy, the panic threshold, retries avoiding tried endpoints, hash keys
//! moving off an unavailable endpoint, and the tier loads of the view.

use std::collections::HashMap;

use anymesh_core::routes::ClusterPolicy;
use http::HeaderName;
use tokio::time::advance;

use super::outlier::{endpoints, outlier, picked, report_n, status};
use super::*;
use crate::balance::health::View;

const USER: HeaderName = HeaderName::from_static("x-user");

fn policies() -> Vec<LbPolicy> {
    vec![
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest,
        LbPolicy::PeakEwma,
        LbPolicy::ConsistentHash(HashPolicy {
            key: HashKey::Header(USER),
            table_size: None,
        }),
    ]
}

/// Picks with a different `x-user` each time (spread for hash clusters).
fn picked_by_user(lb: &ClusterLb, n: usize) -> Vec<usize> {
    let mut seen = vec![0usize; lb.cluster().endpoints.len()];
    for k in 0..n {
        let mut headers = HeaderMap::new();
        headers.insert(USER, HeaderValue::from_str(&format!("user-{k}")).unwrap());
        seen[lb.pick(&PickContext::new(&headers)).unwrap().index] += 1;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn no_policy_picks_an_ejected_or_failing_endpoint_while_others_serve() {
    for lb_policy in policies() {
        let lb = lb_for(
            &mut Balancers::new(),
            endpoints(
                lb_policy.clone(),
                5,
                outlier(|o| o.max_ejection_percent = 100),
            ),
        );
        report_n(&lb, 1, 5, status(503));
        lb.endpoint_state(3)
            .unwrap()
            .set_active_health(ActiveHealth::Failing);
        let seen = picked_by_user(&lb, 2000);
        assert_eq!((seen[1], seen[3]), (0, 0), "{lb_policy:?}: {seen:?}");
        for i in [0, 2, 4] {
            assert!(seen[i] > 400, "{lb_policy:?}: {seen:?}");
        }
        // Recovered: all serve again.
        lb.endpoint_state(3)
            .unwrap()
            .set_active_health(ActiveHealth::Passing);
        advance(Duration::from_secs(30)).await;
        let seen = picked_by_user(&lb, 2000);
        assert!(seen.iter().all(|&c| c > 200), "{lb_policy:?}: {seen:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn below_min_health_percent_every_endpoint_is_used() {
    let mut balancers = Balancers::new();
    let policy = outlier(|o| {
        o.max_ejection_percent = 100;
        o.min_health_percent = 50;
    });
    let lb = lb_for(&mut balancers, endpoints(LbPolicy::RoundRobin, 4, policy));
    report_n(&lb, 0, 5, status(503));
    report_n(&lb, 1, 5, status(503));
    assert_eq!(picked(&lb, 400), [0, 0, 200, 200], "50 % healthy: no panic");
    report_n(&lb, 2, 5, status(503));
    assert_eq!(picked(&lb, 400), [100, 100, 100, 100], "25 % < 50 %: panic");
}

#[tokio::test(start_paused = true)]
async fn with_no_panic_threshold_nothing_available_means_no_pick() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        endpoints(
            LbPolicy::LeastRequest,
            2,
            outlier(|o| o.max_ejection_percent = 100),
        ),
    );
    report_n(&lb, 0, 5, status(503));
    report_n(&lb, 1, 5, status(503));
    let headers = no_headers();
    assert!(
        lb.pick(&PickContext::new(&headers)).is_none(),
        "Envoy: no healthy upstream"
    );
    advance(Duration::from_secs(30)).await;
    assert!(
        lb.pick(&PickContext::new(&headers)).is_some(),
        "back after the ejection"
    );

    // No outlier detection: Envoy's default threshold (50 %) for endpoints
    // failing active checks.
    let lb = lb_for(
        &mut balancers,
        endpoints(LbPolicy::RoundRobin, 3, ClusterPolicy::default()),
    );
    lb.endpoint_state(0)
        .unwrap()
        .set_active_health(ActiveHealth::Failing);
    assert_eq!(picked(&lb, 300), [0, 150, 150]);
    lb.endpoint_state(1)
        .unwrap()
        .set_active_health(ActiveHealth::Failing);
    assert_eq!(picked(&lb, 300), [100, 100, 100], "33 % < 50 %: panic");
    for i in 0..3 {
        lb.endpoint_state(i)
            .unwrap()
            .set_active_health(ActiveHealth::Unchecked);
    }
}

#[tokio::test(start_paused = true)]
async fn retries_avoid_tried_endpoints() {
    for lb_policy in policies() {
        let lb = lb_for(
            &mut Balancers::new(),
            endpoints(lb_policy.clone(), 3, outlier(|_| {})),
        );
        let mut headers = HeaderMap::new();
        headers.insert(USER, HeaderValue::from_static("alice"));
        let ctx = PickContext::new(&headers);
        for _ in 0..50 {
            let first = lb.pick(&ctx).unwrap().index;
            let second = lb.pick_excluding(&ctx, &[first]).unwrap().index;
            assert_ne!(first, second, "{lb_policy:?}");
            let third = lb.pick_excluding(&ctx, &[first, second]).unwrap().index;
            assert_eq!(third, 3 - first - second, "{lb_policy:?}");
            // All tried: any endpoint still.
            assert!(lb.pick_excluding(&ctx, &[0, 1, 2]).is_some());
        }
        // Tried and ejected both avoided.
        report_n(&lb, 2, 5, status(503));
        for _ in 0..50 {
            assert_eq!(
                lb.pick_excluding(&ctx, &[0]).unwrap().index,
                1,
                "{lb_policy:?}"
            );
            // Only the ejected one is untried: a tried available one.
            let i = lb.pick_excluding(&ctx, &[0, 1]).unwrap().index;
            assert_ne!(i, 2, "{lb_policy:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn hash_keys_of_an_unavailable_endpoint_move_and_come_back() {
    let hash = LbPolicy::ConsistentHash(HashPolicy {
        key: HashKey::Header(USER),
        table_size: None,
    });
    let mut balancers = Balancers::new();
    let lb = lb_for(&mut balancers, endpoints(hash, 5, outlier(|_| {})));
    let owner = |key: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(USER, HeaderValue::from_str(key).unwrap());
        lb.pick(&PickContext::new(&headers)).unwrap().index
    };
    let keys: Vec<String> = (0..2000).map(|k| format!("key-{k}")).collect();
    let before: HashMap<&str, usize> = keys.iter().map(|k| (k.as_str(), owner(k))).collect();
    let victims = before.values().filter(|&&o| o == 3).count();
    assert!(victims > 200, "{victims} keys on endpoint 3");

    report_n(&lb, 3, 5, status(503));
    let mut moved_to = vec![0usize; 5];
    for k in &keys {
        let now = owner(k);
        if before[k.as_str()] == 3 {
            assert_ne!(now, 3);
            moved_to[now] += 1;
            assert_eq!(owner(k), now, "deterministic");
        } else {
            assert_eq!(now, before[k.as_str()], "other keys stay");
        }
    }
    assert!(
        moved_to.iter().enumerate().all(|(i, &c)| i == 3 || c > 0),
        "spread over the others: {moved_to:?}"
    );

    advance(Duration::from_secs(30)).await;
    for k in &keys {
        assert_eq!(owner(k), before[k.as_str()], "back after the ejection");
    }
}

#[test]
fn tier_loads_follow_envoy_priority_levels() {
    let loads = |healthy: &[usize], total: &[usize], threshold| {
        let v = View::new(1, None, healthy, total, threshold, None);
        (v.none, v.loads().to_vec(), v.panic.to_vec())
    };
    // All healthy: the first tier takes everything.
    assert_eq!(
        loads(&[4, 4], &[4, 4], 0),
        (false, vec![100, 0], vec![false; 2])
    );
    // 3 of 4 healthy: 1.4 × 75 % = 105 % → still everything.
    assert_eq!(loads(&[3, 4], &[4, 4], 0).1, [100, 0]);
    // 2 of 4: 70 % stays, 30 % spills.
    assert_eq!(loads(&[2, 4], &[4, 4], 0).1, [70, 30]);
    // Envoy's documented example: P0 at 20 % healthy → 28 %; P1 takes 72.
    assert_eq!(loads(&[1, 5], &[5, 5], 0).1, [28, 72]);
    // Three tiers, the second half down.
    assert_eq!(loads(&[1, 1, 10], &[5, 2, 10], 0).1, [28, 70, 2]);
    // Nothing anywhere: no pick without panic; total panic by sizes with.
    assert!(loads(&[0, 0], &[4, 4], 0).0);
    assert_eq!(
        loads(&[0, 0], &[2, 6], 50),
        (false, vec![25, 75], vec![true, true])
    );
    // Under 100 in total: a tier under the threshold is in panic (all
    // of them: load by sizes).
    assert_eq!(
        loads(&[1, 1], &[4, 10], 30),
        (false, vec![29, 71], vec![true, true])
    );
    // Health 70 and 14 of 84: 83 + 16, the rounding to the first.
    assert_eq!(
        loads(&[2, 1], &[4, 10], 30),
        (false, vec![84, 16], vec![false, true])
    );
}

#[test]
fn concurrent_picks_see_an_ejection_once_it_is_made() {
    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(LbPolicy::LeastRequest, 4, outlier(|_| {})),
    );
    let ejected = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let headers = no_headers();
                let ctx = PickContext::new(&headers);
                for _ in 0..20_000 {
                    let done = ejected.load(Ordering::Acquire);
                    let p = lb.pick(&ctx).unwrap();
                    assert!(!(done && p.index == 1), "picked after the ejection");
                }
            });
        }
        for _ in 0..5 {
            lb.report(1, status(503));
        }
        ejected.store(true, Ordering::Release);
    });
    assert!((0..4).all(|i| lb.in_flight(i) == Some(0)));
}

proptest::proptest! {
    /// Loads always sum to 100 (unless nothing may be picked: nothing is
    /// available without panic, or no locality with weight has anything), a tier with
    /// nothing available gets load only in panic, and a fully available
    /// first tier takes everything.
    #[test]
    fn tier_loads_are_well_formed(
        tiers in proptest::collection::vec((0usize..20, 1usize..20), 1..6),
        threshold in 0u32..=100,
        weighted in proptest::bool::ANY,
        weights in proptest::collection::vec(0u32..100, 6),
    ) {
        let total: Vec<usize> = tiers.iter().map(|&(_, t)| t).collect();
        let healthy: Vec<usize> = tiers.iter().map(|&(h, t)| h.min(t)).collect();
        let weights = weighted.then_some(&weights[..tiers.len()]);
        let v = View::new(1, None, &healthy, &total, threshold, weights);
        let sum: usize = v.loads().iter().map(|&l| usize::from(l)).sum();
        let nothing = healthy.iter().all(|&h| h == 0);
        if v.none {
            // Weighted: no locality with weight has anything to give.
            proptest::prop_assert!(weights.is_some() || (nothing && threshold == 0));
        } else {
            proptest::prop_assert_eq!(sum, 100);
        }
        for (t, (&h, &load)) in healthy.iter().zip(v.loads()).enumerate() {
            if h == 0 && load > 0 {
                proptest::prop_assert!(v.panic[t], "tier {} loaded with nothing healthy", t);
            }
        }
        if weights.is_none() && healthy[0] == total[0] {
            proptest::prop_assert_eq!(v.loads()[0], 100);
        }
    }
}

/// Found by `tier_loads_are_well_formed`: the only locality with weight has
/// nothing available and the one with something has weight 0, without
/// panic: no pick (Envoy chooses no locality), not a pick from the
/// weightless one.
#[test]
fn weighted_localities_with_nothing_to_give_pick_nothing() {
    let v = View::new(1, None, &[1, 0], &[1, 1], 0, Some(&[0, 1]));
    assert!(v.none);
    assert_eq!(v.loads(), [0, 0]);
    // With something available where the weight is, it takes everything.
    let v = View::new(1, None, &[1, 1], &[1, 1], 0, Some(&[0, 1]));
    assert!(!v.none);
    assert_eq!(v.loads(), [0, 100]);
}
