use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{
    Cluster, ClusterPolicy, ConnectionPool, LbPolicy, OutlierDetection, RetryBudget, RouteTable,
};
use anymesh_core::{Hostname, Labels, Protocol, ServicePort};
use futures_util::FutureExt;

use super::*;

const DEFAULT: RetryBudget = RetryBudget::Off;

fn cluster(name: &str, protocol: Protocol, policy: ClusterPolicy) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: name.into(),
        index: 0,
        service: Hostname::new("svc").unwrap(),
        subset: None,
        selector: Labels::new(),
        port: ServicePort {
            name: "http".into(),
            number: 80,
            protocol,
        },
        lb: LbPolicy::RoundRobin,
        policy,
        endpoints: vec![],
        excluded: vec![],
    })
}

fn table(clusters: Vec<Arc<Cluster>>) -> RouteTable {
    RouteTable {
        clusters,
        ..RouteTable::default()
    }
}

fn one_connection() -> ClusterPolicy {
    ClusterPolicy {
        connection_pool: ConnectionPool {
            max_connections: Some(1),
            ..ConnectionPool::default()
        },
        ..ClusterPolicy::default()
    }
}

fn admit_now(runtime: &ClusterRuntime) -> Option<Result<RequestTicket, Overflow>> {
    runtime.admit(tokio::time::Instant::now()).now_or_never()
}

#[test]
fn runtimes_follow_the_tables_order() {
    let mut runtimes = ClusterRuntimes::new();
    let (a, b) = (
        cluster("a", Protocol::Http, one_connection()),
        cluster("b", Protocol::Http, ClusterPolicy::default()),
    );
    let got = runtimes.update(&table(vec![a.clone(), b.clone()]), &DEFAULT);
    assert_eq!(got.len(), 2);
    assert!(!got[0].limits.is_unlimited());
    assert!(got[1].limits.is_unlimited());
    let swapped = runtimes.update(&table(vec![b, a]), &DEFAULT);
    assert!(Arc::ptr_eq(&swapped[0], &got[1]));
    assert!(Arc::ptr_eq(&swapped[1], &got[0]));
}

#[test]
fn an_unchanged_cluster_keeps_its_counters_and_requests_in_flight() {
    let mut runtimes = ClusterRuntimes::new();
    let first = runtimes.update(
        &table(vec![cluster("a", Protocol::Http, one_connection())]),
        &DEFAULT,
    );
    let held = admit_now(&first[0]).expect("free").expect("admitted");
    assert!(first[0].try_retry().is_ok());

    // A new table with a new `Cluster` value: endpoints, timeouts and
    // outlier detection may change without touching the runtime.
    let mut policy = one_connection();
    policy.outlier = Some(OutlierDetection::default());
    policy.connection_pool.connect_timeout = Some(Duration::from_secs(1));
    let second = runtimes.update(&table(vec![cluster("a", Protocol::Http, policy)]), &DEFAULT);
    assert!(Arc::ptr_eq(&first[0], &second[0]));
    assert_eq!(second[0].stats.retries(), 1);
    // The request admitted under the old table still holds the connection.
    assert!(
        admit_now(&second[0]).is_none(),
        "waits for the one connection"
    );
    drop(held);
    assert!(admit_now(&second[0]).expect("free again").is_ok());
}

#[test]
fn a_changed_cluster_is_rebuilt_and_a_gone_one_forgotten() {
    let mut runtimes = ClusterRuntimes::new();
    let base = runtimes.update(
        &table(vec![cluster("a", Protocol::Http, one_connection())]),
        &DEFAULT,
    );
    let _ = base[0].try_retry();

    let mut bigger = one_connection();
    bigger.connection_pool.max_connections = Some(2);
    let changes = [
        cluster("a", Protocol::Http, bigger),
        cluster("a", Protocol::Http2, one_connection()),
        cluster(
            "a",
            Protocol::Http,
            ClusterPolicy {
                retry_budget: Some(RetryBudget::Concurrent {
                    percent: 20.0,
                    min_concurrency: 3,
                }),
                ..one_connection()
            },
        ),
    ];
    for changed in changes {
        let before = runtimes.update(
            &table(vec![cluster("a", Protocol::Http, one_connection())]),
            &DEFAULT,
        );
        let after = runtimes.update(&table(vec![changed.clone()]), &DEFAULT);
        assert!(!Arc::ptr_eq(&before[0], &after[0]), "{:?}", changed.policy);
        assert_eq!(after[0].stats.retries(), 0);
    }

    let a = runtimes.update(
        &table(vec![cluster("a", Protocol::Http, one_connection())]),
        &DEFAULT,
    );
    runtimes.update(
        &table(vec![cluster("b", Protocol::Http, one_connection())]),
        &DEFAULT,
    );
    let back = runtimes.update(
        &table(vec![cluster("a", Protocol::Http, one_connection())]),
        &DEFAULT,
    );
    assert!(!Arc::ptr_eq(&a[0], &back[0]), "forgotten while gone");
}

