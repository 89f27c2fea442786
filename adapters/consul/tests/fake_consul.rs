//! The Consul adapter's production HTTP code against the protocol-faithful
//! fake agent of the testkit: the shared contract, blocking queries, index
//! resets, health, maintenance, addresses, labels, ACLs, outages and the
//! interest set.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_consul::{ConsulConfig, ConsulRegistry, Interest};
use anymesh_core::config::GoDuration;
use anymesh_core::{
    Change, ChangeSink, Health, Hostname, Labels, MappedRegistry, Mapping, Registry, SourceId,
    SourceStatus,
};
use anymesh_testkit::consul::{Instance, CATALOG};
use anymesh_testkit::contract::{self, ContractHarness, Observer, DEADLINE};
use anymesh_testkit::wait::eventually;
use anymesh_testkit::FakeConsul;
use tokio::sync::{mpsc, watch};

fn config(fake: &FakeConsul) -> ConsulConfig {
    let ms = |n| GoDuration(Duration::from_millis(n));
    let mut c = ConsulConfig::new(fake.url());
    c.wait = GoDuration(Duration::from_secs(1));
    c.min_query_interval = ms(10);
    c.jitter = ms(5);
    c.request_timeout = GoDuration(Duration::from_secs(2));
    c.backoff.initial = ms(20);
    c.backoff.max = ms(200);
    c
}

fn registry(c: ConsulConfig) -> Arc<dyn Registry> {
    match ConsulRegistry::new(SourceId::new("consul"), c, None) {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{e}"),
    }
}

fn watching(fake: &FakeConsul, services: &[&str]) -> Arc<dyn Registry> {
    let mut c = config(fake);
    c.services = services.iter().map(|s| s.to_string()).collect();
    registry(c)
}

fn health_of(obs: &Observer, service: &str) -> Vec<(String, Health)> {
    let snap = obs.catalog().snapshot(0);
    let Ok(host) = Hostname::new(service) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Health)> = snap
        .services
        .get(&host)
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.provenance.native_id.clone(), e.health))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn until_health(obs: &mut Observer, service: &str, want: &[(&str, Health)]) {
    let want: Vec<(String, Health)> = want.iter().map(|(i, h)| (i.to_string(), *h)).collect();
    if health_of(obs, service) == want {
        return;
    }
    let what = format!("{service} health {want:?}");
    let host = Hostname::new(service).expect("test service name");
    obs.until(&what, |_, catalog| {
        let snap = catalog.snapshot(0);
        let mut got: Vec<(String, Health)> = snap
            .services
            .get(&host)
            .map(|s| {
                s.endpoints
                    .iter()
                    .map(|e| (e.provenance.native_id.clone(), e.health))
                    .collect()
            })
            .unwrap_or_default();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got == want
    })
    .await;
}

fn is_error(c: &Change) -> bool {
    matches!(c, Change::Status(SourceStatus::Error { .. }))
}

struct Harness {
    fake: FakeConsul,
}

