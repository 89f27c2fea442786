use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{Cluster, ClusterEndpoint, LbPolicy, RouteTable};
use anymesh_core::{Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol};
use anymesh_core::{Provenance, ServicePort, SourceId};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::board::{HealthBoard, ProbeOutcome, Verdict};
use super::driver::Driver;
use super::probe::{self, ProbeFuture, Prober, Target};
use super::tally::Tally;
use super::*;
use crate::balance::ActiveHealth;

mod wire;

// ---- thresholds ----

#[test]
fn a_new_endpoint_fails_only_after_the_unhealthy_threshold() {
    let mut t = Tally::default();
    assert_eq!(t.record(false, 2, 3), None);
    assert_eq!(t.record(false, 2, 3), None);
    assert_eq!(t.verdict, Verdict::Unchecked, "two failures are not three");
    assert_eq!(t.record(false, 2, 3), Some(Verdict::Failing));
    assert_eq!(t.failures, 3);
}

#[test]
fn a_pass_resets_the_failures_and_one_pass_makes_a_new_endpoint_pass() {
    let mut t = Tally::default();
    t.record(false, 2, 3);
    t.record(false, 2, 3);
    assert_eq!(t.record(true, 2, 3), Some(Verdict::Passing));
    assert_eq!((t.passes, t.failures), (1, 0));
    t.record(false, 2, 3);
    t.record(false, 2, 3);
    assert_eq!(t.verdict, Verdict::Passing, "the count started again");
}

#[test]
fn a_failing_endpoint_needs_the_healthy_threshold_to_pass_again() {
    let mut t = Tally::default();
    for _ in 0..3 {
        t.record(false, 2, 3);
    }
    assert_eq!(t.record(true, 2, 3), None);
    assert_eq!(t.verdict, Verdict::Failing);
    t.record(false, 2, 3);
    assert_eq!(t.record(true, 2, 3), None, "the passes start again");
    assert_eq!(t.record(true, 2, 3), Some(Verdict::Passing));
}

// ---- matching ----

#[test]
fn a_check_applies_by_hostname_or_its_leading_labels_subset_and_port() {
    let c = cluster("reviews.shop.svc", Some("v2"), 9080, &["a"]);
    let mut check = HealthCheck::new("reviews", CheckKind::Tcp);
    assert!(check.applies_to(&c));
    check.service = "reviews.shop".into();
    assert!(check.applies_to(&c));
    check.service = "reviews.shop.svc".into();
    assert!(check.applies_to(&c));
    check.service = "review".into();
    assert!(!check.applies_to(&c), "not a whole label");
    check.service = "reviews".into();
    check.subset = Some("v1".into());
    assert!(!check.applies_to(&c));
    check.subset = Some("v2".into());
    check.port = Some(80);
    assert!(!check.applies_to(&c));
    check.port = Some(9080);
    assert!(check.applies_to(&c));
}

// ---- the driver, with scripted probes and paused time ----