#[test]
fn a_new_default_budget_rebuilds_only_the_clusters_using_it() {
    let mut runtimes = ClusterRuntimes::new();
    let own = ClusterPolicy {
        retry_budget: Some(RetryBudget::Off),
        ..ClusterPolicy::default()
    };
    let clusters = vec![
        cluster("default", Protocol::Http, ClusterPolicy::default()),
        cluster("own", Protocol::Http, own),
    ];
    let before = runtimes.update(&table(clusters.clone()), &DEFAULT);
    let linkerd = RetryBudget::Rate {
        ratio: 0.2,
        window: Duration::from_secs(10),
        min_per_second: 10,
    };
    let after = runtimes.update(&table(clusters), &linkerd);
    assert!(!Arc::ptr_eq(&before[0], &after[0]));
    assert!(Arc::ptr_eq(&before[1], &after[1]));
}

#[test]
fn the_destination_rules_budget_replaces_the_default() {
    let mut runtimes = ClusterRuntimes::new();
    let tight = |pool: ConnectionPool| ClusterPolicy {
        connection_pool: pool,
        retry_budget: Some(RetryBudget::Concurrent {
            percent: 20.0,
            min_concurrency: 2,
        }),
        ..ClusterPolicy::default()
    };
    let clusters = vec![
        cluster("default", Protocol::Http, ClusterPolicy::default()),
        cluster("tight", Protocol::Http, tight(ConnectionPool::default())),
        // A concurrent budget overrides maxRetries (as Envoy's retry_budget).
        cluster(
            "override",
            Protocol::Http,
            tight(ConnectionPool {
                max_retries: Some(1),
                ..ConnectionPool::default()
            }),
        ),
        // A rate budget does not.
        cluster(
            "both",
            Protocol::Http,
            ClusterPolicy {
                connection_pool: ConnectionPool {
                    max_retries: Some(1),
                    ..ConnectionPool::default()
                },
                retry_budget: Some(RetryBudget::Rate {
                    ratio: 0.0,
                    window: Duration::from_secs(1),
                    min_per_second: 100,
                }),
                ..ClusterPolicy::default()
            },
        ),
    ];
    let got = runtimes.update(&table(clusters), &DEFAULT);
    // Takes retries until one is refused, and holds them.
    let take = |runtime: &ClusterRuntime| {
        std::iter::from_fn(|| runtime.try_retry().ok())
            .take(100)
            .collect::<Vec<_>>()
    };
    assert_eq!(take(&got[0]).len(), 100, "the default budget is off");
    let held = [take(&got[1]), take(&got[2]), take(&got[3])];
    assert_eq!(held.each_ref().map(Vec::len), [2, 2, 1]);
    assert_eq!(got[1].try_retry().unwrap_err(), RetryRefused::Budget);
    assert_eq!(got[2].try_retry().unwrap_err(), RetryRefused::Budget);
    assert_eq!(
        got[3].try_retry().unwrap_err(),
        RetryRefused::Overflow(Overflow::MaxRetries)
    );
    drop(held);
    assert!(got[3].try_retry().is_ok());
    assert_eq!(got[1].budget.exhausted(), 2);
    assert_eq!(got[1].stats.retries(), 2);
}

#[test]
fn admission_counts_the_request_in_the_budget_until_the_ticket_drops() {
    let mut runtimes = ClusterRuntimes::new();
    let budgeted = ClusterPolicy {
        retry_budget: Some(RetryBudget::Concurrent {
            percent: 50.0,
            min_concurrency: 0,
        }),
        ..one_connection()
    };
    let got = runtimes.update(
        &table(vec![cluster("a", Protocol::Http, budgeted)]),
        &DEFAULT,
    );
    let runtime = &got[0];
    let ticket = admit_now(runtime).unwrap().unwrap();
    // A request waiting for the connection counts as active too (Envoy).
    let mut waiting = runtime.admit(tokio::time::Instant::now());
    assert!((&mut waiting).now_or_never().is_none());
    assert_eq!(runtime.budget.active(), 2);
    let retry = runtime.try_retry().expect("50 % of 2");
    assert!(runtime.try_retry().is_err());
    drop((ticket, retry));
    let second = waiting.now_or_never().unwrap().unwrap();
    assert_eq!(runtime.budget.active(), 1);
    drop(second);
    assert_eq!(runtime.budget.active(), 0);
    runtime.stats.record_limit_exceeded();
    assert_eq!(runtime.stats.limit_exceeded(), 1);
}

/// The admission futures stay small: the forwarding layer's request
/// future carries them.
#[test]
fn admission_futures_are_small() {
    let runtime = ClusterRuntime::new(&ConnectionPool::default(), &RetryBudget::Off, false);
    let admission = runtime.admit(tokio::time::Instant::now());
    assert!(
        std::mem::size_of_val(&admission) <= 40,
        "{}",
        std::mem::size_of_val(&admission)
    );
    assert!(std::mem::size_of::<RequestTicket>() <= 16);
}
