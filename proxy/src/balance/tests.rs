use std::collections::HashMap;
use std::time::Duration;

use anymesh_core::routes::{Cluster, ClusterEndpoint, HashPolicy, LbPolicy, RouteTable};
use anymesh_core::{Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol};
use anymesh_core::{Provenance, ServicePort, SourceId};

use super::schedule::{Schedule, MAX_SCHEDULE};
use super::weights::Weights;
use super::*;

mod ewma;
mod hash;
mod health;
mod locality;
mod outlier;

/// An endpoint `id` (native id `id`, authority `id:80`).
fn ep(id: &str, weight: u32) -> ClusterEndpoint {
    let endpoint = Endpoint {
        service: Hostname::new("svc").unwrap(),
        address: id.into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 80,
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("file"),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    };
    ClusterEndpoint {
        tls: None,
        key: endpoint.key(),
        authority: endpoint.authority(80),
        weight,
        endpoint: Arc::new(endpoint),
    }
}

fn cluster(name: &str, lb: LbPolicy, endpoints: Vec<ClusterEndpoint>) -> Arc<Cluster> {
    cluster_with(name, lb, endpoints, Default::default())
}

fn cluster_with(
    name: &str,
    lb: LbPolicy,
    endpoints: Vec<ClusterEndpoint>,
    policy: anymesh_core::routes::ClusterPolicy,
) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: name.into(),
        index: 0,
        service: Hostname::new("svc").unwrap(),
        subset: None,
        selector: Labels::new(),
        port: ServicePort {
            name: "http".into(),
            number: 80,
            protocol: Protocol::Http,
        },
        lb,
        policy,
        endpoints,
        excluded: vec![],
    })
}

fn weighted(lb: LbPolicy, weights: &[(&str, u32)]) -> Arc<Cluster> {
    named("c", lb, weights)
}

fn named(name: &str, lb: LbPolicy, weights: &[(&str, u32)]) -> Arc<Cluster> {
    let endpoints = weights.iter().map(|&(id, w)| ep(id, w)).collect();
    cluster(name, lb, endpoints)
}

fn table(clusters: Vec<Arc<Cluster>>) -> RouteTable {
    RouteTable {
        clusters,
        ..RouteTable::default()
    }
}

/// Builds the balancer of a single-cluster table.
fn lb_for(balancers: &mut Balancers, c: Arc<Cluster>) -> Arc<ClusterLb> {
    balancers.update(&table(vec![c])).remove(0)
}

/// The address (= native id) of the endpoint picked for `ctx`.
fn pick_id(lb: &ClusterLb, ctx: &PickContext<'_>) -> String {
    lb.pick(ctx).unwrap().endpoint.endpoint.address.clone()
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

fn counts(lb: &ClusterLb, picks: usize) -> HashMap<String, usize> {
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let mut counts = HashMap::new();
    for _ in 0..picks {
        *counts.entry(pick_id(lb, &ctx)).or_default() += 1;
    }
    counts
}

/// Marks one more request in flight to endpoint `i`, bypassing the policy.
fn hold(lb: &ClusterLb, i: usize) -> InFlight {
    let state = lb.states[i].clone();
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    InFlight(state)
}

/// Asserts `count` of `n` draws with probability `p` is within 5 standard
/// deviations of `n·p` (a false failure has probability below 6e-7).
fn assert_binomial(count: usize, n: usize, p: f64, what: &str) {
    let (n, count) = (n as f64, count as f64);
    let sigma = (n * p * (1.0 - p)).sqrt();
    let bound = 5.0 * sigma;
    assert!(
        (count - n * p).abs() <= bound,
        "{what}: {count} of {n}, expected {} ± {bound:.0}",
        n * p
    );
}

#[test]
fn empty_cluster_picks_nothing_and_single_endpoint_is_always_picked() {
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let hash = LbPolicy::ConsistentHash(HashPolicy {
        key: HashKey::SourceIp,
        table_size: None,
    });
    let policies = [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest,
        hash,
    ];
    let mut balancers = Balancers::new();
    for lb in policies {
        let empty = lb_for(&mut balancers, cluster("c", lb.clone(), vec![]));
        assert!(empty.pick(&ctx).is_none(), "{lb:?}");
        let single = lb_for(&mut balancers, weighted(lb.clone(), &[("a", 5)]));
        for _ in 0..10 {
            assert_eq!(pick_id(&single, &ctx), "a", "{lb:?}");
        }
    }
}

#[test]
fn weighted_round_robin_is_exact_and_interleaved() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::RoundRobin, &[("a", 3), ("b", 1)]),
    );
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let seq: Vec<String> = (0..400).map(|_| pick_id(&lb, &ctx)).collect();
    assert_eq!(seq[..4], ["a", "a", "b", "a"]);
    assert_eq!(seq.iter().filter(|s| *s == "a").count(), 300);
    assert_eq!(seq.iter().filter(|s| *s == "b").count(), 100);
    let longest_a = seq.split(|s| s == "b").map(<[String]>::len).max().unwrap();
    assert!(longest_a <= 3, "{longest_a} a's in a row");

    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::RoundRobin, &[("a", 5), ("b", 3), ("c", 2)]),
    );
    let c = counts(&lb, 1000);
    assert_eq!((c["a"], c["b"], c["c"]), (500, 300, 200));
}

