//! The Eureka adapter's production HTTP code against the fake Eureka server
//! of the testkit (real HTTP on loopback, real state, Eureka's delta and
//! hashcode rules).

// Test helpers outside `#[test]` functions: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anymesh_adapter_eureka::{EurekaConfig, EurekaRegistry, Status};
use anymesh_core::catalog::GuardSettings;
use anymesh_core::config::GoDuration;
use anymesh_core::{
    CatalogState, Change, Health, Hostname, Labels, Registry, SourceId, SourceStatus, SourcedChange,
};
use anymesh_testkit::contract::{self, ContractHarness, Observer};
use anymesh_testkit::eureka::Shape;
use anymesh_testkit::wait::eventually;
use anymesh_testkit::{FakeEureka, FakeInstance, TcpRelay};

/// Fast polling and short timeouts, so tests take fractions of a second.
fn config(servers: &[String]) -> EurekaConfig {
    let mut c = EurekaConfig::new(servers.iter().cloned());
    c.refresh_interval = GoDuration(Duration::from_millis(50));
    c.request_timeout = GoDuration(Duration::from_secs(2));
    c.backoff.initial = GoDuration(Duration::from_millis(20));
    c.backoff.max = GoDuration(Duration::from_millis(200));
    c
}

fn registry(c: EurekaConfig) -> Arc<dyn Registry> {
    Arc::new(EurekaRegistry::new(SourceId::new("eureka"), c).unwrap())
}

fn start(urls: &[String]) -> Observer {
    Observer::start(registry(config(urls)))
}

/// The health of the endpoint whose native id ends with `id`.
fn health(obs: &Observer, service: &str, id: &str) -> Option<Health> {
    let snap = obs.catalog().snapshot(0);
    let svc = snap.services.get(&Hostname::new(service).unwrap())?;
    svc.endpoints
        .iter()
        .find(|e| e.provenance.native_id.ends_with(&format!("/{id}")))
        .map(|e| e.health)
}

async fn until_health(obs: &mut Observer, service: &str, id: &str, want: Health) {
    if health(obs, service, id) == Some(want) {
        return;
    }
    let what = format!("{service}/{id} to be {want:?}");
    let (service, id) = (service.to_string(), id.to_string());
    let host = Hostname::new(&service).unwrap();
    obs.until(&what, |_, catalog| {
        let snap = catalog.snapshot(0);
        snap.services.get(&host).is_some_and(|s| {
            s.endpoints
                .iter()
                .any(|e| e.provenance.native_id.ends_with(&format!("/{id}")) && e.health == want)
        })
    })
    .await;
}

fn is_error(c: &Change) -> bool {
    matches!(c, Change::Status(SourceStatus::Error { .. }))
}

// ---- the contract --------------------------------------------------------------

/// The adapter reaches the fake through a relay; an outage cuts the relay,
/// so the harness can still register and cancel while the adapter cannot read.
struct Harness {
    eureka: FakeEureka,
    relay: TcpRelay,
}

impl ContractHarness for Harness {
    async fn start_registry(&self) -> Arc<dyn Registry> {
        registry(config(&[format!("{}/eureka", self.relay.url())]))
    }
    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels) {
        let mut inst = FakeInstance::new(service, id, address, port);
        inst.metadata = labels.clone();
        self.eureka.register(inst);
    }
    async fn remove(&self, service: &str, id: &str) {
        self.eureka.cancel(service, id);
    }
    async fn outage(&self) {
        self.relay.cut();
    }
    async fn recover(&self) {
        self.relay.restore();
    }
}

#[tokio::test]
async fn passes_the_adapter_contract() {
    let eureka = FakeEureka::start().await;
    let relay = TcpRelay::start(eureka.addr()).await;
    contract::run(&Harness { eureka, relay }).await;
}

// ---- delta and reconciliation -----------------------------------------------------

