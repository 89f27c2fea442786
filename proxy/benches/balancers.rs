//! `ClusterLb::pick` per policy, with 3 and 100 endpoints, single-threaded.
//! Each iteration picks and drops the in-flight guard, as a request would.
//! The `*_outlier` cases have outlier detection configured and every
//! endpoint healthy: the health fast path (two loads) on top of the policy.
//!
//! `cargo bench -p anymesh-proxy --bench balancers`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anymesh_core::routes::{
    Cluster, ClusterEndpoint, ClusterPolicy, HashKey, HashPolicy, LbPolicy, OutlierDetection,
    RouteTable,
};
use anymesh_core::{Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol};
use anymesh_core::{Provenance, ServicePort, SourceId};
use anymesh_proxy::balance::{Balancers, PickContext};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

const USER: HeaderName = HeaderName::from_static("x-user");

fn endpoint(i: usize, weight: u32) -> ClusterEndpoint {
    let endpoint = Endpoint {
        service: Hostname::new("svc").expect("valid hostname"),
        address: format!("10.0.{}.{}", i / 256, i % 256),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 8080,
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("bench"),
            native_id: format!("e{i}"),
            raw_labels: Labels::new(),
        },
    };
    ClusterEndpoint {
        tls: None,
        key: endpoint.key(),
        authority: endpoint.authority(8080),
        weight,
        endpoint: Arc::new(endpoint),
    }
}

fn cluster(lb: LbPolicy, n: usize, weighted: bool) -> Arc<Cluster> {
    cluster_with(lb, n, weighted, ClusterPolicy::default())
}

fn cluster_with(lb: LbPolicy, n: usize, weighted: bool, policy: ClusterPolicy) -> Arc<Cluster> {
    let weight = |i: usize| if weighted { 1 + (i % 5) as u32 } else { 1 };
    Arc::new(Cluster {
        name: "bench".into(),
        index: 0,
        service: Hostname::new("svc").expect("valid hostname"),
        subset: None,
        selector: Labels::new(),
        port: ServicePort {
            name: "http".into(),
            number: 80,
            protocol: Protocol::Http,
        },
        lb,
        policy,
        endpoints: (0..n).map(|i| endpoint(i, weight(i))).collect(),
        excluded: vec![],
    })
}

fn hash(key: HashKey) -> LbPolicy {
    LbPolicy::ConsistentHash(HashPolicy {
        key,
        table_size: None,
    })
}

fn picks(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(USER, HeaderValue::from_static("user-12345"));
    let ctx = PickContext {
        headers: &headers,
        query: Some("a=1&session=abc123"),
        source_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))),
    };
    let empty = HeaderMap::new();
    let keyless = PickContext::new(&empty);
    let plain = ClusterPolicy::default;
    let outlier = || ClusterPolicy {
        outlier: Some(OutlierDetection::default()),
        ..ClusterPolicy::default()
    };
    type Case<'c> = (
        &'static str,
        LbPolicy,
        bool,
        &'c PickContext<'c>,
        fn() -> ClusterPolicy,
    );
    let cases: [Case<'_>; 13] = [
        ("round_robin", LbPolicy::RoundRobin, false, &ctx, plain),
        (
            "round_robin_weighted",
            LbPolicy::RoundRobin,
            true,
            &ctx,
            plain,
        ),
        ("random_weighted", LbPolicy::Random, true, &ctx, plain),
        ("least_request", LbPolicy::LeastRequest, false, &ctx, plain),
        (
            "least_request_weighted",
            LbPolicy::LeastRequest,
            true,
            &ctx,
            plain,
        ),
        ("peak_ewma", LbPolicy::PeakEwma, false, &ctx, plain),
        (
            "hash_header",
            hash(HashKey::Header(USER)),
            false,
            &ctx,
            plain,
        ),
        (
            "hash_source_ip",
            hash(HashKey::SourceIp),
            false,
            &ctx,
            plain,
        ),
        (
            "hash_missing_key",
            hash(HashKey::Header(USER)),
            false,
            &keyless,
            plain,
        ),
        (
            "round_robin_outlier",
            LbPolicy::RoundRobin,
            false,
            &ctx,
            outlier,
        ),
        (
            "least_request_outlier",
            LbPolicy::LeastRequest,
            false,
            &ctx,
            outlier,
        ),
        (
            "peak_ewma_outlier",
            LbPolicy::PeakEwma,
            false,
            &ctx,
            outlier,
        ),
        (
            "hash_header_outlier",
            hash(HashKey::Header(USER)),
            false,
            &ctx,
            outlier,
        ),
    ];
    let mut group = c.benchmark_group("pick");
    for (name, lb, weighted, ctx, policy) in cases {
        for n in [3, 100] {
            let table = RouteTable {
                clusters: vec![cluster_with(lb.clone(), n, weighted, policy())],
                ..RouteTable::default()
            };
            let lbs = Balancers::new().update(&table);
            let lb = &lbs[0];
            group.bench_with_input(BenchmarkId::new(name, n), ctx, |b, ctx| {
                b.iter(|| black_box(lb.pick(black_box(ctx))).map(|p| p.endpoint.weight))
            });
        }
    }
    group.finish();
}

/// Table-swap cost of a consistent-hash cluster (a Maglev build), for scale.
fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("update_maglev");
    for n in [3, 100] {
        let table = RouteTable {
            clusters: vec![cluster(hash(HashKey::SourceIp), n, true)],
            ..RouteTable::default()
        };
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| Balancers::new().update(black_box(&table)))
        });
    }
    group.finish();
}

criterion_group!(benches, picks, maglev_build);
criterion_main!(benches);