#[test]
fn equal_weights_cycle_in_order() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::RoundRobin, &[("a", 2), ("b", 2), ("c", 2)]),
    );
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let seq: Vec<String> = (0..6).map(|_| pick_id(&lb, &ctx)).collect();
    assert_eq!(seq, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn schedule_reduces_and_caps_weights() {
    let s = Schedule::new(&[ep("a", 6), ep("b", 2)]);
    assert_eq!(s.len(), 4, "divided by the gcd");
    let s = Schedule::new(&[ep("a", u32::MAX), ep("b", u32::MAX / 3), ep("c", 1)]);
    assert!(s.len() as u64 <= MAX_SCHEDULE + 3, "{}", s.len());
    let mut seen = [0usize; 3];
    for p in 0..s.len() {
        seen[s.at(p)] += 1;
    }
    assert_eq!(seen[2], 1, "the tiny weight keeps one slot");
    let ratio = seen[0] as f64 / seen[1] as f64;
    assert!(
        (ratio - 3.0).abs() < 0.01,
        "3:1 kept after scaling: {seen:?}"
    );

    let many: Vec<_> = (0..5000).map(|i| ep(&format!("e{i}"), 1 + i % 7)).collect();
    let s = Schedule::new(&many);
    let mut seen = vec![0usize; many.len()];
    for p in 0..s.len() {
        seen[s.at(p)] += 1;
    }
    assert!(seen.iter().all(|&n| n >= 1), "every endpoint is scheduled");
}

#[test]
fn round_robin_position_survives_an_equal_table() {
    let mut balancers = Balancers::new();
    let make = || weighted(LbPolicy::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
    let lb = lb_for(&mut balancers, make());
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    assert_eq!(pick_id(&lb, &ctx), "a");
    let lb = lb_for(&mut balancers, make());
    assert_eq!(pick_id(&lb, &ctx), "b");
    assert_eq!(pick_id(&lb, &ctx), "c");
}

#[test]
fn state_of_removed_clusters_and_endpoints_is_dropped() {
    let mut balancers = Balancers::new();
    let make = || weighted(LbPolicy::RoundRobin, &[("a", 1), ("b", 1)]);
    let other = || cluster("other", LbPolicy::Random, vec![ep("x", 1)]);
    let lbs = balancers.update(&table(vec![make(), other()]));
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    assert_eq!(pick_id(&lbs[0], &ctx), "a");
    let _held = lbs[1].pick(&ctx).unwrap().guard;
    assert_eq!(
        (balancers.clusters.len(), balancers.endpoints.len()),
        (2, 3)
    );

    balancers.update(&table(vec![other()]));
    assert_eq!(
        (balancers.clusters.len(), balancers.endpoints.len()),
        (1, 1)
    );
    balancers.update(&table(vec![]));
    assert_eq!(
        (balancers.clusters.len(), balancers.endpoints.len()),
        (0, 0)
    );

    let lbs = balancers.update(&table(vec![make(), other()]));
    assert_eq!(pick_id(&lbs[0], &ctx), "a", "position starts over");
    assert_eq!(lbs[1].in_flight(0), Some(0), "in-flight count starts over");
}

#[test]
fn random_follows_weights() {
    // 200,000 draws over weights 1:2:7: each count within 5σ of its mean
    // (σ ≈ 97, 126, 205).
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::Random, &[("a", 1), ("b", 2), ("c", 7)]),
    );
    let n = 200_000;
    let c = counts(&lb, n);
    assert_binomial(c["a"], n, 0.1, "a");
    assert_binomial(c["b"], n, 0.2, "b");
    assert_binomial(c["c"], n, 0.7, "c");

    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::Random, &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]),
    );
    let c = counts(&lb, n);
    for id in ["a", "b", "c", "d"] {
        assert_binomial(c[id], n, 0.25, id);
    }
}

