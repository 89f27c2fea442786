//! The Marathon adapter's production HTTP code against the fake Marathon of
//! the testkit (real HTTP on loopback, real state, a real SSE event stream).

// Test helpers outside `#[test]` functions: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_marathon::{decode_apps, MarathonConfig, MarathonRegistry, Translator};
use anymesh_core::config::GoDuration;
use anymesh_core::{Change, Health, Hostname, Labels, Registry, SourceId, SourceStatus};
use anymesh_testkit::contract::{self, ContractHarness, Observer};
use anymesh_testkit::marathon::{FakeNetworking, Shape};
use anymesh_testkit::wait::eventually;
use anymesh_testkit::{FakeApp, FakeMarathon, FakeTask, TcpRelay};

/// Short timeouts and backoff, so tests take fractions of a second.
fn config(urls: &[String]) -> MarathonConfig {
    let mut c = MarathonConfig::new(urls.iter().cloned());
    c.request_timeout = GoDuration(Duration::from_secs(2));
    c.stream_idle_timeout = GoDuration(Duration::from_secs(1));
    c.backoff.initial = GoDuration(Duration::from_millis(20));
    c.backoff.max = GoDuration(Duration::from_millis(200));
    c
}

fn registry(c: MarathonConfig) -> Arc<dyn Registry> {
    Arc::new(MarathonRegistry::new(SourceId::new("marathon"), c).unwrap())
}

async fn fake() -> FakeMarathon {
    let m = FakeMarathon::start().await;
    m.set_heartbeat(Duration::from_millis(100));
    m
}

fn web_with(tasks: &[(&str, &str, u16)]) -> FakeApp {
    let mut app = FakeApp::new("/shop/web").with_label("version", "v1");
    for (id, host, port) in tasks {
        app.tasks
            .insert(id.to_string(), FakeTask::new(id, host, &[*port]));
    }
    app
}

/// The health of the endpoint of task `id` of `service`, and its ineligibility reason.
fn health(obs: &Observer, service: &str, id: &str) -> Option<(Health, Option<String>)> {
    let snap = obs.catalog().snapshot(0);
    let svc = snap.services.get(&Hostname::new(service).unwrap())?;
    svc.endpoints
        .iter()
        .find(|e| e.provenance.native_id == id)
        .map(|e| {
            (
                e.health,
                e.provenance.raw_labels.get("marathon.ineligible").cloned(),
            )
        })
}

async fn until_health(obs: &mut Observer, service: &str, id: &str, want: Health) {
    if health(obs, service, id).map(|h| h.0) == Some(want) {
        return;
    }
    let what = format!("{service}/{id} to be {want:?}");
    let host = Hostname::new(service).unwrap();
    let id = id.to_string();
    obs.until(&what, |_, catalog| {
        let snap = catalog.snapshot(0);
        snap.services.get(&host).is_some_and(|s| {
            s.endpoints
                .iter()
                .any(|e| e.provenance.native_id == id && e.health == want)
        })
    })
    .await;
}

fn error_message(c: &Change) -> Option<&str> {
    match c {
        Change::Status(SourceStatus::Error { message }) => Some(message),
        _ => None,
    }
}

// ---- the contract --------------------------------------------------------------

/// The adapter reaches the fake through a relay; an outage cuts the relay
/// (the open event stream with it), while the harness keeps changing the fake.
struct Harness {
    marathon: FakeMarathon,
    relay: TcpRelay,
}

impl ContractHarness for Harness {
    async fn start_registry(&self) -> Arc<dyn Registry> {
        registry(config(&[self.relay.url()]))
    }
    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels) {
        let app_id = format!("/{service}");
        let task = FakeTask::new(id, address, &[port]);
        if !self.marathon.launch(&app_id, task.clone()) {
            let mut app = FakeApp::new(&app_id);
            app.labels = labels.clone();
            app.tasks.insert(id.into(), task);
            self.marathon.add_app(app);
        }
    }
    async fn remove(&self, service: &str, id: &str) {
        self.marathon.kill_task(&format!("/{service}"), id);
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
    let marathon = fake().await;
    let relay = TcpRelay::start(marathon.addr()).await;
    contract::run(&Harness { marathon, relay }).await;
}

