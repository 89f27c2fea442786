//! Resilience policies in the compiled table: retries, faults and mirrors
//! per route; connection pool, outlier detection, retry budget and locality
//! per cluster, merged per subset and port; PEAK_EWMA.

use std::time::Duration;

use super::*;
use crate::routes::policy::{
    AbortStatus, ClusterPolicy, ConnectionPool, FaultAbort, FaultDelay, FaultPolicy,
    LocalityDistribute, LocalityLb, LocalityMode, MirrorCompare, OutlierDetection, RetryBudget,
    RetryCondition, RetryPolicy, TcpKeepalive, DEFAULT_RETRY_BACKOFF,
};
use crate::routes::table::Route;

/// The routes of `authority`'s virtual host.
fn routes<'t>(table: &'t RouteTable, authority: &str) -> &'t [Route] {
    &table
        .virtual_host(authority)
        .unwrap_or_else(|| panic!("no virtual host {authority}"))
        .routes
}

/// A VirtualService for `reviews` with the given `http:` items, and [`DR`].
fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n\
         spec:\n  hosts: [reviews]\n  http:\n{http}---\n{DR}"
    )
}

#[test]
fn retries_compile_with_istio_defaults() {
    let yaml = vs(r"
  - name: explicit
    match: [{uri: {prefix: /a}}]
    retries:
      attempts: 4
      perTryTimeout: 250ms
      retryOn: 'gateway-error, 503,504,deadline-exceeded'
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: false
      backoff: 50ms
    route: [{destination: {host: reviews, subset: v1}}]
  - name: attempts-only
    match: [{uri: {prefix: /b}}]
    timeout: 3s
    retries: {attempts: 1}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: off
    match: [{uri: {prefix: /c}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: hashed
    match: [{uri: {prefix: /d}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: none
    route: [{destination: {host: reviews, subset: v1}}]
"
    .trim_start_matches('\n'));
    let (t, diags) = compile(&bookinfo(), &config(&yaml), 1);
    assert!(diags.is_empty(), "{diags:?}");
    let r = routes(&t, "reviews");

    let explicit = &r[0].retry;
    assert_eq!(explicit.attempts, 4);
    assert_eq!(explicit.per_try_timeout, Some(Duration::from_millis(250)));
    let names: Vec<&str> = explicit
        .retry_on
        .conditions
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(
        names,
        [
            "gateway-error",
            "retriable-status-codes",
            "deadline-exceeded"
        ],
        "bare codes imply retriable-status-codes"
    );
    assert_eq!(explicit.retry_on.statuses, [503, 504]);
    assert!(explicit.retry_remote_localities);
    assert!(!explicit.ignore_previous_hosts);
    assert_eq!(explicit.backoff, Duration::from_millis(50));
    assert!(explicit.explicit);

    // attempts without retryOn: Istio's default conditions, not explicit;
    // no per-try timeout, so the route timeout bounds each attempt.
    let attempts_only = &r[1].retry;
    assert_eq!(
        attempts_only,
        &RetryPolicy {
            attempts: 1,
            ..RetryPolicy::istio_default()
        }
    );
    assert_eq!(attempts_only.per_try_timeout, None);
    assert_eq!(r[1].timeout, Some(Duration::from_secs(3)));
    assert!(!attempts_only.explicit);
    assert_eq!(attempts_only.backoff, DEFAULT_RETRY_BACKOFF);

    assert_eq!(r[2].retry.attempts, 0, "attempts 0 disables retries");

    // One destination whose cluster hashes: retries stay on the same host.
    let hashed = &r[3].retry;
    assert!(!hashed.ignore_previous_hosts);
    assert_eq!(hashed.attempts, 2);

    let default = &r[4].retry;
    assert_eq!(default, &RetryPolicy::istio_default());
    assert!(default.ignore_previous_hosts);
    assert!(default
        .retry_on
        .conditions
        .contains(RetryCondition::ConnectFailure));
    assert!(!default.retry_on.conditions.contains(RetryCondition::FiveXx));

    // Default routes carry Istio's default policy too.
    assert_eq!(routes(&t, "ratings")[0].retry, RetryPolicy::istio_default());
}

#[test]
fn faults_compile_and_a_missing_percentage_injects_nothing() {
    let yaml = vs(r"
  - match: [{uri: {prefix: /a}}]
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 12.5}}
      abort: {httpStatus: 503, percentage: {value: 100}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /b}}]
    fault:
      delay: {fixedDelay: 1s, percent: 30}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.5}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /c}}]
    fault:
      delay: {fixedDelay: 1s}
      abort: {grpcStatus: '4', percentage: {value: 0}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /d}}]
    fault:
      abort: {httpStatus: 418}
      delay: {fixedDelay: 1s, percentage: {value: 1}}
    directResponse: {status: 200}
  - route: [{destination: {host: reviews, subset: v1}}]
