//! Chaos end-to-end tests of the resilience features (issue 20): test
//! upstreams that fail on command ([`ChaosUpstream`]) behind the mesh,
//! steady load through the proxy ([`Load`]), and Istio's documented
//! behaviour as the expectation. Here: retries (default and configured),
//! per-try timeouts, outlier ejection, retry budgets, circuit breakers and
//! fault injection; in the submodules: which failures are retried
//! ([`retries`]), ejection limits ([`outlier`]), active health checks
//! ([`health`]), locality failover ([`locality`]) and mirroring ([`mirror`]).
//!
//! Each test builds a mesh with three chaos endpoints on one service, waits
//! until every endpoint is routed, then fails some of them under load.
//! Waits are polls with deadlines; the only delays are the upstreams' own
//! behaviour (`Slow`, the pause inside a reset) and the configured faults.

use std::time::Duration;

use anymesh_testkit::chaos::load::Load;
use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::wait::Poll;
use anymesh_testkit::ChaosUpstream;
use tokio::time::Instant;

use crate::harness::*;

const HOST: &str = "chaos";

/// A VirtualService for [`HOST`] with one route to it; `route_extra` adds
/// keys to that route (4-space indent, e.g. `    retries: {...}\n`).
fn vs(route_extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {HOST}}}\n\
         spec:\n  hosts: [{HOST}]\n  http:\n  - route:\n    - destination: {{host: {HOST}}}\n\
         {route_extra}---\n"
    )
}

/// A DestinationRule for [`HOST`] whose `trafficPolicy` is `policy`
/// (4-space indent).
fn dr(policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {HOST}}}\n\
         spec:\n  host: {HOST}\n  trafficPolicy:\n{policy}---\n"
    )
}