// ---- tasks and health ------------------------------------------------------------

#[tokio::test]
async fn a_killed_task_leaves_and_a_launched_one_arrives() {
    let m = fake().await;
    m.add_app(web_with(&[
        ("web.1", "10.0.0.1", 31000),
        ("web.2", "10.0.0.2", 31001),
    ]));
    let mut obs = Observer::start(registry(config(&[m.url()])));
    match obs.next().await {
        Change::Reset(v) => {
            assert_eq!(v.endpoints.len(), 2);
            assert_eq!(v.services[0].hostname.as_str(), "web.shop");
            assert_eq!(v.endpoints[0].labels["version"], "v1");
        }
        other => panic!("{other:?}"),
    }
    let reads = m.counts().apps;
    assert!(m.kill_task("/shop/web", "web.1"));
    let seen = obs
        .until_endpoints("web.shop", &[("10.0.0.2", 31001)])
        .await;
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::RemoveEndpoint(k) if &*k.native_id == "web.1")),
        "{seen:?}"
    );
    assert!(m.launch("/shop/web", FakeTask::new("web.3", "10.0.0.3", &[31002])));
    obs.until_endpoints("web.shop", &[("10.0.0.2", 31001), ("10.0.0.3", 31002)])
        .await;
    assert!(m.counts().apps > reads, "events lead to re-reads");
    assert_eq!(m.counts().streams, 1, "one stream all along");
    assert!(!obs
        .log
        .iter()
        .skip(1)
        .any(|c| matches!(c, Change::Reset(_))));

    // A staging task is visible but not eligible; running, it is.
    assert!(m.launch(
        "/shop/web",
        FakeTask::new("web.4", "10.0.0.4", &[31003]).with_state("TASK_STAGING")
    ));
    until_health(&mut obs, "web.shop", "web.4", Health::Unhealthy).await;
    assert_eq!(
        health(&obs, "web.shop", "web.4").unwrap().1.as_deref(),
        Some("task state TASK_STAGING")
    );
    assert!(m.set_task_state("/shop/web", "web.4", "TASK_RUNNING"));
    until_health(&mut obs, "web.shop", "web.4", Health::Healthy).await;

    // The app is destroyed: its service and endpoints go.
    assert!(m.remove_app("/shop/web"));
    obs.until(
        "the service removed",
        |c, _| matches!(c, Change::RemoveService(h) if h.as_str() == "web.shop"),
    )
    .await;
    assert!(obs.endpoints("web.shop").is_empty());
}

#[tokio::test]
async fn a_failing_health_check_makes_a_task_ineligible_until_it_passes() {
    let m = fake().await;
    let mut app = FakeApp::new("/api").with_health_checks(1);
    let mut t = FakeTask::new("api.1", "10.0.0.1", &[31000]);
    t.health = vec![(true, 0)];
    app.tasks.insert(t.id.clone(), t);
    let mut t = FakeTask::new("api.2", "10.0.0.2", &[31001]);
    t.health = vec![(true, 0)];
    app.tasks.insert(t.id.clone(), t);
    m.add_app(app);
    let mut obs = Observer::start(registry(config(&[m.url()])));
    assert!(matches!(obs.next().await, Change::Reset(_)));
    until_health(&mut obs, "api", "api.1", Health::Healthy).await;

    assert!(m.set_health("/api", "api.1", false));
    until_health(&mut obs, "api", "api.1", Health::Unhealthy).await;
    let why = health(&obs, "api", "api.1").unwrap().1.unwrap();
    assert!(why.contains("health check 0 failing"), "{why}");
    assert_eq!(health(&obs, "api", "api.2").unwrap().0, Health::Healthy);

    assert!(m.set_health("/api", "api.1", true));
    until_health(&mut obs, "api", "api.1", Health::Healthy).await;

    // A task launched before its first health check result is not eligible.
    let mut fresh = FakeTask::new("api.3", "10.0.0.3", &[31002]);
    fresh.health = Vec::new();
    let mut app = m.app("/api").unwrap();
    app.tasks.insert(fresh.id.clone(), fresh);
    app.health_checks = 1;
    m.add_app(app);
    until_health(&mut obs, "api", "api.3", Health::Unhealthy).await;
    assert!(health(&obs, "api", "api.3")
        .unwrap()
        .1
        .unwrap()
        .contains("no result yet"));
}