"
    .trim_start_matches('\n'));
    let (set, load_diags) = load_str("routes.yaml", &yaml);
    assert_eq!(
        load_diags.len(),
        2,
        "two parts without percentage warn: {load_diags:?}"
    );
    let (t, diags) = compile(&bookinfo(), &set, 1);
    assert!(diags.is_empty(), "{diags:?}");
    let r = routes(&t, "reviews");
    assert_eq!(
        r[0].fault,
        Some(FaultPolicy {
            delay: Some(FaultDelay {
                fixed: Duration::from_secs(2),
                percentage: 12.5
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::Http(503),
                percentage: 100.0
            }),
        })
    );
    assert_eq!(
        r[1].fault,
        Some(FaultPolicy {
            delay: Some(FaultDelay {
                fixed: Duration::from_secs(1),
                percentage: 30.0
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::Grpc(14),
                percentage: 0.5
            }),
        })
    );
    assert_eq!(r[2].fault, None, "no percentage, and 0%: nothing injected");
    assert_eq!(
        r[3].fault,
        Some(FaultPolicy {
            delay: Some(FaultDelay {
                fixed: Duration::from_secs(1),
                percentage: 1.0
            }),
            abort: None,
        }),
        "faults apply to direct responses too"
    );
    assert_eq!(r[4].fault, None);
}

#[test]
fn mirrors_compile_to_clusters_with_percentages_and_comparison() {
    let yaml = vs(r"
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrors:
    - destination: {host: ratings}
      percentage: {value: 5}
    - destination: {host: reviews, subset: v2, port: {number: 9090}}
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: ratings}
    mirrorPercentage: {value: 0}
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: ratings}
    mirrorPercent: 40
  - route: [{destination: {host: reviews, subset: v1}}]
"
    .trim_start_matches('\n'))
    .replacen(
        "metadata: {name: reviews}",
        "metadata: {name: reviews, annotations: {mirror.anymesh.io/compare: 'status,headers=ETag,body'}}",
        1,
    );
    let (set, _) = load_str("routes.yaml", &yaml);
    assert_eq!(set.virtual_services.len(), 1);
    let (t, diags) = compile(&bookinfo(), &set, 1);
    assert!(diags.is_empty(), "{diags:?}");
    let r = routes(&t, "reviews");
    let got: Vec<(&str, f64)> = r[0]
        .mirrors
        .iter()
        .map(|m| (m.cluster.name.as_str(), m.percentage))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|9080|v2|reviews.prod.svc", 100.0),
            ("outbound|80||ratings", 5.0),
            ("outbound|9090|v2|reviews.prod.svc", 100.0),
        ]
    );
    for m in &r[0].mirrors {
        assert!(
            Arc::ptr_eq(&m.cluster, &t.clusters[m.cluster.index]),
            "{} is in the table",
            m.cluster.name
        );
    }
    assert_eq!(
        r[0].mirror_compare,
        Some(MirrorCompare {
            headers: vec!["etag".into()],
            body: true
        })
    );
    assert!(r[1].mirrors.is_empty(), "0% mirrors nothing");
    assert_eq!(r[1].mirror_compare, None, "nothing to compare");
    assert_eq!(r[2].mirrors[0].percentage, 40.0);
    assert!(r[3].mirrors.is_empty());
}