/// Probes that answer as told (pass by default), recording when each ran.
#[derive(Default)]
struct Scripted {
    failing: Mutex<HashMap<String, bool>>,
    log: Mutex<Vec<(String, Instant)>>,
    /// How long each probe takes.
    takes: Mutex<Duration>,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Scripted {
    fn fail(&self, authority: &str, failing: bool) {
        self.failing.lock().insert(authority.into(), failing);
    }

    fn probes_of(&self, authority: &str) -> Vec<Instant> {
        let log = self.log.lock();
        log.iter()
            .filter(|(a, _)| a == authority)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Prober for Arc<Scripted> {
    fn probe(&self, target: Target) -> ProbeFuture {
        let me = self.clone();
        Box::pin(async move {
            me.log
                .lock()
                .push((target.authority.clone(), Instant::now()));
            let now = me.running.fetch_add(1, Ordering::SeqCst) + 1;
            me.most_running.fetch_max(now, Ordering::SeqCst);
            let takes = *me.takes.lock();
            tokio::time::sleep(takes).await;
            me.running.fetch_sub(1, Ordering::SeqCst);
            let failing = me.failing.lock().get(&target.authority).copied();
            if failing == Some(true) {
                ProbeOutcome::Fail("scripted".into())
            } else {
                ProbeOutcome::Pass
            }
        })
    }
}

/// An endpoint with address `id`, serving port 80 (authority `id:80`).
fn ep(id: &str) -> ClusterEndpoint {
    let endpoint = Endpoint {
        service: Hostname::new("svc").unwrap(),
        address: id.into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 80,
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight: 1,
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
        weight: 1,
        endpoint: Arc::new(endpoint),
    }
}

fn cluster(service: &str, subset: Option<&str>, port: u16, ids: &[&str]) -> Cluster {
    let host = Hostname::new(service).unwrap();
    Cluster {
        name: Cluster::cluster_name(&host, subset, port),
        index: 0,
        service: host,
        subset: subset.map(str::to_string),
        selector: Labels::new(),
        port: ServicePort {
            name: "http".into(),
            number: port,
            protocol: Protocol::Http,
        },
        lb: LbPolicy::RoundRobin,
        policy: Default::default(),
        endpoints: ids.iter().map(|id| ep(id)).collect(),
        excluded: vec![],
    }
}

fn install(router: &Router, clusters: Vec<Cluster>) {
    let clusters = clusters
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.index = i;
            Arc::new(c)
        })
        .collect();
    let table = RouteTable {
        clusters,
        ..RouteTable::default()
    };
    router.install(Arc::new(table), true);
}

/// The active verdict the balancer of the routing in force sees for `id:80`.
fn seen(router: &Router, id: &str) -> Vec<ActiveHealth> {
    let routing = router.current();
    let authority = format!("{id}:80");
    let mut out = Vec::new();
    for (c, lb) in routing.table.clusters.iter().zip(&routing.lbs) {
        for (i, e) in c.endpoints.iter().enumerate() {
            if e.authority == authority {
                out.push(lb.endpoint_state(i).unwrap().active_health());
            }
        }
    }
    out
}

struct Running {
    router: Arc<Router>,
    probes: Arc<Scripted>,
    board: Arc<HealthBoard>,
    _stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(checks: Vec<HealthCheck>, max_concurrent: usize, clusters: Vec<Cluster>) -> Running {
    let router = Arc::new(Router::new());
    install(&router, clusters);
    let probes = Arc::new(Scripted::default());
    let board = Arc::new(HealthBoard::default());
    let driver = Driver::new(
        checks,
        max_concurrent,
        router.clone(),
        board.clone(),
        Arc::new(probes.clone()),
    );
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(driver.run(stop_rx));
    Running {
        router,
        probes,
        board,
        _stop: stop,
        task,
    }
}

fn tcp_check(service: &str, interval: u64, jitter_ms: u64) -> HealthCheck {
    let mut c = HealthCheck::new(service, CheckKind::Tcp);
    c.interval = Duration::from_secs(interval);
    c.jitter = Duration::from_millis(jitter_ms);
    c
}

#[tokio::test(start_paused = true)]
async fn new_endpoints_are_spread_evenly_over_the_interval_then_probed_every_interval() {
    let ids: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let r = start(
        vec![tcp_check("svc", 10, 0)],
        32,
        vec![cluster("svc", None, 80, &refs)],
    );
    tokio::time::sleep(Duration::from_millis(9_900)).await;
    let mut firsts: Vec<Duration> = Vec::new();
    for id in &ids {
        let probes = r.probes.probes_of(&format!("{id}:80"));
        assert_eq!(probes.len(), 1, "{id} probed once in the first interval");
        firsts.push(probes[0] - t0);
    }
    firsts.sort();
    let expected: Vec<Duration> = (0..10).map(Duration::from_secs).collect();
    assert_eq!(firsts, expected, "one probe a second, not ten at once");
    tokio::time::sleep(Duration::from_secs(20)).await;
    for id in &ids {
        let probes = r.probes.probes_of(&format!("{id}:80"));
        assert_eq!(probes.len(), 3, "{id}: every 10 s");
        assert_eq!(probes[2] - probes[1], Duration::from_secs(10));
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_bound_and_varies() {
    let r = start(
        vec![tcp_check("svc", 10, 2_000)],
        32,
        vec![cluster("svc", None, 80, &["a"])],
    );
    tokio::time::sleep(Duration::from_secs(1_000)).await;
    let probes = r.probes.probes_of("a:80");
    let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 50, "{}", gaps.len());
    assert!(gaps
        .iter()
        .all(|g| *g >= Duration::from_secs(10) && *g <= Duration::from_secs(12)));
    let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 10, "jittered gaps differ: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_when_the_balancer_sees_failing_and_passing() {
    let mut check = tcp_check("svc", 1, 0);
    check.unhealthy_threshold = 3;
    check.healthy_threshold = 2;
    let r = start(vec![check], 32, vec![cluster("svc", None, 80, &["a", "b"])]);
    r.probes.fail("b:80", true);
    // b's probes run at 0.5 s, 1.5 s, 2.5 s, ... (two endpoints over 1 s).
    tokio::time::sleep(Duration::from_millis(1_900)).await;
    assert_eq!(r.probes.probes_of("b:80").len(), 2);
    assert_eq!(seen(&r.router, "b"), [ActiveHealth::Unchecked]);
    assert_eq!(seen(&r.router, "a"), [ActiveHealth::Passing]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen(&r.router, "b"), [ActiveHealth::Failing]);
    let board = r.board.get("b:80").unwrap();
    assert_eq!(board.verdict, Verdict::Failing);
    assert_eq!(board.consecutive_failures, 3);
    assert_eq!(board.last, Some(ProbeOutcome::Fail("scripted".into())));
    assert!(board.last_probe.is_some());
    assert_eq!(board.check, "tcp svc");
    r.probes.fail("b:80", false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen(&r.router, "b"),
        [ActiveHealth::Failing],
        "one pass of two"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen(&r.router, "b"), [ActiveHealth::Passing]);
    assert_eq!(r.board.get("b:80").unwrap().consecutive_passes, 2);
}

#[tokio::test(start_paused = true)]
async fn probes_are_bounded_in_number_and_time() {
    let mut check = tcp_check("svc", 1, 0);
    check.timeout = Duration::from_millis(800);
    let ids: Vec<String> = (0..20).map(|i| format!("10.0.1.{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = start(vec![check], 3, vec![cluster("svc", None, 80, &refs)]);
    *r.probes.takes.lock() = Duration::from_millis(500);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(r.probes.most_running.load(Ordering::SeqCst), 3);
    // Probes slower than the timeout fail, whatever they would answer.
    *r.probes.takes.lock() = Duration::from_secs(5);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let b = r.board.get("10.0.1.0:80").unwrap();
    assert_eq!(
        b.last,
        Some(ProbeOutcome::Fail("timed out after 800ms".into()))
    );
    assert_eq!(b.verdict, Verdict::Failing);
}

#[tokio::test(start_paused = true)]
async fn only_the_clusters_a_check_applies_to_are_probed() {
    let r = start(
        vec![{
            let mut c = tcp_check("svc", 1, 0);
            c.subset = Some("v2".into());
            c
        }],
        32,
        vec![
            cluster("svc", Some("v1"), 80, &["a", "b"]),
            cluster("svc", Some("v2"), 80, &["b", "c"]),
            cluster("other", None, 80, &["d"]),
        ],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(r.probes.probes_of("a:80").is_empty());
    assert!(r.probes.probes_of("d:80").is_empty());
    let b = r.probes.probes_of("b:80");
    assert!(
        (4..=5).contains(&b.len()),
        "b once per interval: {}",
        b.len()
    );
    assert!(!r.probes.probes_of("c:80").is_empty());
    let all: Vec<String> = r.board.all().into_iter().map(|(a, _)| a).collect();
    assert_eq!(all, ["b:80", "c:80"]);
}

/// Long enough for the driver to have looked at a table installed now.
fn after_refresh() -> Duration {
    super::driver::REFRESH + Duration::from_millis(10)
}

#[tokio::test(start_paused = true)]
async fn verdicts_survive_table_swaps_and_gone_endpoints_are_forgotten() {
    let mut check = tcp_check("svc", 1, 0);
    check.unhealthy_threshold = 1;
    let r = start(vec![check], 32, vec![cluster("svc", None, 80, &["a", "b"])]);
    r.probes.fail("b:80", true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seen(&r.router, "b"), [ActiveHealth::Failing]);
    // A new table: b is in a new cluster too, c is new, a is gone.
    install(
        &r.router,
        vec![
            cluster("svc", None, 80, &["b", "c"]),
            cluster("svc", Some("v1"), 80, &["b"]),
        ],
    );
    tokio::time::sleep(after_refresh()).await;
    assert_eq!(seen(&r.router, "b"), [ActiveHealth::Failing; 2]);
    assert!(r.board.get("c:80").is_some(), "c is probed");
    assert!(r.board.get("a:80").is_none(), "a is forgotten");
    let a_probes = r.probes.probes_of("a:80").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        r.probes.probes_of("a:80").len(),
        a_probes,
        "a is not probed"
    );
    assert_eq!(seen(&r.router, "c"), [ActiveHealth::Passing]);
    // The endpoint leaves and comes back: it starts over, unchecked.
    install(&r.router, vec![cluster("svc", None, 80, &["c"])]);
    tokio::time::sleep(after_refresh()).await;
    r.probes.fail("b:80", false);
    *r.probes.takes.lock() = Duration::from_secs(3600);
    install(&r.router, vec![cluster("svc", None, 80, &["b", "c"])]);
    tokio::time::sleep(after_refresh()).await;
    assert_eq!(seen(&r.router, "b"), [ActiveHealth::Unchecked]);
}

#[tokio::test(start_paused = true)]
async fn the_checker_stops_when_told() {
    let r = start(
        vec![tcp_check("svc", 1, 0)],
        32,
        vec![cluster("svc", None, 80, &["a"])],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    r._stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), r.task)
        .await
        .expect("stops at once")
        .expect("no panic");
}

// ---- the protobuf of the gRPC health protocol ----

#[test]
fn health_check_messages_encode_and_decode() {
    assert_eq!(probe::health_check_request(""), b"");
    assert_eq!(probe::health_check_request("db"), b"\x0a\x02db");
    let framed = probe::grpc_frame(b"\x08\x01");
    assert_eq!(&framed[..], b"\x00\x00\x00\x00\x02\x08\x01");
    let msg = probe::grpc_message(&framed).unwrap();
    assert_eq!(probe::serving_status(msg), Ok(1));
    // Unknown fields are skipped; a missing status is UNKNOWN (0).
    assert_eq!(probe::serving_status(b"\x12\x01x\x08\x02"), Ok(2));
    assert_eq!(probe::serving_status(b""), Ok(0));
    assert!(probe::serving_status(b"\x08").is_err());
    assert!(probe::grpc_message(b"\x00\x00\x00\x00\x05\x08").is_err());
    assert!(probe::grpc_message(b"\x01\x00\x00\x00\x00").is_err());
}