// ---- the event stream --------------------------------------------------------------

#[tokio::test]
async fn a_dropped_stream_is_reopened_and_a_full_resync_removes_stale_tasks() {
    let m = fake().await;
    m.add_app(web_with(&[
        ("web.1", "10.0.0.1", 31000),
        ("web.2", "10.0.0.2", 31001),
    ]));
    let mut obs = Observer::start(registry(config(&[m.url()])));
    assert!(matches!(obs.next().await, Change::Reset(_)));
    obs.until("healthy", |c, _| {
        matches!(c, Change::Status(SourceStatus::Healthy))
    })
    .await;

    // Changes whose events are lost (as while disconnected), then the stream drops.
    m.mute_events(true);
    assert!(m.kill_task("/shop/web", "web.1"));
    assert!(m.launch("/shop/web", FakeTask::new("web.3", "10.0.0.3", &[31002])));
    m.drop_streams();
    m.mute_events(false);
    let seen = obs
        .until("a Reset from the resync", |c, _| {
            matches!(c, Change::Reset(_))
        })
        .await;
    let Some(Change::Reset(view)) = seen.last() else {
        unreachable!()
    };
    let mut ids: Vec<&str> = view
        .endpoints
        .iter()
        .map(|e| e.provenance.native_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["web.2", "web.3"], "no stale task survives the resync");
    assert_eq!(
        obs.endpoints("web.shop"),
        vec![("10.0.0.2".into(), 31001), ("10.0.0.3".into(), 31002)]
    );
    assert!(m.counts().streams >= 2);

    // The reopened stream delivers again.
    assert!(m.kill_task("/shop/web", "web.2"));
    obs.until_endpoints("web.shop", &[("10.0.0.3", 31002)])
        .await;

    // A silent stream (no keep-alive) is given up and reopened.
    let streams = m.counts().streams;
    m.stall(true);
    let seen = obs
        .until("an error while stalled", |c, _| error_message(c).is_some())
        .await;
    let msg = seen.iter().find_map(error_message).unwrap();
    assert!(
        msg.contains("no answer within") || msg.contains("timed out"),
        "{msg}"
    );
    m.stall(false);
    obs.until("a Reset after the stall", |c, _| {
        matches!(c, Change::Reset(_))
    })
    .await;
    assert!(m.counts().streams > streams);
    assert_eq!(obs.endpoints("web.shop"), vec![("10.0.0.3".into(), 31002)]);
}

#[tokio::test]
async fn server_errors_keep_the_last_good_view() {
    let m = fake().await;
    m.add_app(web_with(&[("web.1", "10.0.0.1", 31000)]));
    let mut obs = Observer::start(registry(config(&[m.url()])));
    assert!(matches!(obs.next().await, Change::Reset(_)));
    m.fail_with(Some(503));
    m.drop_streams();
    let seen = obs
        .until("an error", |c, _| error_message(c).is_some())
        .await;
    let msg = seen.iter().find_map(error_message).unwrap();
    assert!(
        msg.contains("HTTP 503") && msg.contains("/v2/events"),
        "{msg}"
    );
    assert_eq!(obs.endpoints("web.shop"), vec![("10.0.0.1".into(), 31000)]);
    let info = obs.source_info();
    assert!(!info.connected && info.stale_since.is_some(), "{info:?}");
    m.fail_with(None);
    obs.until("a Reset after recovery", |c, _| {
        matches!(c, Change::Reset(_))
    })
    .await;
}

