//! Locality tiers: grouping by the proxy's locality, failover pairs and
//! labels, and traffic spilling to the next tier as a tier loses health.

use anymesh_core::routes::{ClusterPolicy, LocalityDistribute, LocalityLb, LocalityMode};
use tokio::time::advance;

use super::outlier::{outlier, picked, report_n, status};
use super::*;
use crate::balance::locality::{group, Local};

fn at(region: &str, zone: &str, subzone: &str) -> Locality {
    let part = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Locality {
        region: part(region),
        zone: part(zone),
        subzone: part(subzone),
    }
}

/// An endpoint `id` at `locality` with `labels`.
fn ep_at(id: &str, locality: Locality, labels: &[(&str, &str)]) -> ClusterEndpoint {
    let mut e = ep(id, 1);
    let mut endpoint = (*e.endpoint).clone();
    endpoint.locality = locality;
    endpoint.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.endpoint = Arc::new(endpoint);
    e
}

/// Two endpoints in each of r1/z1/s1, r1/z1/s2, r1/z2, r2/z3, r3/z4.
fn spread() -> Vec<ClusterEndpoint> {
    let places = [
        at("r1", "z1", "s1"),
        at("r1", "z1", "s2"),
        at("r1", "z2", ""),
        at("r2", "z3", ""),
        at("r3", "z4", ""),
    ];
    places
        .iter()
        .enumerate()
        .flat_map(|(p, l)| (0..2).map(move |k| ep_at(&format!("e{}", 2 * p + k), l.clone(), &[])))
        .collect()
}

fn with_mode(mode: LocalityMode) -> ClusterPolicy {
    ClusterPolicy {
        locality: LocalityLb {
            enabled: true,
            mode,
        },
        ..outlier(|o| o.max_ejection_percent = 100)
    }
}

/// The groups of `c` for a proxy at `me`.
fn tiers(c: &Cluster, me: &Local) -> Vec<Vec<u32>> {
    group(c, me).groups
}

fn local(l: Locality) -> Local {
    Local {
        locality: l,
        labels: Labels::new(),
    }
}