#[tokio::test]
async fn deltas_add_modify_and_delete_without_full_fetches() {
    for shape in [Shape::Modern, Shape::Legacy] {
        let e = FakeEureka::start().await;
        e.set_shape(shape);
        e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080).with_vip("web.vip.test"));
        let mut obs = start(&[e.url()]);
        match obs.next().await {
            Change::Reset(v) => {
                assert_eq!(v.endpoints.len(), 1);
                assert_eq!(v.services[0].aliases[0].as_str(), "web.vip.test");
            }
            other => panic!("{other:?}"),
        }

        e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8081));
        obs.until_endpoints("web", &[("10.0.0.1", 8080), ("10.0.0.2", 8081)])
            .await;
        assert!(e.set_metadata("web", "w2", "version", "v2"));
        obs.until("w2 relabelled", |c, _| {
            matches!(c, Change::UpsertEndpoint(ep) if ep.labels.get("version").map(String::as_str) == Some("v2"))
        })
        .await;
        assert!(e.cancel("web", "w1"));
        obs.until_endpoints("web", &[("10.0.0.2", 8081)]).await;
        // The VIP alias is gone with the instance that declared it.
        let snap = obs.catalog().snapshot(0);
        assert!(snap.aliases.is_empty(), "{shape:?}: {:?}", snap.aliases);

        assert!(e.counts().delta >= 3, "{shape:?}: {:?}", e.counts());
        assert_eq!(
            e.counts().full,
            1,
            "{shape:?}: only deltas after the first fetch"
        );
        assert!(!obs
            .log
            .iter()
            .skip(1)
            .any(|c| matches!(c, Change::Reset(_))));
    }
}

#[tokio::test]
async fn a_hashcode_mismatch_triggers_a_full_fetch() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    let mut obs = start(&[e.url()]);
    assert!(matches!(obs.next().await, Change::Reset(_)));
    eventually("a delta", || e.counts().delta > 0).await;
    assert_eq!(e.counts().full, 1);

    // A change the delta queue loses: only the hashcode tells.
    e.lose_changes(true);
    e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080));
    let seen = obs
        .until("a Reset from the full fetch", |c, _| {
            matches!(c, Change::Reset(_))
        })
        .await;
    assert!(
        !seen.iter().any(|c| matches!(c, Change::UpsertEndpoint(_))),
        "nothing from a mismatching delta is applied: {seen:?}"
    );
    assert_eq!(obs.endpoints("web").len(), 2);
    assert_eq!(e.counts().full, 2);

    // A server whose hashcode never matches is fully fetched at every poll.
    e.lose_changes(false);
    e.wrong_hashcode(true);
    eventually("repeated full fetches", || e.counts().full >= 5).await;
    e.wrong_hashcode(false);
    let full = e.counts().full;
    let delta = e.counts().delta;
    eventually("deltas again", || e.counts().delta >= delta + 3).await;
    assert!(e.counts().full <= full + 1, "{:?}", e.counts());
}

#[tokio::test]
async fn only_up_instances_are_eligible_and_overrides_are_honoured() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080).with_status("STARTING"));
    let mut overridden = FakeInstance::new("web", "w3", "10.0.0.3", 8080);
    overridden.overridden_status = "OUT_OF_SERVICE".into();
    e.register(overridden);
    let mut obs = start(&[e.url()]);
    until_health(&mut obs, "web", "w1", Health::Healthy).await;
    assert_eq!(health(&obs, "web", "w2"), Some(Health::Unhealthy));
    assert_eq!(
        health(&obs, "web", "w3"),
        Some(Health::Unhealthy),
        "status UP, overridden OUT_OF_SERVICE"
    );

    // Taken out of service through the status override, then put back.
    assert!(e.set_status("web", "w1", "OUT_OF_SERVICE"));
    until_health(&mut obs, "web", "w1", Health::Unhealthy).await;
    let snap = obs.catalog().snapshot(0);
    let svc = snap.services.get(&Hostname::new("web").unwrap()).unwrap();
    let w1 = svc
        .endpoints
        .iter()
        .find(|e| e.address == "10.0.0.1")
        .unwrap();
    assert_eq!(w1.provenance.raw_labels["eureka.status"], "OUT_OF_SERVICE");
    assert!(e.clear_status_override("web", "w1", "UP"));
    until_health(&mut obs, "web", "w1", Health::Healthy).await;
    // An override wins over the instance's own status.
    assert!(e.set_status("web", "w1", "UP"));
    assert!(e.set_own_status("web", "w1", "DOWN"));
    let seen = obs
        .until("w1 reported DOWN", |c, _| {
            matches!(c, Change::UpsertEndpoint(ep)
                if ep.address == "10.0.0.1" && ep.provenance.raw_labels["eureka.status"] == "DOWN")
        })
        .await;
    let Some(Change::UpsertEndpoint(w1)) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(w1.health, Health::Healthy, "overridden UP");
    assert!(e.clear_status_override("web", "w1", "DOWN"));
    until_health(&mut obs, "web", "w1", Health::Unhealthy).await;

    // STARTING can be made eligible.
    let mut c = config(&[e.url()]);
    c.eligible_statuses = vec![Status::Up, Status::Starting];
    let mut obs = Observer::start(registry(c));
    until_health(&mut obs, "web", "w2", Health::Healthy).await;
}

