//! The resilience fields: parsed values, Istio's validation with exact field
//! paths, and the merge of traffic policies per subset and port.

use std::time::Duration;

use super::*;

/// Loads `yaml` and returns the diagnostics as `severity: Display` lines.
fn lines(yaml: &str) -> (ConfigSet, Vec<String>) {
    let (set, diags) = load_str("routes.yaml", yaml);
    let got = diags
        .iter()
        .map(|d| format!("{}: {d}", d.severity))
        .collect();
    (set, got)
}

const VS: &str = "VirtualService default/reviews";
const DRP: &str = "DestinationRule prod/reviews";

#[test]
fn virtual_service_fields_parse_without_findings() {
    let (set, got) = lines(&vs(r"
  - route: [{destination: {host: reviews, subset: v1}}]
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,reset, 503 ,unavailable
      retryIgnorePreviousHosts: false
      backoff: 100ms
    fault:
      delay: {fixedDelay: 7s, percentage: {value: 12.5}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 50}
    mirrors:
    - destination: {host: ratings}
      percentage: {value: 5}
"));
    assert!(got.is_empty(), "{got:#?}");
    let r = &set.virtual_services[0].spec.http[0];
    let retries = r.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, 3);
    assert_eq!(
        retries.per_try_timeout.map(GoDuration::as_duration),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        retries.retry_on.as_deref(),
        Some("5xx,reset, 503 ,unavailable")
    );
    assert_eq!(retries.retry_ignore_previous_hosts, Some(false));
    let fault = r.fault.as_ref().unwrap();
    assert_eq!(
        fault.delay.as_ref().unwrap().percentage,
        Some(Percent { value: 12.5 })
    );
    assert_eq!(
        fault.abort.as_ref().unwrap().grpc_status,
        Some(GrpcStatus::Name("UNAVAILABLE".into()))
    );
    assert_eq!(r.mirror.as_ref().unwrap().subset.as_deref(), Some("v2"));
    assert_eq!(r.mirrors[0].destination.host, "ratings");
}

#[test]
fn destination_rule_fields_parse_without_findings() {
    let (set, got) = lines(&dr(r"  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}
        maxConnectionDuration: 1h
        idleTimeout: 0s
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 10, maxRequestsPerConnection: 5, maxRetries: 3, idleTimeout: 90s}
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 3
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 2
      interval: 5s
      baseEjectionTime: 15m
      maxEjectionPercent: 100
      minHealthPercent: 50
    retryBudget: {percent: 25.5, minRetryConcurrency: 5}
    loadBalancer:
      simple: PEAK_EWMA
      localityLbSetting:
        enabled: true
        distribute:
        - from: us-west/zone1/*
          to: {us-west/zone1/*: 80, us-west/zone2/*: 20}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {http: {http2MaxRequests: 1}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        localityLbSetting:
          failover: [{from: us-east, to: eu-west}]
      outlierDetection: {consecutive5xxErrors: 0}
"));
    assert!(got.is_empty(), "{got:#?}");
    let spec = &set.destination_rules[0].spec;
    let tp = spec.traffic_policy.as_ref().unwrap();
    assert_eq!(
        tp.load_balancer.as_ref().unwrap().simple,
        Some(SimpleLb::PeakEwma)
    );
    assert_eq!(
        tp.connection_pool
            .as_ref()
            .unwrap()
            .tcp
            .as_ref()
            .unwrap()
            .max_connections,
        100
    );
    assert_eq!(
        tp.outlier_detection
            .as_ref()
            .unwrap()
            .consecutive_5xx_errors,
        Some(7)
    );
    assert_eq!(tp.retry_budget.as_ref().unwrap().percent, Some(25.5));
    assert_eq!(tp.port_level_settings[0].port.map(|p| p.number), Some(9080));
}

/// Each invalid value class, with its exact path and message.
#[test]
fn invalid_virtual_service_values_name_their_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "    retries: {attempts: -1}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].retries.attempts: attempts -1 is negative; 0 disables retries"],
        ),
        (
            "    retries: {attempts: 2, retryOn: '5xx,bogus'}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].retries.retryOn: unknown retryOn name \"bogus\"; valid names: 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, http3-post-connect-failure, or an HTTP status code 100..=599"],
        ),
        (
            "    retries: {attempts: 2, retryOn: '600'}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].retries.retryOn: status code 600 is out of range 100..=599"],
        ),
        (
            "    retries: {attempts: 2, retryOn: 'reset,http3-post-connect-failure'}\n",
            &["warning: routes.yaml: VirtualService default/reviews: spec.http[0].retries.retryOn: http3-post-connect-failure is ignored: anymesh does not use HTTP/3 upstream"],
        ),
        (
            "    retries: {attempts: 0, retryOn: 5xx}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].retries.attempts: attempts is 0 (retries disabled) but perTryTimeout, retryOn or retryRemoteLocalities is set; set attempts above 0"],
        ),
        (
            "    retries: {attempts: 2, perTryTimeout: -1s}\n",
            &["error: routes.yaml:9:43: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: invalid duration \"-1s\": must not be negative"],
        ),
        (
            "    retries: {attempts: 2, perTryTimeout: 10}\n",
            &["error: routes.yaml:9:43: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: invalid duration \"10\": missing unit after 10 (use ns, us, ms, s, m or h, e.g. 10s)"],
        ),
        (
            "    retries: {attempts: 2, perTryTimeout: 500us, backoff: 1500us}\n",
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: duration 500µs is below the minimum of 1ms",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].retries.backoff: duration 1.5ms is not a whole number of milliseconds",
            ],
        ),
        (
            "    fault: {delay: {fixedDelay: 1s, percentage: {value: 100.5}}}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.percentage.value: percentage 100.5 is out of range 0..=100"],
        ),
        (
            "    fault: {delay: {fixedDelay: 1s, percent: 101}}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.percent: 101 is out of range 0..=100"],
        ),
        (
            "    fault: {abort: {httpStatus: 700, percentage: {value: -1}}}\n",
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort.httpStatus: status 700 is out of range 200..=599",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort.percentage.value: percentage -1 is out of range 0..=100",
            ],
        ),
        (
            "    fault: {abort: {grpcStatus: NOPE, percentage: {value: 1}}}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: unknown gRPC status \"NOPE\" (use a code name such as UNAVAILABLE or NOT_FOUND, or a number 0..=16)"],
        ),
        (
            "    fault: {abort: {grpcStatus: 17, percentage: {value: 1}}}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: gRPC status 17 is out of range 0..=16"],
        ),
        (
            "    fault: {abort: {httpStatus: 503, grpcStatus: INTERNAL, percentage: {value: 1}}}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort: only one of httpStatus or grpcStatus may be set"],
        ),
        (
            "    fault: {delay: {fixedDelay: 0s, percentage: {value: 0.00001}}}\n",
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.fixedDelay: duration 0ns is below the minimum of 1ms",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.percentage.value: percentage 0.00001 is below the smallest share, 0.0001",
            ],
        ),
        (
            "    fault: {delay: {exponentialDelay: 1s, percentage: {value: 1}}}\n",
            &[
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.exponentialDelay: unsupported field 'exponentialDelay': not implemented by anymesh, ignored",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.fixedDelay: fixedDelay is required (exponentialDelay is not supported, by Istio either)",
            ],
        ),
        (
            "    fault: {abort: {http2Error: CANCEL, percentage: {value: 1}}}\n",
            &[
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort.http2Error: unsupported field 'http2Error': not implemented by anymesh, ignored",
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort: abort has neither httpStatus nor grpcStatus; nothing is aborted",
            ],
        ),
        (
            "    fault: {}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].fault: a fault needs a delay, an abort or both"],
        ),
        (
            "    fault: {delay: {fixedDelay: 5s}, abort: {httpStatus: 500}}\n",
            &[
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].fault.delay.percentage: no percentage: as in Istio, no request is delayed; set percentage.value (e.g. 100)",
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].fault.abort.percentage: no percentage: as in Istio, no request is aborted; set percentage.value (e.g. 100)",
            ],
        ),
        (
            "    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 101}\n    mirrors: [{destination: {host: ratings}, percentage: {value: -5}}]\n",
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].mirrorPercentage.value: percentage 101 is out of range 0..=100",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].mirrors[0].percentage.value: percentage -5 is out of range 0..=100",
            ],
        ),
        (
            "    mirror: {host: 'bad host', subset: ''}\n    mirrorPercent: 50\n",
            &[
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].mirror.host: invalid host \"bad host\": only letters, digits, '-', '_' and '.' are allowed",
                "error: routes.yaml: VirtualService default/reviews: spec.http[0].mirror.subset: subset name must not be empty",
                "warning: routes.yaml: VirtualService default/reviews: spec.http[0].mirrorPercent: mirrorPercent is deprecated; use mirrorPercentage",
            ],
        ),
        (
            "    mirror: {host: reviews, subset: v9}\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].mirror.subset: unknown subset 'v9': DestinationRule default/reviews for host 'reviews' defines only v1, v2"],
        ),
        (
            "    mirrorPercentage: {value: 5}\n",
            &["warning: routes.yaml: VirtualService default/reviews: spec.http[0].mirrorPercentage: mirrorPercentage without mirror has no effect"],
        ),
        (
            "    mirrors: [{destination: {host: reviews}, percentag: {value: 5}}]\n",
            &["error: routes.yaml: VirtualService default/reviews: spec.http[0].mirrors[0].percentag: unknown field 'percentag' (did you mean 'percentage'?)"],
        ),
    ];
    let mut failures = Vec::new();
    for (extra, want) in cases {
        let yaml = vs(&format!(
            "  - route: [{{destination: {{host: reviews, subset: v1}}}}]\n{extra}"
        ));
        let (_, got) = lines(&yaml);
        if got != *want {
            failures.push(format!("{extra}\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = VS;
}

#[test]
fn invalid_destination_rule_values_name_their_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "    connectionPool: {tcp: {maxConnections: -1, connectTimeout: 0s}, http: {http1MaxPendingRequests: -3, maxRetries: 5000000000}}\n",
            &[
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 is negative; must be 0 or more",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration 0ns is below the minimum of 1ms",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: -3 is negative; must be 0 or more",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.http.maxRetries: 5000000000 is too large (at most 4294967295)",
            ],
        ),
        (
            "    connectionPool: {}\n",
            &["error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool: a connection pool needs tcp, http or both"],
        ),
        (
            "    connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}\n",
            &[
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: unsupported field 'h2UpgradePolicy': not implemented by anymesh, ignored",
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.http.useClientProtocol: unsupported field 'useClientProtocol': not implemented by anymesh, ignored",
            ],
        ),
        (
            "    connectionPool: {tcp: {idleTimeout: 1h30}}\n",
            &["error: routes.yaml:7:41: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.tcp.idleTimeout: invalid duration \"1h30\": missing unit after 30 (use ns, us, ms, s, m or h, e.g. 10s)"],
        ),
        (
            "    outlierDetection: {consecutive5xxErrors: -1, maxEjectionPercent: 120, minHealthPercent: -1, interval: 0s, consecutiveLocalOriginFailures: 3}\n",
            &[
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: -1 is negative; must be 0 or more",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: only counted with splitExternalLocalOriginErrors: true",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.interval: duration 0ns is below the minimum of 1ms",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: 120 is out of range 0..=100",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.minHealthPercent: -1 is out of range 0..=100",
            ],
        ),
        (
            "    outlierDetection: {consecutiveErrors: 5, outlierDetectionHttpErrorCodes: [500]}\n",
            &[
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes: unsupported field 'outlierDetectionHttpErrorCodes': not implemented by anymesh, ignored",
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.outlierDetection.consecutiveErrors: consecutiveErrors is deprecated and ignored (as by Istio); use consecutive5xxErrors or consecutiveGatewayErrors",
            ],
        ),
        (
            "    retryBudget: {percent: 150, minRetryConcurrency: -2, budgetInterval: 1s}\n",
            &[
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.retryBudget.budgetInterval: unsupported field 'budgetInterval': not implemented by anymesh, ignored",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.retryBudget.percent: percentage 150 is out of range 0..=100",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.retryBudget.minRetryConcurrency: -2 is negative; must be 0 or more",
            ],
        ),
        (
            "    loadBalancer: {localityLbSetting: {distribute: [{from: 'us-west/*', to: {'us-west/z1/*': 60, 'us-east/*': 30}}, {from: 'a/*/b', to: {x: 0}}]}}\n",
            &[
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights sum to 90, must sum to 100",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[1].from: invalid locality \"a/*/b\": use region, region/zone or region/zone/subzone, with * only as the last part",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[1].to.x: weight 0 is out of range 1..=100",
            ],
        ),
        (
            "    loadBalancer: {localityLbSetting: {distribute: [{from: '*', to: {'*': 100}}], failover: [{from: us-east, to: us-east}, {from: us/z1, to: '*'}]}}\n",
            &[
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting: only one of distribute, failover or failoverPriority may be set, found distribute and failover",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: from and to must be different regions",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1].from: \"us/z1\": failover names a region only, without '/' or '*'",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1].to: \"*\": failover names a region only, without '/' or '*'",
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting: failover needs outlierDetection in the same traffic policy; without it endpoints never fail over (as in Istio)",
            ],
        ),
        (
            "    loadBalancer: {localityLbSetting: {failoverPriority: [topology.kubernetes.io/region]}, zoneAwareLbSetting: {enabled: true}}\n    outlierDetection: {}\n",
            &["warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.loadBalancer.zoneAwareLbSetting: unsupported field 'zoneAwareLbSetting': not implemented by anymesh, ignored"],
        ),
        (
            "    portLevelSettings:\n    - connectionPool: {tcp: {maxConnections: 1}}\n    - port: {number: 80}\n      outlierDetection: {maxEjectionPercent: 101}\n    - port: {number: 80}\n      tls: {mode: SIMPLE}\n",
            &[
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.portLevelSettings[0].port: port is required",
                "warning: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.portLevelSettings[2].port.number: port 80 already has portLevelSettings[1], which applies; this entry is ignored",
                "error: routes.yaml: DestinationRule prod/reviews: spec.trafficPolicy.portLevelSettings[1].outlierDetection.maxEjectionPercent: 101 is out of range 0..=100",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (policy, want) in cases {
        let (_, got) = lines(&dr(&format!("  host: reviews\n  trafficPolicy:\n{policy}")));
        if got != *want {
            failures.push(format!("{policy}\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = DRP;
}

#[test]
fn mirror_compare_annotation_is_checked_at_its_path() {
    let with = |value: &str| {
        vs("  - route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v2}\n")
            .replacen(
                "  name: reviews\n",
                &format!("  name: reviews\n  annotations: {{mirror.anymesh.io/compare: '{value}', anymesh.io/typo: x}}\n"),
                1,
            )
    };
    let (set, got) = lines(&with("status,headers=ETag|content-type,body"));
    assert_eq!(
        got,
        ["warning: routes.yaml: VirtualService default/reviews: metadata.annotations.anymesh.io/typo: unknown anymesh annotation 'anymesh.io/typo' (known: mirror.anymesh.io/compare); ignored"]
    );
    assert_eq!(
        annotations::mirror_compare(&set.virtual_services[0].annotations),
        Some(crate::routes::policy::MirrorCompare {
            headers: vec!["etag".into(), "content-type".into()],
            body: true
        })
    );
    let (set, got) = lines(&with("status,bytes"));
    assert_eq!(set.virtual_services.len(), 0);
    assert_eq!(
        got[1],
        "error: routes.yaml: VirtualService default/reviews: metadata.annotations.mirror.anymesh.io/compare: invalid mirror comparison \"status,bytes\": unknown item \"bytes\"; use status, headers=<name>|<name>... or body (e.g. status,headers=etag|content-type,body)"
    );
    let (_, got) = lines(&with("headers="));
    assert!(
        got[1].ends_with("invalid mirror comparison \"headers=\": headers= lists no header name"),
        "{got:?}"
    );
}

/// Istio's merge: the rule's policy (or its port-level entry for the port,
/// alone), then the subset's (or its port-level entry), each part replaced
/// as a whole.
#[test]
fn traffic_policies_merge_as_istio_merges() {
    let (set, got) = lines(&dr(r"  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 10}}
    outlierDetection: {consecutive5xxErrors: 3}
    retryBudget: {percent: 30}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {tcp: {maxConnections: 90}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 5}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      retryBudget: {percent: 50}
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: RANDOM}
"));
    assert!(got.is_empty(), "{got:#?}");
    let spec = &set.destination_rules[0].spec;
    let tp = spec.traffic_policy.as_ref().unwrap();
    let pool = |p: EffectivePolicy<'_>| {
        p.connection_pool
            .and_then(|c| c.tcp.as_ref())
            .map(|t| t.max_connections)
    };
    let simple = |p: EffectivePolicy<'_>| p.load_balancer.and_then(|lb| lb.simple);

    // Host, port 9080: the top level.
    let p = spec.policy(None, Some(9080));
    assert_eq!(pool(p), Some(10));
    assert_eq!(simple(p), Some(SimpleLb::LeastRequest));
    assert_eq!(p.retry_budget, tp.retry_budget.as_ref());
    // Host, port 9090: the port-level entry alone; nothing inherited.
    let p = spec.policy(None, Some(9090));
    assert_eq!(pool(p), Some(90));
    assert_eq!(p.load_balancer, None);
    assert_eq!(p.outlier_detection, None);
    assert_eq!(p.retry_budget, None);
    // Subset v1 replaces connectionPool as a whole, inherits the rest.
    let p = spec.policy(Some("v1"), Some(9080));
    assert_eq!(pool(p), None);
    assert_eq!(
        p.connection_pool
            .and_then(|c| c.http.as_ref())
            .map(|h| h.http2_max_requests),
        Some(5)
    );
    assert_eq!(simple(p), Some(SimpleLb::LeastRequest));
    assert!(p.outlier_detection.is_some());
    // Subset v1 on 9090: over the rule's port-level entry.
    let p = spec.policy(Some("v1"), Some(9090));
    assert_eq!(simple(p), None);
    assert!(p.connection_pool.and_then(|c| c.http.as_ref()).is_some());
    // Subset v2 on 9080: its port-level entry alone stands for the subset
    // (so the subset's own retry budget is dropped, the rule's stays) and
    // replaces the first three parts even where unset.
    let p = spec.policy(Some("v2"), Some(9080));
    assert_eq!(simple(p), Some(SimpleLb::Random));
    assert_eq!(p.connection_pool, None);
    assert_eq!(p.outlier_detection, None);
    assert_eq!(p.retry_budget.and_then(|b| b.percent), Some(30.0));
    // Subset v2 on another port: inherits the top level, own budget.
    let p = spec.policy(Some("v2"), Some(7000));
    assert_eq!(pool(p), Some(10));
    assert_eq!(simple(p), Some(SimpleLb::LeastRequest));
    assert_eq!(p.retry_budget.and_then(|b| b.percent), Some(50.0));
    // load_balancer follows the same merge.
    assert_eq!(
        spec.load_balancer(Some("v2"), Some(9080))
            .and_then(|lb| lb.simple),
        Some(SimpleLb::Random)
    );
    assert_eq!(spec.load_balancer(None, Some(9090)), None);
}

#[test]
fn remote_localities_and_stream_limits_load_without_findings() {
    let (_, got) = lines(&vs(r"
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 2, retryRemoteLocalities: true}
"));
    assert!(got.is_empty(), "{got:#?}");
    let (_, got) = lines(&dr(r"  host: reviews
  trafficPolicy:
    connectionPool: {http: {maxConcurrentStreams: 100}}
"));
    assert!(got.is_empty(), "{got:#?}");
}