// ---- failover and auth --------------------------------------------------------------

#[tokio::test]
async fn fails_over_to_the_next_url_in_order() {
    let first = fake().await;
    let second = fake().await;
    // A URL nothing listens on, then a failing server, then a good one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    first.fail_with(Some(500));
    second.add_app(web_with(&[("web.1", "10.0.0.9", 31000)]));
    let mut obs = Observer::start(registry(config(&[dead, first.url(), second.url()])));
    match obs.next().await {
        Change::Reset(v) => assert_eq!(v.endpoints[0].address, "10.0.0.9"),
        other => panic!("{other:?}"),
    }
    assert!(
        first.counts().failed >= 1,
        "the first server was tried first"
    );
    assert_eq!(second.counts().streams, 1);

    // The second one dies: back to the first (now healthy, with its own state).
    first.fail_with(None);
    first.add_app(web_with(&[("web.1", "10.0.0.1", 31000)]));
    second.fail_with(Some(503));
    second.drop_streams();
    obs.until_endpoints("web.shop", &[("10.0.0.1", 31000)])
        .await;
    assert_eq!(first.counts().streams, 1);
}

#[tokio::test]
async fn sends_the_dcos_token_and_reports_a_rejected_one_clearly() {
    let m = fake().await;
    m.require_token(Some("good-token"));
    m.add_app(web_with(&[("web.1", "10.0.0.1", 31000)]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "good-token\n").unwrap();
    let mut c = config(&[m.url()]);
    c.auth = Some(anymesh_adapter_marathon::AuthConfig {
        token_file: Some(file.clone()),
        token_env: None,
    });
    let mut obs = Observer::start(registry(c.clone()));
    assert!(matches!(obs.next().await, Change::Reset(v) if v.endpoints.len() == 1));
    assert_eq!(m.counts().unauthorized, 0);

    // A wrong token: a clear error naming the cause, never the token.
    std::fs::write(&file, "stale-token\n").unwrap();
    let mut obs = Observer::start(registry(c));
    let seen = obs
        .until("an error", |c, _| error_message(c).is_some())
        .await;
    let msg = seen.iter().find_map(error_message).unwrap();
    assert!(
        msg.contains("rejected the token (HTTP 401)") && msg.contains("check `auth`"),
        "{msg}"
    );
    assert!(!msg.contains("stale-token"), "{msg}");

    // No token at all.
    let mut obs = Observer::start(registry(config(&[m.url()])));
    let seen = obs
        .until("an error", |c, _| error_message(c).is_some())
        .await;
    let msg = seen.iter().find_map(error_message).unwrap();
    assert!(msg.contains("requires a token"), "{msg}");
    eventually("refusals counted", || m.counts().unauthorized >= 2).await;
}

// ---- the fake's shapes through the adapter's decoder ----------------------------------

#[tokio::test]
async fn every_networking_and_shape_of_the_fake_translates_to_the_right_address() {
    let m = fake().await;
    let tr = Translator::new(SourceId::new("m"), &MarathonConfig::new(["http://m:8080"]));
    for shape in [Shape::Modern, Shape::Legacy] {
        m.set_shape(shape);
        for (net, want) in [
            (FakeNetworking::Host, ("10.0.0.1", 31000, "http")),
            (FakeNetworking::Bridge, ("10.0.0.1", 31000, "http")),
            (FakeNetworking::Container, ("172.17.0.2", 8080, "http")),
        ] {
            let mut app = FakeApp::new("/prod/shop/web")
                .with_networking(net)
                .with_ports(&[
                    (Some("http"), 10000, 8080),
                    (Some("grpc-admin"), 10001, 9090),
                ]);
            app.tasks.insert(
                "t1".into(),
                FakeTask::new("t1", "10.0.0.1", &[31000, 31001]).with_ip("172.17.0.2"),
            );
            m.add_app(app);
            let list = decode_apps(m.apps_json().to_string().as_bytes()).unwrap();
            assert!(list.problems.is_empty(), "{:?}", list.problems);
            let app = &list.apps[0];
            let ep = tr.endpoint(app, &app.tasks[0]).unwrap();
            assert_eq!(ep.service.as_str(), "web.shop.prod");
            assert_eq!(
                (
                    ep.address.as_str(),
                    ep.ports[0].number,
                    ep.ports[0].name.as_str()
                ),
                want,
                "{shape:?} {net:?}"
            );
            assert_eq!(ep.health, Health::Healthy, "{shape:?} {net:?}");
            let svc = tr.service(app).unwrap();
            let ports: Vec<_> = svc
                .ports
                .iter()
                .map(|p| (p.name.as_str(), p.number, p.protocol.to_string()))
                .collect();
            assert_eq!(
                ports,
                [
                    ("http", 10000, "http".into()),
                    ("grpc-admin", 10001, "grpc".to_string())
                ],
                "{shape:?} {net:?}"
            );
        }
    }
}

/// App labels go through the registry's mapping rules like any registry's
/// labels, and the hostname from the app id through its hostname rules.
#[tokio::test]
async fn app_labels_and_hostnames_go_through_the_mapping_rules() {
    let m = fake().await;
    let mut app = FakeApp::new("/shop/web")
        .with_label("HAPROXY_DEPLOYMENT_COLOUR", "blue")
        .with_label("HAPROXY_GROUP", "external");
    app.tasks
        .insert("web.1".into(), FakeTask::new("web.1", "10.0.0.1", &[31000]));
    m.add_app(app);
    let mapping: anymesh_core::Mapping = serde_yaml_ng::from_str(
        "hostname: {suffix: .marathon}\nlabels: {rename: {HAPROXY_DEPLOYMENT_COLOUR: colour}, drop: [HAPROXY_GROUP], defaults: {zone: z1}}\n",
    )
    .unwrap();
    let mapped =
        anymesh_core::MappedRegistry::wrap(registry(config(&[m.url()])), Arc::new(mapping));
    let mut obs = Observer::start(mapped);
    obs.until_endpoints("web.shop.marathon", &[("10.0.0.1", 31000)])
        .await;
    let snap = obs.catalog().snapshot(0);
    let web = snap
        .service(&Hostname::new("web.shop.marathon").unwrap())
        .unwrap();
    let ep = &web.endpoints[0];
    assert_eq!(
        ep.labels,
        Labels::from([
            ("colour".into(), "blue".into()),
            ("zone".into(), "z1".into())
        ])
    );
    assert_eq!(ep.provenance.raw_labels["HAPROXY_GROUP"], "external");
    assert_eq!(ep.provenance.raw_labels["marathon.app_id"], "/shop/web");
}

/// The mesh proxy fronting a task, in every networking and shape of the
/// fake: the port labelled `anymesh.proxy` is the task's host port (host,
/// bridge) or its container port (container networking), not a service
/// port; the `anymesh.*` app labels name the identity.
#[tokio::test]
async fn a_port_labelled_anymesh_proxy_and_the_app_labels_give_the_mesh_proxy() {
    use anymesh_core::model::MeshProxy;
    let m = fake().await;
    let tr = Translator::new(SourceId::new("m"), &MarathonConfig::new(["http://m:8080"]));
    for shape in [Shape::Modern, Shape::Legacy] {
        m.set_shape(shape);
        for (net, proxy_port) in [
            (FakeNetworking::Host, 31001),
            (FakeNetworking::Bridge, 31001),
            (FakeNetworking::Container, 15006),
        ] {
            let mut app = FakeApp::new("/prod/shop/web")
                .with_networking(net)
                .with_label("anymesh.namespace", "shop")
                .with_label("anymesh.service-account", "web")
                .with_ports(&[(Some("http"), 10000, 8080), (Some("mesh"), 10001, 15006)])
                .with_port_label(1, "anymesh.proxy", "true");
            app.tasks.insert(
                "t1".into(),
                FakeTask::new("t1", "10.0.0.1", &[31000, 31001]).with_ip("172.17.0.2"),
            );
            m.add_app(app);
            let list = decode_apps(m.apps_json().to_string().as_bytes()).unwrap();
            assert!(list.problems.is_empty(), "{:?}", list.problems);
            let app = &list.apps[0];
            let ep = tr.endpoint(app, &app.tasks[0]).unwrap();
            assert_eq!(
                ep.mesh,
                Some(MeshProxy::new(
                    proxy_port,
                    Some("shop".into()),
                    Some("web".into())
                )),
                "{shape:?} {net:?}"
            );
            let names: Vec<&str> = ep.ports.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["http"], "the proxy's port is no service port");
            let svc = tr.service(app).unwrap();
            assert_eq!(svc.ports.len(), 1, "{shape:?} {net:?}");
        }
    }
}