// ---- servers failing ---------------------------------------------------------------

/// A URL where nothing listens.
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/eureka")
}

#[tokio::test]
async fn fails_over_to_the_next_server() {
    let a = FakeEureka::start().await;
    let b = FakeEureka::start().await;
    for e in [&a, &b] {
        e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    }
    // The first server is down from the start.
    let mut obs = start(&[dead_url().await, b.url()]);
    assert!(matches!(obs.next().await, Change::Reset(v) if v.endpoints.len() == 1));
    assert_eq!(b.counts().full, 1);

    // Two live servers: the first fails; the adapter moves to the second
    // without the source ever reporting an error.
    let mut obs = start(&[a.url(), b.url()]);
    assert!(matches!(obs.next().await, Change::Reset(_)));
    eventually("deltas from a", || a.counts().delta > 0).await;
    let b_before = b.counts();
    a.fail_with(Some(503));
    b.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080));
    obs.until_endpoints("web", &[("10.0.0.1", 8080), ("10.0.0.2", 8080)])
        .await;
    assert!(b.counts().delta + b.counts().full > b_before.delta + b_before.full);
    assert!(!obs.log.iter().any(is_error), "{:?}", obs.log);
    // It stays on the server that answers.
    let a_failed = a.counts().failed;
    eventually("more deltas from b", || {
        b.counts().delta >= b_before.delta + 3
    })
    .await;
    assert!(a.counts().failed <= a_failed + 1);
}

#[tokio::test]
async fn an_outage_keeps_the_last_good_view_then_recovers() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    let mut obs = start(&[e.url()]);
    assert!(matches!(obs.next().await, Change::Reset(_)));

    for (what, break_it, heal) in [
        (
            "500",
            Box::new(|| e.fail_with(Some(500))) as Box<dyn Fn()>,
            Box::new(|| e.fail_with(None)) as Box<dyn Fn()>,
        ),
        (
            "a stall",
            Box::new(|| e.stall(true)),
            Box::new(|| e.stall(false)),
        ),
    ] {
        break_it();
        let seen = obs
            .until(&format!("an error during {what}"), |c, _| is_error(c))
            .await;
        assert!(!seen.iter().any(|c| matches!(c, Change::Reset(_))));
        let Some(Change::Status(SourceStatus::Error { message })) = seen.last() else {
            panic!("{seen:?}")
        };
        assert!(
            message.contains(&e.url()),
            "the error names the server: {message}"
        );
        assert_eq!(
            obs.endpoints("web"),
            vec![("10.0.0.1".into(), 8080)],
            "{what}"
        );
        assert!(obs.source_info().stale_since.is_some());
        e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080));
        heal();
        obs.until("a Reset after recovery", |c, _| {
            matches!(c, Change::Reset(_))
        })
        .await;
        assert_eq!(obs.endpoints("web").len(), 2, "{what}");
        obs.until("healthy again", |c, _| {
            matches!(c, Change::Status(SourceStatus::Healthy))
        })
        .await;
        assert!(e.cancel("web", "w2"));
        obs.until_endpoints("web", &[("10.0.0.1", 8080)]).await;
    }
}