/// Three chaos endpoints `c1..c3` on [`HOST`] (labels `version: v1`) behind
/// a mesh with `routes`, each routed at least once.
async fn chaos_mesh(routes: &str) -> (TestMesh, Vec<ChaosUpstream>) {
    let ups = ChaosUpstream::start_many(&["c1", "c2", "c3"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| chaos_endpoint(u, "version: v1"))
        .collect();
    let mesh = TestMesh::start(&services(HOST, "http", &eps), routes).await;
    routed(&mesh, HOST, &ups).await;
    (mesh, ups)
}

/// Sends requests for `host` until every upstream has received one.
async fn routed(mesh: &TestMesh, host: &str, ups: &[ChaosUpstream]) {
    eventually("every endpoint routed", || async {
        let _ = mesh.get(host, "/", &[]).await;
        ups.iter().all(|u| u.requests() > 0)
    })
    .await;
}

/// Requests received by all the upstreams.
fn upstream_total(ups: &[ChaosUpstream]) -> usize {
    ups.iter().map(ChaosUpstream::requests).sum()
}

/// The `/explain` text about endpoint `id` of [`HOST`] (its lines only).
async fn explained(mesh: &TestMesh, id: &str) -> String {
    let (_, text) = mesh
        .admin(&format!("/explain?host={HOST}&format=text"))
        .await;
    let needle = format!("from file id {id}\n");
    text.split("\n  127.0.0.1 port ")
        .find(|section| section.contains(&needle))
        .unwrap_or_else(|| panic!("no endpoint {id} in /explain: {text}"))
        .to_string()
}

/// Load on [`HOST`] through the mesh, each request given up after 3 s.
fn load(mesh: &TestMesh) -> Load {
    Load::new(mesh.proxy(), HOST).timeout(Duration::from_secs(3))
}

// ------------------------------------------------- retries and ejection

/// Istio's outlier-detection shape with a fast sweep and a long ejection.
const EJECT_ON_5XX: &str = "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_costs_no_request_and_is_ejected() {
    // Default retries (no `retries` on the route) plus outlier detection.
    let routes = format!("{}{}", vs(""), dr(EJECT_ON_5XX));
    let (mesh, ups) = chaos_mesh(&routes).await;
    let running = load(&mesh).concurrency(8).start();
    running.wait_for(100).await;
    ups[2].kill().await;
    running.wait_for(300).await;
    let why = explained(&mesh, "c3").await;
    assert!(
        why.contains("outlier detection: ejected until ")
            && why.contains("=> not routable: ejected by outlier detection"),
        "explain says why c3 is out: {why}"
    );
    let healthy = explained(&mesh, "c1").await;
    assert!(healthy.contains("=> routable"), "{healthy}");
    // Back on its port: an ejected endpoint gets nothing until its
    // ejection (30 s) ends.
    ups[2].restart().await;
    let (seen, accepted) = (ups[2].requests(), ups[2].connections());
    running.wait_for(300).await;
    let report = running.stop().await;
    println!("one of three killed: {}", report.summary());
    // The kill cuts the requests c3 is serving at that instant. One sent
    // on a reused connection is resent (it may be a keep-alive race); one
    // on a connection made for it may have been seen by the upstream, and
    // Istio's default policy (no `reset` in retryOn) does not replay it. So
    // at most the load's concurrency may fail, and only that way; anything
    // else (a refused connection reaching the client, a 503 from the
    // ejected endpoint) is a failure of retries or ejection.
    let failures = report.failures();
    let cut = "connection closed before a complete response head";
    assert!(
        report.total() - report.ok() <= 8 && failures.iter().all(|f| f.contains(cut)),
        "requests failed while an endpoint was killed: {failures:?}"
    );
    assert_eq!(
        (ups[2].requests(), ups[2].connections()),
        (seen, accepted),
        "the killed endpoint was not ejected: it got connections and requests after its restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_retries_hide_a_killed_endpoint_without_outlier_detection() {
    // Istio's default: 2 retries on connect-failure, previous hosts avoided.
    let (mesh, ups) = chaos_mesh(&vs("")).await;
    ups[0].kill().await;
    let report = load(&mesh).concurrency(4).run(200).await;
    println!("default retries, one endpoint down: {}", report.summary());
    assert_eq!(
        report.ok(),
        report.total(),
        "a connect failure reached the client: {:?}",
        report.failures()
    );
}

const PER_TRY: Duration = Duration::from_millis(200);
const INTERVAL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_is_cut_by_the_per_try_timeout_then_ejected() {
    let routes = format!(
        "{}{}",
        vs("    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: \"gateway-error,connect-failure,reset\"}\n"),
        dr("    outlierDetection: {consecutiveGatewayErrors: 2, consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n"),
    );
    let (mesh, ups) = chaos_mesh(&routes).await;
    let hung = &ups[1];
    let before = hung.requests();
    hung.set(Behaviour::Hang);
    let running = load(&mesh).concurrency(8).start();
    let threshold_at = Poll::new()
        .until("the hung endpoint to reach the ejection threshold", || {
            (hung.requests() >= before + 2).then(Instant::now)
        })
        .await;
    Poll::new()
        .until("one outlier-detection interval after the threshold", || {
            Instant::now() >= threshold_at + INTERVAL
        })
        .await;
    let after_interval = hung.requests();
    let why = explained(&mesh, "c2").await;
    assert!(
        why.contains("outlier detection: ejected until "),
        "explain says why c2 is out: {why}"
    );
    running.wait_for(200).await;
    let report = running.stop().await;
    println!(
        "hung endpoint: {} requests reached it; {}",
        after_interval - before,
        report.summary()
    );
    assert_eq!(
        report.ok(),
        report.total(),
        "per-try timeout plus retry should hide the hung endpoint: {:?}",
        report.failures()
    );
    assert_eq!(
        hung.requests(),
        after_interval,
        "the hung endpoint still got requests more than one interval after it reached the threshold"
    );
    // A behaviour bound, not a benchmark: one timed-out try, a backoff of
    // at most 25 ms, one good try.
    let bound = PER_TRY * 2 + Duration::from_millis(100);
    assert!(
        report.p99() < bound,
        "p99 {:?} is over {bound:?}: {}",
        report.p99(),
        report.summary()
    );
}

// --------------------------------------------------------- retry budgets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_stays_within_the_destination_rules_retry_budget() {
    let routes = format!(
        "{}{}",
        vs("    retries: {attempts: 5, retryOn: 5xx}\n"),
        dr("    retryBudget: {percent: 20, minRetryConcurrency: 3}\n"),
    );
    let (mesh, ups) = chaos_mesh(&routes).await;
    let before = upstream_total(&ups);
    for u in &ups {
        u.set(Behaviour::Status(503));
    }
    // Far more clients than minRetryConcurrency, so the percentage binds.
    let report = load(&mesh).concurrency(16).run(2000).await;
    let upstream = upstream_total(&ups) - before;
    let ratio = upstream as f64 / report.total() as f64;
    println!(
        "retry storm, retryBudget {{percent: 20, minRetryConcurrency: 3}}: {upstream} upstream \
         requests for {} client requests, ratio {ratio:.3}; {}",
        report.total(),
        report.summary()
    );
    assert_eq!(
        report.status(503),
        report.total(),
        "every request ends in the upstreams' 503: {:?}",
        report.failures()
    );
    assert!(ratio > 1.0, "nothing was retried (ratio {ratio:.3})");
    assert!(
        ratio <= 1.0 + 0.20 + 0.05,
        "retries beyond the budget: ratio {ratio:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_stays_within_the_default_budget() {
    // No retryBudget: anymesh's default, Linkerd's form (retries at most
    // 20 % of requests over 10 s, plus 10 per second).
    let routes = vs("    retries: {attempts: 5, retryOn: 5xx}\n");
    let (mesh, ups) = chaos_mesh(&routes).await;
    let before = upstream_total(&ups);
    for u in &ups {
        u.set(Behaviour::Status(503));
    }
    let concurrency = 16;
    let report = load(&mesh).concurrency(concurrency).run(3000).await;
    let upstream = upstream_total(&ups) - before;
    let n = report.total();
    let retries = upstream.saturating_sub(n);
    let windows = report.elapsed.as_secs().div_ceil(10).max(1) as usize;
    // 20 % of the requests, the reserve of 10/s over each 10 s window, and
    // the retries racing for the last tokens (one per client at most).
    let allowed = n / 5 + 100 * windows + concurrency;
    println!(
        "retry storm, default budget: {upstream} upstream requests for {n} client requests, \
         ratio {:.3} ({retries} retries, {allowed} allowed); {}",
        upstream as f64 / n as f64,
        report.summary()
    );
    assert_eq!(report.status(503), n, "{:?}", report.failures());
    assert!(retries > 0, "nothing was retried");
    assert!(
        retries <= allowed,
        "{retries} retries for {n} requests: over the default budget ({allowed})"
    );
}

// ----------------------------------------------------- circuit breaking

/// The DestinationRule of Istio's circuit-breaking task (httpbin).
const CIRCUIT_BREAKER: &str = "    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaking_as_in_istios_task() {
    let routes = format!("{}{}", vs(""), dr(CIRCUIT_BREAKER));
    let (mesh, ups) = chaos_mesh(&routes).await;
    let (before, accepted) = (
        upstream_total(&ups),
        ups.iter().map(ChaosUpstream::connections).sum::<usize>(),
    );
    for u in &ups {
        u.set(Behaviour::Slow(Duration::from_millis(100)));
    }
    let report = load(&mesh).concurrency(5).run(30).await;
    let overflow = report.status(503);
    println!(
        "circuit breaker, 5 clients: {overflow} overflowed; {}",
        report.summary()
    );
    let odd: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| !(o.is_ok() || (o.status == Some(503) && o.overloaded)))
        .map(|o| {
            format!(
                "{:?} {:?} overloaded={} {:?}",
                o.status, o.error, o.overloaded, o.body
            )
        })
        .collect();
    assert!(
        odd.is_empty(),
        "only 200s and 503s with x-envoy-overloaded: true: {odd:?}"
    );
    assert!(overflow > 0, "nothing overflowed: {}", report.summary());
    assert!(
        report.ok() > 0,
        "nothing was admitted: {}",
        report.summary()
    );
    assert_eq!(
        upstream_total(&ups) - before,
        report.ok(),
        "the upstreams see exactly the admitted requests (overflow is never retried)"
    );
    let connections = ups.iter().map(ChaosUpstream::connections).sum::<usize>() - accepted;
    assert_eq!(
        connections,
        report.ok(),
        "maxRequestsPerConnection 1: one connection per admitted request"
    );
}