impl ContractHarness for Harness {
    async fn start_registry(&self) -> Arc<dyn Registry> {
        watching(&self.fake, &["alpha", "beta", "gamma"])
    }
    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels) {
        let mut inst = Instance::new(service, id, address, port);
        inst.meta = labels.clone();
        self.fake.register(inst);
    }
    async fn remove(&self, _service: &str, id: &str) {
        // The contract's ids are unique; find the node that has it.
        for address in [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.5",
            "127.0.0.6",
        ] {
            self.fake.deregister(&format!("node-{address}"), id);
        }
    }
    async fn outage(&self) {
        self.fake.stop();
    }
    async fn recover(&self) {
        self.fake.start_again().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_adapter_contract() {
    let fake = FakeConsul::start().await;
    contract::run(&Harness { fake }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_wakes_on_change_and_a_timeout_sends_nothing() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    let (tx, mut rx) = mpsc::channel(64);
    let reg = watching(&fake, &["web"]);
    let sink = ChangeSink::new(reg.source().clone(), tx);
    let task = tokio::spawn(async move { reg.run(sink).await });
    let first = rx.recv().await.expect("a first change");
    assert!(matches!(&first.change, Change::Reset(v) if v.endpoints.len() == 1));
    let healthy = rx.recv().await.expect("a status");
    assert_eq!(healthy.change, Change::Status(SourceStatus::Healthy));

    // The long-poll is parked in the agent; several `wait`s run out with
    // the same index and nothing is sent.
    eventually("a blocking query on web", || fake.open_blocking("web") == 1).await;
    let polls = || {
        fake.requests()
            .iter()
            .filter(|r| r.path == "/v1/health/service/web")
            .count()
    };
    let before = polls();
    eventually("three more polls of web", || polls() >= before + 3).await;
    assert!(
        rx.try_recv().is_err(),
        "a wait that ran out with the same index must send nothing"
    );
    let r = fake.requests();
    let last = r
        .iter()
        .rev()
        .find(|r| r.path == "/v1/health/service/web")
        .expect("a poll");
    assert!(
        last.query.contains("index=") && last.query.contains("wait=1000ms"),
        "{last:?}"
    );

    // A write wakes the parked query at once.
    fake.register(Instance::new("web", "w2", "127.0.0.2", 8001));
    let got = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("the new instance in time")
        .expect("a change");
    match got.change {
        Change::UpsertEndpoint(ep) => assert_eq!(ep.provenance.native_id, "node-127.0.0.2/w2"),
        other => panic!("expected the new endpoint, got {other:?}"),
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_goes_back_resyncs_with_nothing_stale() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    fake.register(Instance::new("web", "w2", "127.0.0.2", 8001));
    let mut obs = Observer::start(watching(&fake, &["web"]));
    obs.until_endpoints("web", &[("127.0.0.1", 8001), ("127.0.0.2", 8001)])
        .await;
    // Many writes raise the index well above what a reset renumbers to.
    for _ in 0..40 {
        fake.set_node_meta("node-127.0.0.1", "churn", "x");
    }
    eventually("polls parked", || fake.open_blocking("web") == 1).await;
    let high = fake.index();

    // The index drops under the adapter's feet (parked polls keep waiting for
    // an index they will not see soon); then the data changes.
    fake.reset_index();
    fake.deregister("node-127.0.0.1", "w1");
    fake.register(Instance::new("web", "w3", "127.0.0.3", 8001));
    assert!(fake.index() < high, "the fake's index went back");
    obs.until_endpoints("web", &[("127.0.0.2", 8001), ("127.0.0.3", 8001)])
        .await;

    // And changes keep flowing at the low index.
    fake.deregister("node-127.0.0.2", "w2");
    obs.until_endpoints("web", &[("127.0.0.3", 8001)]).await;

    // An agent restart (connections dropped, index reset) is a full resync.
    let resets = |obs: &Observer| {
        obs.log
            .iter()
            .filter(|c| matches!(c, Change::Reset(_)))
            .count()
    };
    let before = resets(&obs);
    fake.restart().await;
    fake.register(Instance::new("web", "w4", "127.0.0.4", 8001));
    obs.until_endpoints("web", &[("127.0.0.3", 8001), ("127.0.0.4", 8001)])
        .await;
    obs.until("a healthy status", |c, _| {
        matches!(c, Change::Status(SourceStatus::Healthy))
    })
    .await;
    assert!(resets(&obs) > before, "a restart must lead to a Reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_filtering_and_maintenance() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    fake.register(Instance::new("web", "w2", "127.0.0.2", 8001));
    let mut obs = Observer::start(watching(&fake, &["web"]));
    use Health::{Healthy, Unhealthy};
    let (w1, w2) = ("node-127.0.0.1/w1", "node-127.0.0.2/w2");
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Healthy)]).await;

    fake.set_check("node-127.0.0.1", "w1", "critical");
    until_health(&mut obs, "web", &[(w1, Unhealthy), (w2, Healthy)]).await;
    fake.set_check("node-127.0.0.1", "w1", "passing");
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Healthy)]).await;
    // Warning is opt-in.
    fake.set_check("node-127.0.0.1", "w1", "warning");
    until_health(&mut obs, "web", &[(w1, Unhealthy), (w2, Healthy)]).await;
    fake.set_check("node-127.0.0.1", "w1", "passing");
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Healthy)]).await;

    // A node check counts too.
    fake.set_node_health("node-127.0.0.2", "critical");
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Unhealthy)]).await;
    fake.set_node_health("node-127.0.0.2", "passing");
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Healthy)]).await;

    // Maintenance: of an instance, then of a whole node.
    fake.service_maintenance("node-127.0.0.1", "w1", Some("deploying"));
    until_health(&mut obs, "web", &[(w1, Unhealthy), (w2, Healthy)]).await;
    fake.service_maintenance("node-127.0.0.1", "w1", None);
    fake.node_maintenance("node-127.0.0.2", Some("kernel upgrade"));
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Unhealthy)]).await;
    fake.node_maintenance("node-127.0.0.2", None);
    until_health(&mut obs, "web", &[(w1, Healthy), (w2, Healthy)]).await;

    // With `include_warning`, a warning instance is served.
    let mut c = config(&fake);
    c.services = vec!["web".into()];
    c.include_warning = true;
    fake.set_check("node-127.0.0.1", "w1", "warning");
    let mut lenient = Observer::start(registry(c));
    until_health(&mut lenient, "web", &[(w1, Healthy), (w2, Healthy)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_falls_back_to_the_node_and_tags_become_labels() {
    let fake = FakeConsul::start().await;
    let mut bare = Instance::new("web", "w1", "127.0.0.9", 8001).on_node("vm-1", "127.0.0.7");
    bare.address.clear();
    fake.register(bare.tags(&["v2", "canary"]).meta("team", "pay"));
    fake.register(Instance::new("web", "w2", "127.0.0.8", 8001).tags(&["version=v3"]));
    fake.set_node_meta("vm-1", "rack", "r7");
    let mapping: Mapping = serde_yaml_ng::from_str(
        "labels:\n  key_value_tags: true\n  tags: [{match: '^v[0-9]+$', key: version}]\n",
    )
    .expect("mapping");
    let reg = MappedRegistry::wrap(watching(&fake, &["web"]), Arc::new(mapping));
    let mut obs = Observer::start(reg);
    obs.until_endpoints("web", &[("127.0.0.7", 8001), ("127.0.0.8", 8001)])
        .await;
    obs.until("the node meta", |_, c| {
        let snap = c.snapshot(0);
        snap.services.values().any(|s| {
            s.endpoints
                .iter()
                .any(|e| e.labels.get("rack").map(String::as_str) == Some("r7"))
        })
    })
    .await;
    let snap = obs.catalog().snapshot(0);
    let web = &snap.services[&Hostname::new("web").expect("host")];
    let by_addr = |a: &str| {
        web.endpoints
            .iter()
            .find(|e| e.address == a)
            .map(|e| e.labels.clone())
            .unwrap_or_default()
    };
    let l = by_addr("127.0.0.7");
    assert_eq!(l.get("version").map(String::as_str), Some("v2"), "{l:?}");
    assert_eq!(l.get("team").map(String::as_str), Some("pay"));
    assert_eq!(
        l.get("canary").map(String::as_str),
        Some(""),
        "an unmapped tag stays a tag"
    );
    let l = by_addr("127.0.0.8");
    assert_eq!(l.get("version").map(String::as_str), Some("v3"), "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_an_error_and_a_rotated_one_recovers() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    fake.require_token(Some("right-token"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, "wrong-token\n").expect("write token");
    let mut c = config(&fake);
    c.services = vec!["web".into()];
    c.token_file = Some(file.clone());
    let mut obs = Observer::start(registry(c));
    let seen = obs.until("an error status", |c, _| is_error(c)).await;
    let Some(Change::Status(SourceStatus::Error { message })) = seen.last() else {
        panic!("an error status: {seen:?}");
    };
    assert!(
        message.contains("403") && message.contains("ACL not found"),
        "{message}"
    );
    assert!(
        !message.contains("wrong-token"),
        "the token is never shown: {message}"
    );
    assert!(fake.requests().iter().all(|r| r.had_token));

    std::fs::write(&file, "right-token").expect("rotate token");
    obs.until_endpoints("web", &[("127.0.0.1", 8001)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_fails_or_stalls_keeps_the_last_good_view() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    let mut c = config(&fake);
    c.services = vec!["web".into()];
    c.request_timeout = GoDuration(Duration::from_millis(300));
    let mut obs = Observer::start(registry(c));
    obs.until_endpoints("web", &[("127.0.0.1", 8001)]).await;

    // 500s: error statuses, the view stays.
    fake.fail(Some(500));
    let seen = obs.until("an error status", |c, _| is_error(c)).await;
    assert!(!seen.iter().any(|c| matches!(c, Change::Reset(_))));
    assert_eq!(obs.endpoints("web"), vec![("127.0.0.1".to_string(), 8001)]);
    fake.register(Instance::new("web", "w2", "127.0.0.2", 8001));
    fake.fail(None);
    obs.until_endpoints("web", &[("127.0.0.1", 8001), ("127.0.0.2", 8001)])
        .await;

    // A stalled agent: the request timeout turns it into errors too.
    fake.stall(true);
    obs.until("an error status while stalled", |c, _| is_error(c))
        .await;
    assert_eq!(obs.endpoints("web").len(), 2, "the last good view stays");
    fake.deregister("node-127.0.0.1", "w1");
    fake.stall(false);
    obs.until_endpoints("web", &[("127.0.0.2", 8001)]).await;
    assert!(obs.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_services_of_interest_get_a_long_poll() {
    let fake = FakeConsul::start().await;
    for i in 0..50 {
        fake.register(Instance::new(
            &format!("svc-{i}"),
            &format!("s{i}"),
            "127.0.0.1",
            9000 + i,
        ));
    }
    let (tx, rx) = watch::channel(Interest::hosts(["svc-3"]));
    let reg = ConsulRegistry::new(SourceId::new("consul"), config(&fake), None)
        .expect("registry")
        .with_interest(rx, Arc::new(Mapping::default()));
    let mut obs = Observer::start(Arc::new(reg));
    obs.until_endpoints("svc-3", &[("127.0.0.1", 9003)]).await;
    let only = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    eventually("one long-poll, on svc-3", || {
        fake.blocked_services() == only(&["svc-3"]) && fake.open_blocking(CATALOG) == 1
    })
    .await;
    assert!(obs.endpoints("svc-7").is_empty());
    assert!(
        fake.requests()
            .iter()
            .all(|r| !r.path.starts_with("/v1/health/service/") || r.path.ends_with("/svc-3")),
        "unreferenced services are never read"
    );

    // The routing starts referencing svc-7 (and stops referencing svc-3).
    tx.send_replace(Interest::hosts(["svc-7"]));
    obs.until_endpoints("svc-7", &[("127.0.0.1", 9007)]).await;
    obs.until_endpoints("svc-3", &[]).await;
    eventually("the long-poll moved to svc-7", || {
        fake.blocked_services() == only(&["svc-7"])
    })
    .await;

    // A referenced service that appears later in the catalog gets one too.
    tx.send_replace(Interest::hosts(["svc-7", "late"]));
    fake.register(Instance::new("late", "l1", "127.0.0.2", 9100));
    obs.until_endpoints("late", &[("127.0.0.2", 9100)]).await;
    eventually("long-polls on svc-7 and late", || {
        fake.blocked_services() == only(&["late", "svc-7"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_services_three_routed_four_long_polls() {
    let fake = FakeConsul::start().await;
    for i in 0..5000u16 {
        fake.register(Instance::new(
            &format!("app-{i}"),
            &format!("i{i}"),
            "127.0.0.1",
            10000 + i,
        ));
    }
    let (_tx, rx) = watch::channel(Interest::hosts(["app-10", "app-2000", "app-4999"]));
    let reg = ConsulRegistry::new(SourceId::new("consul"), config(&fake), None)
        .expect("registry")
        .with_interest(rx, Arc::new(Mapping::default()));
    let mut obs = Observer::start(Arc::new(reg));
    obs.until_endpoints("app-4999", &[("127.0.0.1", 14999)])
        .await;
    eventually("three service long-polls and the catalog's", || {
        let (services, catalog) = (fake.blocked_services(), fake.open_blocking(CATALOG));
        match services.len() == 3 && catalog == 1 {
            true => Ok(()),
            false => Err(format!("services {services:?}, catalog {catalog}")),
        }
    })
    .await;
    let health_reads: BTreeSet<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/health/service/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(health_reads.len(), 3, "{health_reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datacenter_consistency_namespace_and_partition_go_to_the_agent() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    fake.register_in("dc2", Instance::new("web", "w2", "127.0.0.2", 8001));
    let mut c = config(&fake);
    c.services = vec!["web".into()];
    c.datacenters = vec!["dc1".into(), "dc2".into()];
    c.consistency = anymesh_adapter_consul::Consistency::Stale;
    c.namespace = Some("team-a".into());
    c.partition = Some("p1".into());
    let sources = c.sources("consul");
    assert_eq!(sources[1].0.as_str(), "consul/dc2");
    let (source, dc) = sources[1].clone();
    let reg = ConsulRegistry::new(source, c, dc).expect("registry");
    let mut obs = Observer::start(Arc::new(reg));
    obs.until_endpoints("web", &[("127.0.0.2", 8001)]).await;
    let r = fake.requests();
    let q = &r
        .iter()
        .find(|r| r.path == "/v1/health/service/web")
        .expect("a read")
        .query;
    for part in ["dc=dc2", "stale", "ns=team-a", "partition=p1"] {
        assert!(q.split('&').any(|p| p == part), "{part} in {q}");
    }
}

/// The documentation writes a service's tagged addresses `address`/`port`;
/// the agent (Go's `api.ServiceAddress`, no json tags) writes `Address`/`Port`.
fn agent_spelling(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if k.ends_with("TaggedAddresses") {
                        if let Some(tagged) = child.as_object_mut() {
                            for a in tagged.values_mut() {
                                if a.is_object() {
                                    *a = serde_json::json!({"Address": a["address"], "Port": a["port"]});
                                }
                            }
                        }
                    } else {
                        walk(child);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The keys of every object in `fixture`, found in `served` at the same place.
fn assert_same_shape(path: &str, fixture: &serde_json::Value, served: &serde_json::Value) {
    use serde_json::Value;
    match (fixture, served) {
        (Value::Object(f), Value::Object(s)) => {
            for (k, fv) in f {
                let Some(sv) = s.get(k) else {
                    panic!("{path}.{k} is in the fixture but the fake does not serve it");
                };
                // Maps keyed by data (meta, tagged addresses) differ in keys.
                if !matches!(k.as_str(), "Meta" | "NodeMeta" | "ServiceMeta") {
                    assert_same_shape(&format!("{path}.{k}"), fv, sv);
                }
            }
        }
        (Value::Array(f), Value::Array(s)) => {
            if let (Some(f0), Some(s0)) = (f.first(), s.first()) {
                assert_same_shape(&format!("{path}[0]"), f0, s0);
            }
        }
        (f, s) => {
            let kind = |v: &Value| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            assert!(
                f.is_null() || s.is_null() || kind(f) == kind(s),
                "{path}: the fixture has a {} where the fake serves a {}",
                kind(f),
                kind(s)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_serves_the_documented_shapes() {
    use anymesh_testkit::fixtures;
    let fake = FakeConsul::start().await;
    let mut inst = Instance::new("web", "w1", "127.0.0.1", 8000).tags(&["primary"]);
    inst.tagged_addresses
        .insert("lan".into(), ("127.0.0.1".into(), 8000));
    inst.tagged_addresses
        .insert("wan".into(), ("198.18.1.2".into(), 80));
    fake.register(inst.meta("redis_version", "4.0"));
    fake.set_node_meta("node-127.0.0.1", "instance_type", "t2.medium");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("{}{path}", fake.url()));
        async move {
            let resp = req.send().await.expect("fake answers");
            assert!(resp.headers().contains_key("x-consul-index"));
            assert_eq!(
                resp.headers()
                    .get("x-consul-knownleader")
                    .and_then(|v| v.to_str().ok()),
                Some("true")
            );
            resp.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    let served = get("/v1/health/service/web").await;
    let fixture = agent_spelling(fixtures::json("consul/health_service_docs_current.json"));
    assert_same_shape("health", &fixture, &served);
    // The agent writes tagged addresses capitalised; the docs lower-case them.
    assert_eq!(served[0]["Service"]["TaggedAddresses"]["wan"]["Port"], 80);
    let served = get("/v1/catalog/service/web").await;
    let fixture = agent_spelling(fixtures::json("consul/catalog_service_web_docs.json"));
    assert_same_shape("catalog service", &fixture, &served);
    let served = get("/v1/catalog/services").await;
    assert_eq!(served["web"], serde_json::json!(["primary"]));
    assert_eq!(served["consul"], serde_json::json!([]));
    let empty = get("/v1/health/service/nothing-here").await;
    assert_eq!(
        empty,
        fixtures::json("consul/health_service_unknown_service_empty.json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    use anymesh_adapter_consul::TlsConfig;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = anymesh_testkit::TestPki::generate(dir.path()).expect("test certificates");
    let fake = FakeConsul::start_tls(pki.server_config(true)).await;
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    let tls = |cert: bool| TlsConfig {
        ca_file: Some(pki.ca.clone()),
        cert_file: cert.then(|| pki.client_cert.clone()),
        key_file: cert.then(|| pki.client_key.clone()),
    };

    let mut c = config(&fake);
    c.services = vec!["web".into()];
    c.tls = Some(tls(true));
    let mut obs = Observer::start(registry(c.clone()));
    obs.until_endpoints("web", &[("127.0.0.1", 8001)]).await;

    // Without a client certificate the agent refuses the handshake.
    c.tls = Some(tls(false));
    let mut refused = Observer::start(registry(c.clone()));
    refused.until("an error status", |c, _| is_error(c)).await;
    assert!(refused.endpoints("web").is_empty());

    // Without the private CA the agent's certificate is not trusted.
    c.tls = None;
    let mut untrusted = Observer::start(registry(c));
    let seen = untrusted.until("an error status", |c, _| is_error(c)).await;
    let Some(Change::Status(SourceStatus::Error { message })) = seen.last() else {
        panic!("an error status: {seen:?}");
    };
    assert!(
        message.contains(&fake.url()),
        "the message names the agent: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_agent_keeps_consuls_protocol() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", fake.url());
    let index = |r: &reqwest::Response| -> u64 {
        r.headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("X-Consul-Index")
    };
    let r = http
        .get(url("/v1/health/service/web"))
        .send()
        .await
        .expect("get");
    let i = index(&r);

    // A blocking query parks until a write touches the service.
    let parked = tokio::spawn(
        http.get(url(&format!("/v1/health/service/web?index={i}&wait=60s")))
            .send(),
    );
    eventually("the query is parked", || fake.open_blocking("web") == 1).await;
    fake.register(Instance::new("other", "o1", "127.0.0.2", 8002));
    assert!(
        !parked.is_finished(),
        "a write to another service does not wake it"
    );
    fake.set_check("node-127.0.0.1", "w1", "critical");
    let r = parked.await.expect("join").expect("answer");
    let woke = index(&r);
    assert!(woke > i);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body[0]["Checks"][1]["Status"], "critical");

    // A wait that runs out answers with the same index.
    let r = http
        .get(url(&format!(
            "/v1/health/service/web?index={woke}&wait=50ms"
        )))
        .send()
        .await
        .expect("get");
    assert_eq!(index(&r), woke);

    // ?passing filters on the server.
    let r = http
        .get(url("/v1/health/service/web?passing"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!([])
    );

    // An unknown datacenter, a failing agent, ACLs.
    let r = http
        .get(url("/v1/catalog/services?dc=mars"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.expect("body"), "No path to datacenter");
    fake.fail(Some(500));
    let r = http
        .get(url("/v1/catalog/services"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 500);
    fake.fail(None);
    fake.require_token(Some("t0k"));
    let r = http
        .get(url("/v1/catalog/services"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let r = http
        .get(url("/v1/catalog/services"))
        .header("X-Consul-Token", "nope")
        .send()
        .await
        .expect("get");
    assert_eq!(
        (r.status().as_u16(), r.text().await.expect("body")),
        (403, "ACL not found".into())
    );
    let r = http
        .get(url("/v1/catalog/services"))
        .header("X-Consul-Token", "t0k")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let before = index(&r);

    // A restart: the index starts again low, the data is kept.
    fake.restart().await;
    let r = http
        .get(url("/v1/catalog/services"))
        .header("X-Consul-Token", "t0k")
        .send()
        .await
        .expect("get after restart");
    assert!(index(&r) < before, "the index went back");
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body.get("web").is_some() && body.get("other").is_some());
}

/// The mesh proxy of each endpoint of `service`, by native id.
fn mesh_of(obs: &Observer, service: &str) -> Vec<(String, Option<anymesh_core::model::MeshProxy>)> {
    let snap = obs.catalog().snapshot(0);
    let host = Hostname::new(service).expect("test service name");
    let mut out: Vec<_> = snap
        .services
        .get(&host)
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.provenance.native_id.clone(), e.mesh.clone()))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Connect sidecars registered as `connect.sidecar_service` does give the
/// instances they front their mesh proxy: the `<service>-sidecar-proxy`
/// service is followed with its service (one more long-poll, only where a
/// sidecar service exists), its instances are no endpoints, and its
/// registrations and removals update the endpoints they front.
#[tokio::test]
async fn connect_sidecars_give_their_instances_a_mesh_proxy() {
    use anymesh_core::model::MeshProxy;
    let fake = FakeConsul::start().await;
    let a = Instance::new("web", "web-a", "10.0.0.1", 8080);
    let b = Instance::new("web", "web-b", "10.0.0.2", 8080);
    fake.register(a.clone());
    fake.register(b.clone());
    fake.register(Instance::sidecar_for(&a, 21000));
    fake.register(Instance::new("db", "db-1", "10.0.0.3", 5432));
    let (_tx, rx) = watch::channel(Interest::hosts(["web"]));
    let reg = ConsulRegistry::new(SourceId::new("consul"), config(&fake), None)
        .expect("registry")
        .with_interest(rx, Arc::new(Mapping::default()));
    let mut obs = Observer::start(Arc::new(reg));
    obs.until_endpoints("web", &[("10.0.0.1", 8080), ("10.0.0.2", 8080)])
        .await;
    let proxy = |port| {
        Some(MeshProxy::new(
            port,
            Some("default".into()),
            Some("web".into()),
        ))
    };
    assert_eq!(
        mesh_of(&obs, "web"),
        [
            ("node-10.0.0.1/web-a".to_string(), proxy(21000)),
            ("node-10.0.0.2/web-b".to_string(), None),
        ]
    );
    assert!(
        obs.endpoints("web-sidecar-proxy").is_empty(),
        "a proxy is no endpoint of its own"
    );
    let only = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    eventually("long-polls on web and its sidecar service", || {
        fake.blocked_services() == only(&["web", "web-sidecar-proxy"])
    })
    .await;

    // web-b gets its sidecar; web-a's goes away.
    fake.register(Instance::sidecar_for(&b, 21001));
    let host = Hostname::new("web").expect("host");
    let has = |catalog: &anymesh_core::CatalogState, addr: &str, port: Option<u16>| {
        let snap = catalog.snapshot(0);
        snap.services.get(&host).is_some_and(|s| {
            s.endpoints
                .iter()
                .any(|e| e.address == addr && e.mesh.as_ref().map(|m| m.port) == port)
        })
    };
    obs.until("web-b behind its sidecar", |_, c| {
        has(c, "10.0.0.2", Some(21001))
    })
    .await;
    fake.deregister("node-10.0.0.1", "web-a-sidecar-proxy");
    obs.until("web-a in plaintext again", |_, c| has(c, "10.0.0.1", None))
        .await;

    // A sidecar listening elsewhere cannot be expressed: the instance is
    // refused and named, never reached in plaintext.
    fake.register(Instance::sidecar_for(&a, 21000).address("10.0.0.9"));
    obs.until("web-a refused", |c, _| {
        matches!(c, Change::Status(SourceStatus::Degraded { message })
            if message.contains("its Connect sidecar node-10.0.0.1/web-a-sidecar-proxy listens on 10.0.0.9"))
    })
    .await;
    assert_eq!(obs.endpoints("web"), [("10.0.0.2".to_string(), 8080)]);
}

/// Shops without Connect mark proxies with service meta; an unusable value
/// refuses the instance and says why.
#[tokio::test]
async fn mesh_meta_keys_without_connect() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    let fake = FakeConsul::start().await;
    fake.register(
        Instance::new("api", "api-1", "10.0.0.1", 8080)
            .meta("anymesh-namespace", "shop")
            .meta("anymesh-service-account", "api"),
    );
    fake.register(
        Instance::new("api", "api-2", "10.0.0.2", 8080).meta("anymesh-proxy-port", "15001"),
    );
    fake.register(Instance::new("api", "api-3", "10.0.0.3", 8080).meta("anymesh-proxy-port", "-"));
    let mut obs = Observer::start(watching(&fake, &["api"]));
    obs.until("api-3 refused", |c, _| {
        matches!(c, Change::Status(SourceStatus::Degraded { message })
            if message.contains(r#"instance node-10.0.0.3/api-3: meta anymesh-proxy-port "-": not a port number 1..=65535"#))
    })
    .await;
    assert_eq!(
        mesh_of(&obs, "api"),
        [
            (
                "node-10.0.0.1/api-1".to_string(),
                Some(MeshProxy::new(
                    DEFAULT_MESH_PORT,
                    Some("shop".into()),
                    Some("api".into())
                ))
            ),
            (
                "node-10.0.0.2/api-2".to_string(),
                Some(MeshProxy::new(
                    15001,
                    Some("default".into()),
                    Some("api".into())
                ))
            ),
        ]
    );
}