#[test]
fn tiers_by_locality_failover_and_labels() {
    let me = local(at("r1", "z1", "s1"));
    let c = cluster_with(
        "c",
        LbPolicy::RoundRobin,
        spread(),
        with_mode(LocalityMode::Tiers),
    );
    assert_eq!(
        tiers(&c, &me),
        [vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7, 8, 9]]
    );

    let failover = LocalityMode::Failover(vec![("r1".into(), "r3".into())]);
    let c = cluster_with("c", LbPolicy::RoundRobin, spread(), with_mode(failover));
    assert_eq!(
        tiers(&c, &me),
        [vec![0, 1], vec![2, 3], vec![4, 5], vec![8, 9], vec![6, 7]],
        "the failover region before the others"
    );

    // Without outlier detection, disabled, or with no known locality: one tier.
    let plain = ClusterPolicy {
        outlier: None,
        ..with_mode(LocalityMode::Tiers)
    };
    let c = cluster_with("c", LbPolicy::RoundRobin, spread(), plain);
    assert_eq!(tiers(&c, &me).len(), 1);
    let mut off = with_mode(LocalityMode::Tiers);
    off.locality.enabled = false;
    let c = cluster_with("c", LbPolicy::RoundRobin, spread(), off);
    assert_eq!(tiers(&c, &me).len(), 1);
    let c = cluster_with(
        "c",
        LbPolicy::RoundRobin,
        spread(),
        with_mode(LocalityMode::Tiers),
    );
    assert_eq!(tiers(&c, &Local::default()).len(), 1);

    // failoverPriority: matching all labels first, then the first N−1, ...
    let eps = vec![
        ep_at("a", at("r1", "z1", ""), &[("net", "n1")]),
        ep_at("b", at("r1", "z2", ""), &[("net", "n1")]),
        ep_at("c", at("r2", "z1", ""), &[("net", "n1")]),
        ep_at("d", at("r1", "z1", ""), &[("net", "n2")]),
    ];
    let labels = LocalityMode::FailoverPriority(vec![
        "net".into(),
        "topology.kubernetes.io/region".into(),
        "topology.kubernetes.io/zone".into(),
    ]);
    let c = cluster_with("c", LbPolicy::RoundRobin, eps, with_mode(labels));
    let me = Local {
        locality: at("r1", "z1", ""),
        labels: [("net".to_string(), "n1".to_string())].into(),
    };
    assert_eq!(tiers(&c, &me), [vec![0], vec![1], vec![2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn traffic_stays_local_and_spills_as_the_local_tier_fails() {
    let mut balancers = Balancers::new();
    balancers.set_local_locality(at("r1", "z1", "s1"));
    let make = || {
        let eps: Vec<_> = (0..4)
            .map(|i| ep_at(&format!("l{i}"), at("r1", "z1", "s1"), &[]))
            .chain((0..4).map(|i| ep_at(&format!("r{i}"), at("r2", "z2", ""), &[])))
            .collect();
        cluster_with("c", LbPolicy::Random, eps, with_mode(LocalityMode::Tiers))
    };
    let lb = lb_for(&mut balancers, make());
    let share = |lb: &ClusterLb| {
        let seen = picked(lb, 20_000);
        seen[..4].iter().sum::<usize>()
    };
    assert_eq!(share(&lb), 20_000, "all local while healthy");

    // One of four local down: 1.4 × 75 % ≥ 100 %, still all local.
    report_n(&lb, 0, 5, status(503));
    assert_eq!(share(&lb), 20_000);
    // Two down: 70 % local, 30 % spills.
    report_n(&lb, 1, 5, status(503));
    assert_binomial(share(&lb), 20_000, 0.7, "local share at 50 % healthy");
    // All local down: everything remote.
    report_n(&lb, 2, 5, status(503));
    report_n(&lb, 3, 5, status(503));
    assert_eq!(share(&lb), 0);

    // Back: local again. The proxy moving re-tiers at the next update.
    advance(Duration::from_secs(30)).await;
    assert_eq!(share(&lb), 20_000);
    balancers.set_local_locality(at("r2", "z2", ""));
    let lb = lb_for(&mut balancers, make());
    assert_eq!(share(&lb), 0, "the other region is local now");
}

#[tokio::test(start_paused = true)]
async fn distribute_shares_traffic_by_locality_weight_and_health() {
    let mut balancers = Balancers::new();
    balancers.set_local_locality(at("r1", "z1", "s1"));
    let eps = vec![
        ep_at("a0", at("r1", "z1", ""), &[]),
        ep_at("a1", at("r1", "z1", ""), &[]),
        ep_at("b0", at("r1", "z2", ""), &[]),
        ep_at("b1", at("r1", "z2", ""), &[]),
        ep_at("c0", at("r2", "z3", ""), &[]),
    ];
    let rules = vec![
        LocalityDistribute {
            from: "r9/*".into(),
            to: vec![("r2/*".into(), 100)],
        },
        LocalityDistribute {
            from: "r1/z1/*".into(),
            to: vec![("r1/z1/*".into(), 80), ("r1/z2".into(), 20)],
        },
    ];
    let lb = lb_for(
        &mut balancers,
        cluster_with(
            "c",
            LbPolicy::RoundRobin,
            eps,
            with_mode(LocalityMode::Distribute(rules)),
        ),
    );
    let n = 20_000;
    let seen = picked(&lb, n);
    assert_eq!(seen[4], 0, "r2 is not in the rule: {seen:?}");
    assert_binomial(seen[0] + seen[1], n, 0.8, "r1/z1");
    // Half of r1/z1 ejected: weight 80 × 70 % against 20 × 100 % → 74 %.
    report_n(&lb, 0, 5, status(503));
    let seen = picked(&lb, n);
    assert_eq!(seen[0], 0);
    assert_binomial(seen[1], n, 0.74, "r1/z1 at half health");
}

/// `retryRemoteLocalities`: a retry goes to the best tier none of the
/// tried endpoints is in; without a remote tier, as a plain retry pick.
#[tokio::test(start_paused = true)]
async fn retries_to_remote_localities_leave_the_tiers_tried() {
    let mut balancers = Balancers::new();
    balancers.set_local_locality(at("r1", "z1", "s1"));
    let eps: Vec<_> = (0..2)
        .map(|i| ep_at(&format!("l{i}"), at("r1", "z1", "s1"), &[]))
        .chain((0..2).map(|i| ep_at(&format!("z{i}"), at("r1", "z2", ""), &[])))
        .chain((0..2).map(|i| ep_at(&format!("r{i}"), at("r2", "z3", ""), &[])))
        .collect();
    let lb = lb_for(
        &mut balancers,
        cluster_with(
            "c",
            LbPolicy::RoundRobin,
            eps,
            with_mode(LocalityMode::Tiers),
        ),
    );
    let headers = HeaderMap::new();
    let ctx = PickContext::new(&headers);
    for _ in 0..100 {
        let first = lb.pick(&ctx).expect("a pick").index;
        assert!(first < 2, "a first attempt stays local while it is healthy");
        let second = lb.pick_remote(&ctx, &[first]).expect("a retry pick").index;
        assert!((2..4).contains(&second), "the next tier: {second}");
        let third = lb
            .pick_remote(&ctx, &[first, second])
            .expect("a retry pick")
            .index;
        assert!((4..6).contains(&third), "the tier after: {third}");
        // Every tier tried: a plain retry pick, in the tier drawn (the
        // healthy local one), every endpoint of which was tried.
        let fourth = lb
            .pick_remote(&ctx, &[0, 1, second, third])
            .expect("a retry pick")
            .index;
        assert!(fourth < 2, "back to the local tier: {fourth}");
    }
}