#[test]
fn two_choices_are_distinct_and_weighted() {
    let n = 100_000;
    for endpoints in [
        vec![ep("a", 1), ep("b", 1), ep("c", 1)],
        vec![ep("a", 1), ep("b", 3), ep("c", 6)],
    ] {
        let w = Weights::new(&endpoints);
        let total: u32 = endpoints.iter().map(|e| e.weight).sum();
        let mut firsts = [0usize; 3];
        for _ in 0..n {
            let (a, b) = w.sample_two();
            assert_ne!(a, b);
            assert!(a < 3 && b < 3);
            firsts[a] += 1;
        }
        for (i, e) in endpoints.iter().enumerate() {
            let p = f64::from(e.weight) / f64::from(total);
            assert_binomial(firsts[i], n, p, &e.authority);
        }
    }
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::LeastRequest, &[("a", 1), ("b", 1)]),
    );
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let held = lb.pick(&ctx).unwrap();
    let busy = held.endpoint.authority.clone();
    for _ in 0..100 {
        let p = lb.pick(&ctx).unwrap();
        assert_ne!(p.endpoint.authority, busy);
    }
    let busy_index = usize::from(busy != lb.cluster().endpoints[0].authority);
    assert_eq!(lb.in_flight(busy_index), Some(1));
    assert_eq!(lb.in_flight(1 - busy_index), Some(0), "guards decrement");
    drop(held);
    assert_eq!(lb.in_flight(busy_index), Some(0));

    // Weighted: compare in_flight / weight.
    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::LeastRequest, &[("a", 3), ("b", 1)]),
    );
    let _a = [hold(&lb, 0), hold(&lb, 0)]; // a: 2/3
    assert_eq!(counts(&lb, 50)["b"], 50, "b (0/1) beats a (2/3)");
    let _b = hold(&lb, 1); // b: 1/1
    assert_eq!(counts(&lb, 50)["a"], 50, "a (2/3) beats b (1/1)");
}

#[test]
fn idle_least_request_follows_weights() {
    let mut balancers = Balancers::new();
    let lb = lb_for(
        &mut balancers,
        weighted(LbPolicy::LeastRequest, &[("a", 1), ("b", 3)]),
    );
    let n = 100_000;
    let c = counts(&lb, n);
    assert_binomial(c["a"], n, 0.25, "a");
}

#[test]
fn in_flight_counts_are_shared_and_survive_updates() {
    let v1 = || named("v1", LbPolicy::LeastRequest, &[("a", 1), ("b", 1)]);
    let all = || {
        named(
            "all",
            LbPolicy::LeastRequest,
            &[("b", 1), ("a", 1), ("c", 1)],
        )
    };
    let mut balancers = Balancers::new();
    let lbs = balancers.update(&table(vec![v1(), all()]));
    let (v1_lb, all_lb) = (&lbs[0], &lbs[1]);
    let held = [hold(v1_lb, 0), hold(v1_lb, 0)]; // two on "a"
    assert_eq!(
        all_lb.in_flight(1),
        Some(2),
        "shared with the other cluster"
    );
    let c = counts(all_lb, 100);
    assert_eq!(c.get("a"), None, "the other cluster avoids a: {c:?}");

    let lbs = balancers.update(&table(vec![all(), v1()]));
    assert_eq!(lbs[1].in_flight(0), Some(2), "survives the swap");
    assert_eq!(lbs[0].in_flight(1), Some(2));
    drop(held);
    assert_eq!(lbs[1].in_flight(0), Some(0));
    assert_eq!(lbs[0].in_flight(1), Some(0));
}

#[test]
fn unchanged_clusters_keep_their_balancer_and_shared_endpoints_their_state() {
    let mut balancers = Balancers::new();
    let web = named("web", LbPolicy::RoundRobin, &[("a", 1), ("b", 1)]);
    let other = || cluster("other", LbPolicy::Random, vec![ep("a", 1)]);
    let lbs = balancers.update(&table(vec![web.clone(), other()]));
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    assert_eq!(pick_id(&lbs[0], &ctx), "a");
    let held = lbs[1].pick(&ctx).unwrap().guard;

    // Same `Arc` in the same slot: the very same balancer, position and all.
    let again = balancers.update(&table(vec![
        web.clone(),
        cluster("other", LbPolicy::Random, vec![ep("x", 1)]),
    ]));
    assert!(Arc::ptr_eq(&lbs[0], &again[0]), "kept");
    assert!(!Arc::ptr_eq(&lbs[1], &again[1]), "rebuilt");
    assert_eq!(pick_id(&again[0], &ctx), "b");
    // `a` left `other` but is still in `web`: its in-flight count stays.
    assert_eq!(again[0].in_flight(0), Some(1));
    assert_eq!(
        (balancers.clusters.len(), balancers.endpoints.len()),
        (2, 3)
    );
    drop(held);

    // A changed `web` (a new Arc) is rebuilt and keeps its position by name.
    let web2 = named("web", LbPolicy::RoundRobin, &[("a", 1), ("b", 1)]);
    let third = balancers.update(&table(vec![web2]));
    assert!(!Arc::ptr_eq(&again[0], &third[0]));
    assert_eq!(pick_id(&third[0], &ctx), "a");
    assert_eq!(
        (balancers.clusters.len(), balancers.endpoints.len()),
        (1, 2)
    );
}

#[test]
fn endpoint_state_fills_whole_cache_lines() {
    // `Arc`'s two counts, then the state: a multiple of 128 bytes, with the
    // in-flight count on the first line next to the counts.
    let arc = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<EndpointState>();
    assert_eq!(arc % 128, 0, "{arc} bytes");
    let state = EndpointState::default();
    let offset = std::ptr::addr_of!(state.in_flight) as usize - std::ptr::addr_of!(state) as usize;
    assert!(2 * std::mem::size_of::<usize>() + offset < 128, "{offset}");
}