// ------------------------------------------------------- fault injection

/// Istio's `samples/bookinfo/networking/virtual-service-ratings-test-abort.yaml`.
const RATINGS_TEST_ABORT: &str = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
";

/// Istio's `samples/bookinfo/networking/virtual-service-ratings-test-delay.yaml`.
const RATINGS_TEST_DELAY: &str = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
";

/// Bookinfo's ratings: `r1` is v1, `r2` and `r3` are v2; `routes` plus a
/// DestinationRule with both subsets. Waits until v1 is routed.
async fn ratings_mesh(routes: &str) -> (TestMesh, Vec<ChaosUpstream>) {
    let ups = ChaosUpstream::start_many(&["r1", "r2", "r3"]).await;
    let eps = vec![
        chaos_endpoint(&ups[0], "version: v1"),
        chaos_endpoint(&ups[1], "version: v2"),
        chaos_endpoint(&ups[2], "version: v2"),
    ];
    let routes = format!("{routes}---\n{}", subsets_dr("ratings", &["v1", "v2"], ""));
    let mesh = TestMesh::start(&services("ratings", "http", &eps), &routes).await;
    routed(&mesh, "ratings", &ups[..1]).await;
    (mesh, ups)
}

/// The config problems `/config` reports: load diagnostics and compile
/// warnings.
async fn config_problems(mesh: &TestMesh) -> Vec<String> {
    let (_, text) = mesh.admin("/config").await;
    let config: serde_json::Value = serde_json::from_str(&text).expect("/config is JSON");
    ["diagnostics", "compile_warnings"]
        .iter()
        .flat_map(|k| {
            config[k]
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("/config has no {k} list"))
        })
        .map(|v| v.to_string())
        .collect()
}