/// Through the registry: an app without mesh labels has no proxy, one with
/// `anymesh.proxy-port` has it on that port, and one whose label cannot be
/// used loses its endpoints (named in the status) until it is fixed.
#[tokio::test]
async fn unusable_mesh_labels_refuse_the_tasks_and_say_why() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    let m = fake().await;
    m.add_app(web_with(&[("web.1", "10.0.0.1", 31000)]));
    let mut api = FakeApp::new("/shop/api").with_label("anymesh.proxy-port", "15001");
    api.tasks
        .insert("api.1".into(), FakeTask::new("api.1", "10.0.0.2", &[31000]));
    m.add_app(api);
    let mut db = FakeApp::new("/shop/db").with_label("anymesh.proxy-port", "sidecar");
    db.tasks
        .insert("db.1".into(), FakeTask::new("db.1", "10.0.0.3", &[31000]));
    m.add_app(db);
    let mut obs = Observer::start(registry(config(&[m.url()])));
    obs.until("db.1 reported", |c, _| {
        matches!(c, Change::Status(SourceStatus::Degraded { message })
            if message.contains(
                r#"task db.1 of app /shop/db: label anymesh.proxy-port "sidecar": not a port number 1..=65535"#))
    })
    .await;
    let mesh = |obs: &Observer, service: &str| {
        let snap = obs.catalog().snapshot(0);
        let svc = snap.services.get(&Hostname::new(service).unwrap())?;
        svc.endpoints.first().map(|e| e.mesh.clone())
    };
    assert_eq!(mesh(&obs, "web.shop"), Some(None));
    assert_eq!(
        mesh(&obs, "api.shop"),
        Some(Some(MeshProxy::new(15001, None, None)))
    );
    assert_eq!(
        mesh(&obs, "db.shop"),
        None,
        "refused, not served in plaintext"
    );
    // Fixed: the app is replaced with a usable label.
    let mut db = FakeApp::new("/shop/db").with_label("anymesh.spiffe-id", "spiffe://corp/db");
    db.tasks
        .insert("db.1".into(), FakeTask::new("db.1", "10.0.0.3", &[31000]));
    m.add_app(db);
    obs.until_endpoints("db.shop", &[("10.0.0.3", 31000)]).await;
    assert_eq!(
        mesh(&obs, "db.shop"),
        Some(Some(MeshProxy {
            port: DEFAULT_MESH_PORT,
            spiffe_id: Some("spiffe://corp/db".into()),
            ..MeshProxy::default()
        }))
    );
}