/// A server restarted empty answers an empty registry: the adapter passes
/// it on (a Reset), and the catalog's mass-deregistration guard keeps
/// serving the endpoints for its grace period.
#[tokio::test]
async fn an_empty_registry_after_data_is_held_by_the_guard() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080));
    let mut obs = start(&[e.url()]);
    assert!(matches!(obs.next().await, Change::Reset(_)));
    e.restart_empty();
    obs.until(
        "an empty Reset",
        |c, _| matches!(c, Change::Reset(v) if v.endpoints.is_empty()),
    )
    .await;

    let source = SourceId::new("eureka");
    let guard = GuardSettings {
        max_removal_share: 0.5,
        grace: Duration::from_secs(60),
    };
    let mut catalog = CatalogState::new([source.clone()]).with_guard(&source, guard);
    for change in &obs.log {
        catalog.apply(SourcedChange {
            source: source.clone(),
            change: change.clone(),
            at: SystemTime::now(),
        });
    }
    let snap = catalog.snapshot(1);
    let web = snap.services.get(&Hostname::new("web").unwrap()).unwrap();
    assert_eq!(web.endpoints.len(), 2, "held by the guard");
    assert_eq!(snap.sources[0].held_endpoints, 2);
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_rejection_is_reported_clearly() {
    let e = FakeEureka::start().await;
    e.require_auth("mesh", "right-password");
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");

    // Without credentials, then with wrong ones.
    let mut obs = start(&[e.url()]);
    let seen = obs.until("an error", |c, _| is_error(c)).await;
    let msg = format!("{:?}", seen.last());
    assert!(
        msg.contains("requires authentication") && msg.contains("401"),
        "{msg}"
    );
    std::fs::write(&file, "wrong-password\n").unwrap();
    let mut c = config(&[e.url()]);
    c.auth = Some(anymesh_adapter_eureka::AuthConfig {
        user: "mesh".into(),
        password_file: Some(file.clone()),
        password_env: None,
    });
    let mut obs = Observer::start(registry(c.clone()));
    let seen = obs.until("an error", |c, _| is_error(c)).await;
    let msg = format!("{:?}", seen.last());
    assert!(msg.contains("rejected the credentials (401)"), "{msg}");
    assert!(
        !msg.contains("wrong-password"),
        "the password is never shown: {msg}"
    );

    // The right password (read at every request) lets it through.
    std::fs::write(&file, "right-password\n").unwrap();
    obs.until(
        "a Reset",
        |c, _| matches!(c, Change::Reset(v) if v.endpoints.len() == 1),
    )
    .await;
    assert!(e.counts().unauthorized >= 2);
}

/// A server refusing deltas (403, delta disabled) is read by full fetches,
/// without the source ever reporting an error.
#[tokio::test]
async fn a_server_refusing_deltas_is_fetched_in_full() {
    let e = FakeEureka::start().await;
    e.forbid_delta(true);
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    let mut obs = start(&[e.url()]);
    assert!(matches!(obs.next().await, Change::Reset(_)));
    e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080));
    obs.until_endpoints("web", &[("10.0.0.1", 8080), ("10.0.0.2", 8080)])
        .await;
    assert!(e.counts().full >= 2, "{:?}", e.counts());
    assert_eq!(e.counts().delta, 0);
    assert!(!obs.log.iter().any(is_error), "{:?}", obs.log);
}

/// A change that fell out of the server's delta window (its retention) is
/// caught by the hashcode and picked up by a full fetch.
#[tokio::test]
async fn a_change_older_than_the_delta_window_is_caught_by_the_hashcode() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    let mut obs = start(&[e.url()]);
    assert!(matches!(obs.next().await, Change::Reset(_)));
    e.set_retention(Duration::ZERO);
    assert!(e.set_status("web", "w1", "DOWN"));
    obs.until("a Reset from the full fetch", |c, _| {
        matches!(c, Change::Reset(_))
    })
    .await;
    assert_eq!(health(&obs, "web", "w1"), Some(Health::Unhealthy));
    assert_eq!(e.counts().full, 2);
}