fn ratings(mesh: &TestMesh) -> Load {
    Load::new(mesh.proxy(), "ratings").timeout(Duration::from_secs(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_ratings_test_abort_sample_aborts_jasons_requests() {
    let (mesh, ups) = ratings_mesh(RATINGS_TEST_ABORT).await;
    let problems = config_problems(&mesh).await;
    assert!(
        problems.is_empty(),
        "the sample loads cleanly: {problems:?}"
    );
    let before = upstream_total(&ups);
    let jason = ratings(&mesh)
        .header("end-user", "jason")
        .concurrency(4)
        .run(20)
        .await;
    assert_eq!(
        jason.status(500),
        20,
        "jason gets the injected 500: {}",
        jason.summary()
    );
    assert_eq!(
        upstream_total(&ups),
        before,
        "an aborted request never reaches an upstream"
    );
    let others = ratings(&mesh)
        .header("end-user", "someone")
        .concurrency(4)
        .run(20)
        .await;
    assert_eq!(others.ok(), 20, "{:?}", others.failures());
    assert_eq!(
        others.by_upstream().get("r1"),
        Some(&20),
        "others go to v1 untouched: {}",
        others.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_ratings_test_delay_sample_holds_jasons_requests() {
    // The sample as shipped, and its older form with the delay's deprecated
    // `percent` (Abort's `percent` is gone from Istio's API; Delay's stays).
    let legacy = RATINGS_TEST_DELAY.replace("percentage:\n          value: 100.0", "percent: 100");
    assert_ne!(legacy, RATINGS_TEST_DELAY);
    for sample in [RATINGS_TEST_DELAY, legacy.as_str()] {
        let (mesh, ups) = ratings_mesh(sample).await;
        if sample == RATINGS_TEST_DELAY {
            let problems = config_problems(&mesh).await;
            assert!(
                problems.is_empty(),
                "the sample loads cleanly: {problems:?}"
            );
        }
        let before = upstream_total(&ups);
        // The sample's 7 s is too long to wait for: jason's request must
        // still be held, not forwarded, a second later.
        let jason = ratings(&mesh)
            .header("end-user", "jason")
            .timeout(Duration::from_secs(1))
            .run(1)
            .await;
        let held = &jason.outcomes[0];
        assert!(
            held.status.is_none()
                && held
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("no answer")),
            "jason's request answered before the 7 s delay: {held:?}"
        );
        assert_eq!(
            upstream_total(&ups),
            before,
            "a delayed request is held before it is forwarded"
        );
        let others = ratings(&mesh).concurrency(4).run(20).await;
        assert_eq!(others.ok(), 20, "{:?}", others.failures());
        assert!(
            others.max() < Duration::from_secs(1),
            "others are not delayed: {}",
            others.summary()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_delays_and_aborts_are_never_retried() {
    let routes = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {delay: {percentage: {value: 100}, fixedDelay: 300ms}}
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: ratings, subset: v1}}]
  - match: [{headers: {end-user: {exact: mallory}}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 503}}
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings, subset: v1}}]
";
    let delay = Duration::from_millis(300);
    let (mesh, ups) = ratings_mesh(routes).await;

    let before = upstream_total(&ups);
    let mallory = ratings(&mesh)
        .header("end-user", "mallory")
        .concurrency(4)
        .run(20)
        .await;
    assert_eq!(mallory.status(503), 20, "{}", mallory.summary());
    assert_eq!(
        upstream_total(&ups),
        before,
        "an injected 503 is neither forwarded nor retried, even with retryOn 5xx"
    );

    let before = ups[0].requests();
    let jason = ratings(&mesh)
        .header("end-user", "jason")
        .concurrency(4)
        .run(8)
        .await;
    assert_eq!(jason.ok(), 8, "{:?}", jason.failures());
    assert!(
        jason.quantile(0.0) >= delay,
        "every request of jason's is delayed by {delay:?}: {}",
        jason.summary()
    );
    assert_eq!(
        ups[0].requests() - before,
        8,
        "a delayed request reaches v1 exactly once"
    );

    let others = ratings(&mesh).concurrency(4).run(20).await;
    assert_eq!(others.ok(), 20, "{:?}", others.failures());
    assert!(
        others.max() < delay,
        "others are not delayed: {}",
        others.summary()
    );
}

// ------------------------------------------------------ retries disabled

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_zero_lets_an_upstream_503_reach_the_client() {
    let (mesh, ups) = chaos_mesh(&vs("    retries: {attempts: 0}\n")).await;
    let before = upstream_total(&ups);
    let failing = ups[0].requests();
    ups[0].set(Behaviour::Status(503));
    let report = load(&mesh).concurrency(4).run(60).await;
    println!(
        "attempts 0, one endpoint answering 503: {}",
        report.summary()
    );
    assert!(report.status(503) > 0, "{}", report.summary());
    assert_eq!(
        report.status(503),
        ups[0].requests() - failing,
        "every 503 the endpoint sent reaches the client"
    );
    assert_eq!(report.ok() + report.status(503), report.total());
    assert_eq!(
        upstream_total(&ups) - before,
        report.total(),
        "one attempt per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_zero_lets_a_connect_failure_reach_the_client() {
    // The counterpart of `default_retries_hide_a_killed_endpoint...`.
    let (mesh, ups) = chaos_mesh(&vs("    retries: {attempts: 0}\n")).await;
    let before = upstream_total(&ups);
    ups[0].kill().await;
    let report = load(&mesh).concurrency(4).run(60).await;
    println!("attempts 0, one endpoint down: {}", report.summary());
    let failed = report.total() - report.ok();
    assert!(
        failed > 0,
        "a connect failure was retried: {}",
        report.summary()
    );
    assert_eq!(
        report.status(503),
        failed,
        "a connect failure answers 503: {:?}",
        report.failures()
    );
    assert_eq!(
        upstream_total(&ups) - before,
        report.ok(),
        "the live endpoints got only the requests that succeeded"
    );
}

mod health;
mod locality;
mod mirror;
mod outlier;
mod retries;