#[test]
fn an_unknown_mirror_host_warns_and_still_gets_a_cluster() {
    let yaml = vs(r"
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: shadow.example}
"
    .trim_start_matches('\n'));
    let (t, diags) = compile(&bookinfo(), &config(&yaml), 1);
    let msgs: Vec<String> = diags
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert_eq!(
        msgs,
        ["spec.http[0].mirror.host: host 'shadow.example' resolves to no service; requests sent to this destination get 503"]
    );
    let m = &routes(&t, "reviews")[0].mirrors[0];
    assert!(m.cluster.endpoints.is_empty());
    assert!(t.cluster("outbound|9080||shadow.example").is_some());
}

const POLICY_DR: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: PEAK_EWMA
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {us-west/zone1/*: 80, us-west/zone2/*: 20}
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {probes: 3, time: 60s}
        maxConnectionDuration: 1h
        idleTimeout: 0s
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 0, maxRequestsPerConnection: 5, maxRetries: 3, idleTimeout: 90s, maxConcurrentStreams: 100}
    outlierDetection: {consecutiveGatewayErrors: 2, interval: 1s, maxEjectionPercent: 0}
    retryBudget: {}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {tcp: {maxConnections: 9}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2, maxEjectionPercent: 50, minHealthPercent: 30}
      retryBudget: {percent: 35.5, minRetryConcurrency: 7}
      loadBalancer:
        simple: ROUND_ROBIN
        localityLbSetting: {enabled: false, failover: [{from: us-east, to: eu-west}]}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {localityLbSetting: {failoverPriority: [topology.kubernetes.io/zone, version]}}
";

const POLICY_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v1}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews}}]
";

#[test]
fn cluster_policies_compile_merged_per_subset_and_port() {
    let (set, load_diags) = load_str("routes.yaml", &format!("{POLICY_VS}---\n{POLICY_DR}"));
    let paths: Vec<&str> = load_diags.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        ["spec.subsets[1].trafficPolicy.portLevelSettings[0].loadBalancer.localityLbSetting"],
        "failover without outlier detection warns: {load_diags:?}"
    );
    let (t, diags) = compile(&bookinfo(), &set, 1);
    assert!(diags.is_empty(), "{diags:?}");

    let host = cluster(&t, "outbound|9080||reviews.prod.svc");
    assert_eq!(host.lb, LbPolicy::PeakEwma);
    assert_eq!(
        host.policy,
        ClusterPolicy {
            connection_pool: ConnectionPool {
                max_connections: Some(100),
                connect_timeout: Some(Duration::from_millis(30)),
                tcp_keepalive: Some(TcpKeepalive {
                    probes: Some(3),
                    time: Some(Duration::from_secs(60)),
                    interval: None,
                }),
                max_connection_duration: Some(Duration::from_secs(3600)),
                tcp_idle_timeout: Some(Duration::ZERO),
                http1_max_pending_requests: Some(1),
                http2_max_requests: None,
                max_requests_per_connection: Some(5),
                max_retries: Some(3),
                http_idle_timeout: Some(Duration::from_secs(90)),
                max_concurrent_streams: Some(100),
            },
            outlier: Some(OutlierDetection {
                consecutive_gateway: Some(2),
                interval: Duration::from_secs(1),
                ..OutlierDetection::default()
            }),
            retry_budget: Some(RetryBudget::Concurrent {
                percent: 20.0,
                min_concurrency: 3
            }),
            locality: LocalityLb {
                enabled: true,
                mode: LocalityMode::Distribute(vec![LocalityDistribute {
                    from: "us-west/zone1/*".into(),
                    to: vec![
                        ("us-west/zone1/*".into(), 80),
                        ("us-west/zone2/*".into(), 20)
                    ],
                }]),
            },
            tls: None,
        }
    );
    let outlier = host.policy.outlier.as_ref().unwrap();
    assert_eq!(outlier.consecutive_5xx, Some(5), "default 5");
    assert_eq!(outlier.max_ejection_percent, 10, "0 is Istio's unset: 10");
    assert_eq!(outlier.base_ejection_time, Duration::from_secs(30));

    // Port 9090: the port-level entry alone; nothing else inherited.
    let grpc = cluster(&t, "outbound|9090||reviews.prod.svc");
    assert_eq!(grpc.lb, LbPolicy::RoundRobin);
    assert_eq!(
        grpc.policy,
        ClusterPolicy {
            connection_pool: ConnectionPool {
                max_connections: Some(9),
                ..ConnectionPool::default()
            },
            ..ClusterPolicy::default()
        }
    );

    // Subset v1 replaces outlierDetection, retryBudget and loadBalancer;
    // keeps the rule's connection pool.
    let v1 = cluster(&t, "outbound|9080|v1|reviews.prod.svc");
    assert_eq!(v1.lb, LbPolicy::RoundRobin);
    assert_eq!(v1.policy.connection_pool, host.policy.connection_pool);
    assert_eq!(
        v1.policy.outlier,
        Some(OutlierDetection {
            consecutive_5xx: None,
            consecutive_gateway: None,
            consecutive_local_origin: Some(2),
            split_external_local_origin: true,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
            min_health_percent: 30,
        })
    );
    assert_eq!(
        v1.policy.retry_budget,
        Some(RetryBudget::Concurrent {
            percent: 35.5,
            min_concurrency: 7
        })
    );
    assert_eq!(
        v1.policy.locality,
        LocalityLb {
            enabled: false,
            mode: LocalityMode::Failover(vec![("us-east".into(), "eu-west".into())]),
        }
    );

    // Subset v2 on 9080: its port-level entry replaces loadBalancer,
    // connectionPool and outlierDetection as a whole, even where unset.
    let v2 = cluster(&t, "outbound|9080|v2|reviews.prod.svc");
    assert_eq!(v2.lb, LbPolicy::RoundRobin);
    assert_eq!(v2.policy.connection_pool, ConnectionPool::default());
    assert_eq!(v2.policy.outlier, None);
    assert_eq!(v2.policy.retry_budget, host.policy.retry_budget);
    assert_eq!(
        v2.policy.locality.mode,
        LocalityMode::FailoverPriority(vec![
            "topology.kubernetes.io/zone".into(),
            "version".into()
        ])
    );

    // A service without a rule: nothing configured, mesh-default locality.
    let ratings = cluster(&t, "outbound|80||ratings");
    assert_eq!(ratings.policy, ClusterPolicy::default());
    assert!(ratings.policy.connection_pool.is_unlimited());
    assert_eq!(ratings.policy.locality, LocalityLb::default());
}

#[test]
fn incremental_compiles_keep_mirror_clusters() {
    let yaml = vs(r"
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: ratings}
"
    .trim_start_matches('\n'));
    let config = Arc::new(config(&yaml));
    let mut inc = IncrementalCompiler::new();
    let snap = bookinfo();
    let (t, _) = inc.compile(&snap, &config, 1);
    let mirror = &routes(&t, "reviews")[0].mirrors[0].cluster;
    assert_eq!(mirror.name, "outbound|80||ratings");
    assert!(Arc::ptr_eq(mirror, &t.clusters[mirror.index]));
    let (full, _) = compile(&snap, &config, 1);
    assert!(full.cluster("outbound|80||ratings").is_some());
}

#[test]
fn default_routes_avoid_previous_hosts_even_when_hashing() {
    let dr = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
";
    let (t, diags) = compile(&bookinfo(), &config(dr), 1);
    assert!(diags.is_empty(), "{diags:?}");
    let r = &routes(&t, "ratings")[0];
    assert!(matches!(
        cluster(&t, "outbound|80||ratings").lb,
        LbPolicy::ConsistentHash(_)
    ));
    assert_eq!(r.retry, RetryPolicy::istio_default());
}