/// Metadata goes through the registry's mapping rules like any registry's
/// labels; the application name and VIPs through its hostname rules.
#[tokio::test]
async fn metadata_and_names_go_through_the_mapping_rules() {
    let e = FakeEureka::start().await;
    e.register(
        FakeInstance::new("WEB", "w1", "10.0.0.1", 8080)
            .with_vip("web-vip")
            .with_metadata("ver", "v1"),
    );
    let mapping: anymesh_core::Mapping = serde_yaml_ng::from_str(
        "hostname: {suffix: .eureka}\nlabels: {rename: {ver: version}, defaults: {zone: z1}}\n",
    )
    .unwrap();
    let mapped =
        anymesh_core::MappedRegistry::wrap(registry(config(&[e.url()])), Arc::new(mapping));
    let mut obs = Observer::start(mapped);
    obs.until_endpoints("web.eureka", &[("10.0.0.1", 8080)])
        .await;
    e.register(FakeInstance::new("WEB", "w2", "10.0.0.2", 8080).with_metadata("ver", "v2"));
    obs.until_endpoints("web.eureka", &[("10.0.0.1", 8080), ("10.0.0.2", 8080)])
        .await;
    let snap = obs.catalog().snapshot(0);
    let web = snap.service(&Hostname::new("web-vip").unwrap()).unwrap();
    assert_eq!(web.hostname.as_str(), "web.eureka", "the VIP is an alias");
    let w2 = web
        .endpoints
        .iter()
        .find(|e| e.address == "10.0.0.2")
        .unwrap();
    assert_eq!(
        w2.labels,
        Labels::from([
            ("version".into(), "v2".into()),
            ("zone".into(), "z1".into())
        ])
    );
    assert_eq!(w2.provenance.raw_labels["ver"], "v2");
    assert_eq!(w2.provenance.raw_labels["eureka.status"], "UP");
}

/// The `anymesh.*` metadata keys (Spring Cloud's `eureka.instance.metadata-map`)
/// mark the mesh proxy fronting an instance; an unusable value leaves the
/// instance out and says why in the source's status, and fixing it brings the
/// instance back with its proxy.
#[tokio::test]
async fn mesh_metadata_gives_the_endpoint_its_proxy() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    e.register(
        FakeInstance::new("web", "w2", "10.0.0.2", 8080)
            .with_metadata("anymesh.proxy-port", "15001")
            .with_metadata("anymesh.namespace", "shop")
            .with_metadata("anymesh.service-account", "web"),
    );
    e.register(
        FakeInstance::new("web", "w3", "10.0.0.3", 8080).with_metadata("anymesh.namespace", "shop"),
    );
    e.register(
        FakeInstance::new("web", "w4", "10.0.0.4", 8080).with_metadata("anymesh.proxy-port", "0"),
    );
    let mut obs = start(&[e.url()]);
    // The status follows the view it describes.
    obs.until("w4 reported unusable", |c, _| {
        matches!(c, Change::Status(SourceStatus::Degraded { message })
            if message.contains(r#"metadata anymesh.proxy-port "0": not a port number 1..=65535"#))
    })
    .await;
    assert_eq!(
        obs.endpoints("web"),
        [
            ("10.0.0.1".to_string(), 8080),
            ("10.0.0.2".into(), 8080),
            ("10.0.0.3".into(), 8080)
        ]
    );
    let mesh = |obs: &Observer, addr: &str| {
        let snap = obs.catalog().snapshot(0);
        let web = snap.service(&Hostname::new("web").unwrap()).unwrap();
        web.endpoints
            .iter()
            .find(|e| e.address == addr)
            .map(|e| e.mesh.clone())
    };
    assert_eq!(mesh(&obs, "10.0.0.1"), Some(None));
    assert_eq!(
        mesh(&obs, "10.0.0.2"),
        Some(Some(MeshProxy::new(
            15001,
            Some("shop".into()),
            Some("web".into())
        )))
    );
    assert_eq!(
        mesh(&obs, "10.0.0.3"),
        Some(Some(MeshProxy::new(
            DEFAULT_MESH_PORT,
            Some("shop".into()),
            None
        )))
    );
    assert_eq!(
        mesh(&obs, "10.0.0.4"),
        None,
        "refused, not served in plaintext"
    );
    assert!(e.set_metadata("web", "w4", "anymesh.proxy-port", "15006"));
    obs.until_endpoints(
        "web",
        &[
            ("10.0.0.1", 8080),
            ("10.0.0.2", 8080),
            ("10.0.0.3", 8080),
            ("10.0.0.4", 8080),
        ],
    )
    .await;
    assert_eq!(
        mesh(&obs, "10.0.0.4"),
        Some(Some(MeshProxy::new(DEFAULT_MESH_PORT, None, None)))
    );
}
