//! The Kubernetes adapter against [`FakeKube`], a real HTTP server speaking
//! the API's list and watch protocol, read through the real kube client.

// Test helpers outside `#[test]` functions: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_kubernetes::{Connection, HostnameForm, KubernetesConfig, KubernetesRegistry};
use anymesh_core::config::GoDuration;
use anymesh_core::{Change, Health, Hostname, Labels, Protocol, Registry, SourceId, SourceStatus};
use anymesh_testkit::contract::{self, ContractHarness, Observer};
use anymesh_testkit::kubernetes::{GoneForm, Kind, SliceEndpoint};
use anymesh_testkit::wait::eventually;
use anymesh_testkit::{FakeKube, TcpRelay};
use parking_lot::Mutex;
use serde_json::json;

/// Short backoff, mesh hostnames as the bare Service name.
fn config(url: &str) -> KubernetesConfig {
    let mut c = KubernetesConfig::new(Connection::Url { url: url.into() });
    c.hostname = HostnameForm::Name;
    c.backoff.initial = GoDuration(Duration::from_millis(20));
    c.backoff.max = GoDuration(Duration::from_millis(200));
    c
}

fn registry(c: KubernetesConfig) -> Arc<dyn Registry> {
    Arc::new(KubernetesRegistry::new(SourceId::new("k8s"), c).unwrap())
}

fn start(url: &str) -> Observer {
    Observer::start(registry(config(url)))
}

/// (address, health) of every endpoint of `service`, sorted.
fn healths(obs: &Observer, service: &str) -> Vec<(String, Health)> {
    let snap = obs.catalog().snapshot(0);
    let mut out: Vec<(String, Health)> = snap
        .services
        .get(&Hostname::new(service).unwrap())
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.health))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn until_healths(obs: &mut Observer, service: &str, want: &[(&str, Health)]) {
    let want: Vec<(String, Health)> = want.iter().map(|(a, h)| (a.to_string(), *h)).collect();
    if healths(obs, service) == want {
        return;
    }
    let host = Hostname::new(service).unwrap();
    obs.until(&format!("{service} to be {want:?}"), |_, catalog| {
        let snap = catalog.snapshot(0);
        let mut got: Vec<(String, Health)> = snap
            .services
            .get(&host)
            .map(|s| {
                s.endpoints
                    .iter()
                    .map(|e| (e.address.clone(), e.health))
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

/// A Deployment-like service `reviews` in `default`: pods `reviews-<i>` at
/// 10.0.0.<i>, one slice holding `endpoints`.
fn reviews(k: &FakeKube, endpoints: &[SliceEndpoint]) {
    k.put_slice(
        "default",
        "reviews-abc",
        "reviews",
        &[("http", 9080)],
        endpoints,
    );
}

fn deploy_reviews(k: &FakeKube, pods: usize) {
    k.put_service("default", "reviews", &[("http", 9080)]);
    for i in 1..=pods {
        k.put_pod(
            "default",
            &format!("reviews-{i}"),
            &format!("10.0.0.{i}"),
            &[("app", "reviews"), ("version", "v1")],
        );
    }
}

fn ready(i: usize) -> SliceEndpoint {
    SliceEndpoint::ready(&format!("10.0.0.{i}"), &format!("reviews-{i}"))
}

/// service → instance id → (address, port).
type Instances = BTreeMap<String, BTreeMap<String, (String, u16)>>;

// ---- the contract --------------------------------------------------------------

/// The adapter reaches the fake through a relay; an outage cuts the relay.
/// Instances are pods listed in their service's one EndpointSlice.
struct Harness {
    kube: FakeKube,
    relay: TcpRelay,
    instances: Mutex<Instances>,
}

impl Harness {
    fn write_slice(&self, service: &str) {
        let all = self.instances.lock();
        let instances = all.get(service).cloned().unwrap_or_default();
        let port = instances.values().next().map_or(80, |(_, p)| *p);
        let endpoints: Vec<SliceEndpoint> = instances
            .iter()
            .map(|(id, (addr, _))| SliceEndpoint::ready(addr, id))
            .collect();
        self.kube.put_slice(
            "default",
            &format!("{service}-slice"),
            service,
            &[("", port)],
            &endpoints,
        );
    }
}

impl ContractHarness for Harness {
    async fn start_registry(&self) -> Arc<dyn Registry> {
        registry(config(&self.relay.url()))
    }
    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels) {
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.kube.put_pod("default", id, address, &labels);
        if self.kube.get(Kind::Service, "default", service).is_none() {
            self.kube.put_service("default", service, &[("", port)]);
        }
        self.instances
            .lock()
            .entry(service.into())
            .or_default()
            .insert(id.into(), (address.into(), port));
        self.write_slice(service);
    }
    async fn remove(&self, service: &str, id: &str) {
        let removed = self
            .instances
            .lock()
            .get_mut(service)
            .and_then(|m| m.remove(id))
            .is_some();
        if removed {
            self.write_slice(service);
        }
        self.kube.delete(Kind::Pod, "default", id);
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
    let kube = FakeKube::start().await;
    let relay = TcpRelay::start(kube.addr()).await;
    contract::run(&Harness {
        kube,
        relay,
        instances: Mutex::default(),
    })
    .await;
}

// ---- Kubernetes behaviour --------------------------------------------------------

#[tokio::test]
async fn scaling_a_slice_up_and_down_follows_with_pod_labels_and_named_ports() {
    let k = FakeKube::start().await;
    deploy_reviews(&k, 3);
    reviews(&k, &[ready(1)]);
    let mut obs = start(&k.url());
    match obs.next().await {
        Change::Reset(view) => {
            assert_eq!(view.services.len(), 1);
            let svc = &view.services[0];
            assert_eq!(svc.hostname.as_str(), "reviews");
            let aliases: Vec<&str> = svc.aliases.iter().map(Hostname::as_str).collect();
            assert_eq!(
                aliases,
                vec![
                    "reviews.default",
                    "reviews.default.svc",
                    "reviews.default.svc.cluster.local"
                ]
            );
            assert_eq!(svc.ports.len(), 1);
            assert_eq!(
                (svc.ports[0].name.as_str(), svc.ports[0].number),
                ("http", 9080)
            );
            assert_eq!(svc.ports[0].protocol, Protocol::Http);
            let ep = &view.endpoints[0];
            assert_eq!(ep.address, "10.0.0.1");
            assert_eq!(
                (ep.ports[0].name.as_str(), ep.ports[0].number),
                ("http", 9080)
            );
            assert_eq!(ep.labels.get("version").map(String::as_str), Some("v1"));
            assert_eq!(ep.provenance.native_id, "default/reviews/10.0.0.1");
            assert_eq!(
                ep.provenance.raw_labels.get("k8s.pod").map(String::as_str),
                Some("reviews-1")
            );
        }
        other => panic!("expected a Reset first, got {other:?}"),
    }
    let lists = k.counts().lists;
    reviews(&k, &[ready(1), ready(2), ready(3)]);
    obs.until_endpoints(
        "reviews",
        &[("10.0.0.1", 9080), ("10.0.0.2", 9080), ("10.0.0.3", 9080)],
    )
    .await;
    // Scale down: the pods terminate (draining), then leave the slice.
    reviews(
        &k,
        &[
            ready(1),
            SliceEndpoint::terminating("10.0.0.2", "reviews-2"),
            SliceEndpoint::terminating("10.0.0.3", "reviews-3"),
        ],
    );
    until_healths(
        &mut obs,
        "reviews",
        &[
            ("10.0.0.1", Health::Healthy),
            ("10.0.0.2", Health::Draining),
            ("10.0.0.3", Health::Draining),
        ],
    )
    .await;
    reviews(&k, &[ready(1)]);
    k.delete(Kind::Pod, "default", "reviews-2");
    k.delete(Kind::Pod, "default", "reviews-3");
    obs.until_endpoints("reviews", &[("10.0.0.1", 9080)]).await;
    assert_eq!(
        k.counts().lists,
        lists,
        "changes came by watch, without a relist"
    );
    assert!(
        !obs.log
            .iter()
            .skip(1)
            .any(|c| matches!(c, Change::Reset(_))),
        "no second Reset: {:?}",
        obs.log
    );
}

#[tokio::test]
async fn a_pod_turning_not_ready_is_kept_unhealthy_and_comes_back() {
    let k = FakeKube::start().await;
    deploy_reviews(&k, 2);
    reviews(&k, &[ready(1), ready(2)]);
    let mut obs = start(&k.url());
    until_healths(
        &mut obs,
        "reviews",
        &[("10.0.0.1", Health::Healthy), ("10.0.0.2", Health::Healthy)],
    )
    .await;
    reviews(
        &k,
        &[ready(1), SliceEndpoint::not_ready("10.0.0.2", "reviews-2")],
    );
    until_healths(
        &mut obs,
        "reviews",
        &[
            ("10.0.0.1", Health::Healthy),
            ("10.0.0.2", Health::Unhealthy),
        ],
    )
    .await;
    // The version label moves with the pod: relabelled pods re-label endpoints.
    k.put_pod(
        "default",
        "reviews-1",
        "10.0.0.1",
        &[("app", "reviews"), ("version", "v2")],
    );
    obs.until("reviews-1 relabelled v2", |_, catalog| {
        let snap = catalog.snapshot(0);
        snap.services
            .get(&Hostname::new("reviews").unwrap())
            .is_some_and(|s| {
                s.endpoints.iter().any(|e| {
                    e.address == "10.0.0.1"
                        && e.labels.get("version").map(String::as_str) == Some("v2")
                })
            })
    })
    .await;
    reviews(&k, &[ready(1), ready(2)]);
    until_healths(
        &mut obs,
        "reviews",
        &[("10.0.0.1", Health::Healthy), ("10.0.0.2", Health::Healthy)],
    )
    .await;
}

/// Both forms of 410 Gone mid-watch: the adapter relists and the endpoint
/// removed while its watch was expiring does not linger.
#[tokio::test]
async fn a_410_gone_mid_watch_relists_without_a_stale_endpoint() {
    for form in [GoneForm::Event, GoneForm::Status] {
        let k = FakeKube::start().await;
        k.set_gone_form(form);
        deploy_reviews(&k, 2);
        reviews(&k, &[ready(1), ready(2)]);
        let mut obs = start(&k.url());
        obs.until_endpoints("reviews", &[("10.0.0.1", 9080), ("10.0.0.2", 9080)])
            .await;
        let lists = k.counts().lists;
        // The removal never reaches the open watches, and the history that
        // held it is compacted away.
        k.hold_events(true);
        reviews(&k, &[ready(1)]);
        k.hold_events(false);
        match form {
            GoneForm::Event => k.expire_watches(),
            GoneForm::Status => {
                k.compact();
                k.end_watches();
            }
        }
        // Only a relist can bring the removal: its event was never sent.
        let seen = obs.until_endpoints("reviews", &[("10.0.0.1", 9080)]).await;
        assert!(
            seen.iter().any(|c| matches!(c, Change::Reset(_))),
            "the removal came with a relist's Reset ({form:?}): {seen:?}"
        );
        assert!(
            k.counts().gone >= 1,
            "the fake refused a watch with 410 ({form:?})"
        );
        assert!(
            k.counts().lists > lists,
            "the adapter listed again ({form:?})"
        );
        assert!(
            !seen.iter().any(is_error),
            "a 410 is not an error: {seen:?}"
        );
        // Watching goes on after the relist.
        reviews(&k, &[ready(1), ready(2)]);
        obs.until_endpoints("reviews", &[("10.0.0.1", 9080), ("10.0.0.2", 9080)])
            .await;
    }
}

#[tokio::test]
async fn bookmarks_move_the_resume_point_so_a_compaction_needs_no_relist() {
    let k = FakeKube::start().await;
    deploy_reviews(&k, 1);
    reviews(&k, &[ready(1)]);
    let mut obs = start(&k.url());
    obs.until_endpoints("reviews", &[("10.0.0.1", 9080)]).await;
    // Services, slices, pods and nodes.
    eventually("four watches open", || k.counts().watches >= 4).await;
    // Versions move on through Services only; the pod and slice watches'
    // last versions get old.
    k.put_service("default", "other", &[("http", 80)]);
    k.put_service("default", "third", &[("http", 80)]);
    obs.until(
        "service third",
        |c, _| matches!(c, Change::UpsertService(s) if s.hostname.as_str() == "third"),
    )
    .await;
    k.bookmark();
    // Compacting right after the bookmark leaves every watcher's resume point valid.
    let before = k.counts();
    // Give the bookmarks time to be read: a bookmark is not observable from
    // outside, so poll the one thing that is — a watch restart from it.
    k.compact();
    k.end_watches();
    eventually("the four watches reopened", || {
        k.counts().watches >= before.watches + 4
    })
    .await;
    let after = k.counts();
    // A watcher that missed its bookmark (they are best effort) relists;
    // with the bookmarks read, none does.
    assert_eq!(after.gone, before.gone, "no watch was refused: {after:?}");
    assert_eq!(after.lists, before.lists, "no relist: {after:?}");
    reviews(&k, &[ready(1), ready(2)]);
    obs.until_endpoints("reviews", &[("10.0.0.1", 9080), ("10.0.0.2", 9080)])
        .await;
}

#[tokio::test]
async fn a_namespace_filter_reads_only_those_namespaces() {
    let k = FakeKube::start().await;
    for ns in ["shop", "default", "admin"] {
        k.put_service(ns, "web", &[("http-web", 8080)]);
        k.put_pod(
            ns,
            "web-1",
            &format!("10.1.{}.1", ns.len()),
            &[("app", "web")],
        );
        k.put_slice(
            ns,
            "web-x",
            "web",
            &[("http-web", 8080)],
            &[SliceEndpoint::ready(
                &format!("10.1.{}.1", ns.len()),
                "web-1",
            )],
        );
    }
    let mut c = config(&k.url());
    c.namespaces = vec!["shop".into(), "admin".into()];
    c.hostname = HostnameForm::Namespaced;
    let mut obs = Observer::start(registry(c));
    obs.until_endpoints("web.shop", &[("10.1.4.1", 8080)]).await;
    obs.until_endpoints("web.admin", &[("10.1.5.1", 8080)])
        .await;
    // A change in an unwatched namespace never arrives; one in a watched one does.
    k.put_slice(
        "default",
        "web-x",
        "web",
        &[("http-web", 8080)],
        &[SliceEndpoint::ready("10.9.9.9", "web-1")],
    );
    k.put_slice(
        "shop",
        "web-x",
        "web",
        &[("http-web", 8080)],
        &[SliceEndpoint::ready("10.1.4.2", "web-1")],
    );
    obs.until_endpoints("web.shop", &[("10.1.4.2", 8080)]).await;
    assert_eq!(obs.endpoints("web.default"), vec![]);
    let snap = obs.catalog().snapshot(0);
    assert!(
        snap.services.keys().all(|h| h.as_str() != "web.default"),
        "{:?}",
        snap.services.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_undecodable_object_is_an_error_naming_the_resource_and_the_view_stays() {
    let k = FakeKube::start().await;
    deploy_reviews(&k, 1);
    reviews(&k, &[ready(1)]);
    let mut obs = start(&k.url());
    obs.until_endpoints("reviews", &[("10.0.0.1", 9080)]).await;
    k.apply(
        Kind::EndpointSlice,
        json!({"metadata": {"name": "broken", "namespace": "default"}, "addressType": "IPv4", "endpoints": "not a list"}),
    );
    let seen = obs.until("an error status", |c, _| is_error(c)).await;
    let Some(Change::Status(SourceStatus::Error { message })) = seen.last() else {
        panic!("{seen:?}");
    };
    assert!(message.contains("endpointslices"), "{message}");
    assert_eq!(obs.endpoints("reviews"), vec![("10.0.0.1".into(), 9080)]);
    k.delete(Kind::EndpointSlice, "default", "broken");
    obs.until("healthy again", |c, _| {
        matches!(c, Change::Status(SourceStatus::Healthy))
    })
    .await;
    assert_eq!(obs.endpoints("reviews"), vec![("10.0.0.1".into(), 9080)]);
}

#[tokio::test]
async fn external_name_services_alias_a_mesh_service_or_point_at_their_host() {
    let k = FakeKube::start().await;
    deploy_reviews(&k, 1);
    reviews(&k, &[ready(1)]);
    k.apply(
        Kind::Service,
        json!({"metadata": {"name": "critics", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "reviews.default.svc.cluster.local"}}),
    );
    k.apply(
        Kind::Service,
        json!({"metadata": {"name": "payments", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "pay.example.com.",
                        "ports": [{"name": "grpc-pay", "port": 443, "protocol": "TCP"}]}}),
    );
    let mut obs = start(&k.url());
    obs.until_endpoints("payments", &[("pay.example.com", 443)])
        .await;
    let snap = obs.catalog().snapshot(0);
    let critics = snap
        .service(&Hostname::new("critics").unwrap())
        .expect("critics resolves");
    assert_eq!(critics.hostname.as_str(), "reviews");
    let pay = &snap.services[&Hostname::new("payments").unwrap()];
    assert_eq!(pay.ports[0].protocol, Protocol::Grpc);
    obs.until("a healthy status", |c, _| {
        matches!(c, Change::Status(SourceStatus::Healthy))
    })
    .await;

    // One that names no mesh service and has no port cannot be routed:
    // skipped, and the status says which and why; the rest stays.
    k.apply(
        Kind::Service,
        json!({"metadata": {"name": "legacy", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    let seen = obs
        .until("a degraded status", |c, _| {
            matches!(c, Change::Status(SourceStatus::Degraded { .. }))
        })
        .await;
    let Some(Change::Status(SourceStatus::Degraded { message })) = seen.last() else {
        panic!("{seen:?}");
    };
    assert!(
        message.contains("service default/legacy") && message.contains("db.example.com"),
        "{message}"
    );
    assert_eq!(
        obs.endpoints("payments"),
        vec![("pay.example.com".into(), 443)]
    );
    k.delete(Kind::Service, "default", "legacy");
    obs.until("healthy again", |c, _| {
        matches!(c, Change::Status(SourceStatus::Healthy))
    })
    .await;
}

#[tokio::test]
async fn a_kubeconfig_file_reaches_the_api_server() {
    let k = FakeKube::start().await;
    deploy_reviews(&k, 1);
    reviews(&k, &[ready(1)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: other\nclusters:\n- name: fake\n  cluster: {{server: '{}'}}\n- name: nowhere\n  cluster: {{server: 'http://127.0.0.1:1'}}\ncontexts:\n- name: test\n  context: {{cluster: fake, user: me}}\n- name: other\n  context: {{cluster: nowhere, user: me}}\nusers:\n- name: me\n  user: {{}}\n",
            k.url()
        ),
    )
    .unwrap();
    let mut c = config(&k.url());
    c.connection = Connection::Kubeconfig {
        path: path.clone(),
        context: Some("test".into()),
    };
    let mut obs = Observer::start(registry(c));
    obs.until_endpoints("reviews", &[("10.0.0.1", 9080)]).await;
    // A missing file is an error status naming it; the adapter keeps trying.
    let mut c = config(&k.url());
    c.connection = Connection::Kubeconfig {
        path: dir.path().join("missing"),
        context: None,
    };
    let mut obs = Observer::start(registry(c));
    let seen = obs.until("an error status", |c, _| is_error(c)).await;
    let Some(Change::Status(SourceStatus::Error { message })) = seen.last() else {
        panic!("{seen:?}");
    };
    assert!(
        message.contains("kubeconfig") && message.contains("missing"),
        "{message}"
    );
    assert!(obs.is_running());
}

/// The fuzzed all-fields fixtures, served by the fake, pass through the
/// adapter without a decoding error (unknown values tolerated).
#[tokio::test]
async fn the_fixture_objects_served_by_the_fake_are_read() {
    use anymesh_testkit::fixtures;
    let k = FakeKube::start().await;
    k.apply(
        Kind::Service,
        fixtures::json("kubernetes/service_roundtrip_allfields_fuzzed.json"),
    );
    k.apply(
        Kind::Pod,
        fixtures::json("kubernetes/pod_roundtrip_allfields_fuzzed.json"),
    );
    let mut slice = fixtures::json("kubernetes/endpointslice_roundtrip_allfields_fuzzed.json");
    // Joined to the fuzzed Service and its pod, on a TCP port.
    slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("nameValue");
    slice["ports"][0]["protocol"] = json!("TCP");
    slice["endpoints"][0]["targetRef"]["kind"] = json!("Pod");
    k.apply(Kind::EndpointSlice, slice);
    let mut docs = fixtures::json("kubernetes/endpointslice_terminating_and_ready_docs.json");
    docs["metadata"] = json!({"name": "docs", "namespace": "namespaceValue",
                              "labels": {"kubernetes.io/service-name": "nameValue"}});
    docs["ports"] = json!([{"name": "nameValue", "port": 3, "protocol": "TCP"}]);
    k.apply(Kind::EndpointSlice, docs);
    let nodes = fixtures::json("kubernetes/nodelist_topology_labels_shaped.json");
    for node in nodes["items"].as_array().unwrap() {
        k.apply(Kind::Node, node.clone());
    }
    let mut obs = start(&k.url());
    let view = match obs.next().await {
        Change::Reset(v) => v,
        other => panic!("expected a Reset, got {other:?}"),
    };
    assert_eq!(view.services.len(), 1);
    assert_eq!(view.services[0].hostname.as_str(), "namevalue");
    let mut eps: Vec<(String, Health)> = view
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.health))
        .collect();
    eps.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        eps,
        vec![
            ("10.12.1.201".into(), Health::Draining),
            ("10.12.1.202".into(), Health::Healthy),
            ("addressesValue".into(), Health::Draining),
        ]
    );
    let fuzzed = view
        .endpoints
        .iter()
        .find(|e| e.address == "addressesValue")
        .unwrap();
    assert_eq!(
        fuzzed.labels.get("labelsKey").map(String::as_str),
        Some("labelsValue"),
        "pod labels by targetRef"
    );
    assert_eq!(fuzzed.ports[0].number, 3);
    assert_eq!(
        fuzzed.mesh, None,
        "the whole pod is read; it marks no sidecar"
    );
    // The docs slice's endpoints are on the shaped list's first node.
    for e in view
        .endpoints
        .iter()
        .filter(|e| e.address.starts_with("10.12.1."))
    {
        assert_eq!(
            (e.locality.region.as_deref(), e.locality.zone.as_deref()),
            (Some("us-central1"), Some("us-central1-c")),
            "{}",
            e.address
        );
    }
}

/// The fake's protocol, read with kube's own `Api`: pages with `continue`,
/// an expired token's 410 with a fresh token, metadata-only answers.
#[tokio::test]
async fn the_fake_pages_lists_and_expires_continue_tokens() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let k = FakeKube::start().await;
    deploy_reviews(&k, 3);
    let client = kube::Client::try_from(kube::Config::new(k.url().parse().unwrap())).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, vec!["reviews-1", "reviews-2", "reviews-3"]);
    assert!(rest.metadata.continue_.is_none());
    // A change, then the history up to it is compacted: the token's list
    // version is gone.
    k.put_pod("default", "reviews-4", "10.0.0.4", &[("version", "v2")]);
    k.compact();
    match pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    let meta = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 4);
    assert_eq!(
        meta.items[0].metadata.labels.clone().unwrap()["version"],
        "v1"
    );
    let all: Api<Pod> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
}

// ---- locality from Nodes ----------------------------------------------------------

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
const BETA_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const BETA_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";

/// (address, region, zone) of every endpoint of `service`, sorted.
type Where = Vec<(String, Option<String>, Option<String>)>;

fn localities(catalog: &anymesh_core::catalog::CatalogState, service: &str) -> Where {
    let snap = catalog.snapshot(0);
    let mut out: Where = snap
        .services
        .get(&Hostname::new(service).unwrap())
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| {
                    (
                        e.address.clone(),
                        e.locality.region.clone(),
                        e.locality.zone.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn at(
    address: &str,
    region: Option<&str>,
    zone: Option<&str>,
) -> (String, Option<String>, Option<String>) {
    (
        address.into(),
        region.map(str::to_string),
        zone.map(str::to_string),
    )
}

async fn until_localities(obs: &mut Observer, service: &str, want: Where) -> Vec<Change> {
    if localities(obs.catalog(), service) == want {
        return Vec::new();
    }
    obs.until(&format!("{service} localities {want:?}"), |_, catalog| {
        localities(catalog, service) == want
    })
    .await
}

/// reviews-1 on node n1 (GA labels), reviews-2 on n2 (beta labels only),
/// reviews-3 on n3 with its own slice zone.
fn deploy_across_nodes(k: &FakeKube) {
    k.put_node("n1", &[(REGION, "eu-west-1"), (ZONE, "eu-west-1a")]);
    k.put_node(
        "n2",
        &[(BETA_REGION, "eu-west-1"), (BETA_ZONE, "eu-west-1b")],
    );
    k.put_node("n3", &[(REGION, "eu-west-1"), (ZONE, "eu-west-1c")]);
    deploy_reviews(k, 3);
    reviews(
        k,
        &[
            ready(1).on_node("n1"),
            ready(2).on_node("n2"),
            ready(3).on_node("n3").in_zone("eu-west-1z"),
        ],
    );
}

#[tokio::test]
async fn endpoints_take_region_and_zone_from_their_nodes_and_follow_label_changes() {
    let k = FakeKube::start().await;
    deploy_across_nodes(&k);
    let mut obs = start(&k.url());
    let first = obs.next().await;
    assert!(matches!(first, Change::Reset(_)), "{first:?}");
    // The first Reset already carries the nodes' localities: it waits for
    // the nodes list.
    assert_eq!(
        localities(obs.catalog(), "reviews"),
        vec![
            at("10.0.0.1", Some("eu-west-1"), Some("eu-west-1a")),
            at("10.0.0.2", Some("eu-west-1"), Some("eu-west-1b")),
            at("10.0.0.3", Some("eu-west-1"), Some("eu-west-1z")),
        ],
        "GA labels, the beta fallback, the slice's zone over its node's"
    );
    // A node relabelled (its pods move with it): re-translated by watch.
    let lists = k.counts().lists;
    k.put_node("n1", &[(REGION, "eu-central-1"), (ZONE, "eu-central-1a")]);
    let seen = until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", Some("eu-central-1"), Some("eu-central-1a")),
            at("10.0.0.2", Some("eu-west-1"), Some("eu-west-1b")),
            at("10.0.0.3", Some("eu-west-1"), Some("eu-west-1z")),
        ],
    )
    .await;
    assert!(
        !seen.iter().any(|c| matches!(c, Change::Reset(_))),
        "an upsert, not a relist: {seen:?}"
    );
    assert_eq!(k.counts().lists, lists, "by watch, without a relist");
    // Labels that do not touch topology change nothing.
    k.put_node(
        "n1",
        &[
            (REGION, "eu-central-1"),
            (ZONE, "eu-central-1a"),
            ("node.kubernetes.io/instance-type", "m5.large"),
        ],
    );
    // An endpoint moving to a node not (yet) known: region unset, zone
    // from the slice only.
    reviews(
        &k,
        &[
            ready(1).on_node("n1"),
            ready(2).on_node("n9"),
            ready(3).on_node("n9").in_zone("eu-west-1z"),
        ],
    );
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", Some("eu-central-1"), Some("eu-central-1a")),
            at("10.0.0.2", None, None),
            at("10.0.0.3", None, Some("eu-west-1z")),
        ],
    )
    .await;
    // The node appears: its endpoints gain its region and zone.
    k.put_node("n9", &[(REGION, "us-east-1"), (ZONE, "us-east-1d")]);
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", Some("eu-central-1"), Some("eu-central-1a")),
            at("10.0.0.2", Some("us-east-1"), Some("us-east-1d")),
            at("10.0.0.3", Some("us-east-1"), Some("eu-west-1z")),
        ],
    )
    .await;
    // And loses them when it is deleted.
    assert!(k.delete(Kind::Node, "", "n9"));
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", Some("eu-central-1"), Some("eu-central-1a")),
            at("10.0.0.2", None, None),
            at("10.0.0.3", None, Some("eu-west-1z")),
        ],
    )
    .await;
    assert!(!obs.log.iter().any(is_error), "{:?}", obs.log);
}

#[tokio::test]
async fn nodes_forbidden_leaves_the_slice_zone_and_retries_at_the_resync_pace() {
    let k = FakeKube::start().await;
    deploy_across_nodes(&k);
    // A service account without `nodes` RBAC.
    k.refuse(Kind::Node, Some(403));
    let mut obs = start(&k.url());
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", None, None),
            at("10.0.0.2", None, None),
            at("10.0.0.3", None, Some("eu-west-1z")),
        ],
    )
    .await;
    // Everything else keeps working: a slice change arrives by watch.
    reviews(
        &k,
        &[
            ready(1).on_node("n1").in_zone("eu-west-1a"),
            ready(2).on_node("n2"),
            ready(3).on_node("n3").in_zone("eu-west-1z"),
        ],
    );
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", None, Some("eu-west-1a")),
            at("10.0.0.2", None, None),
            at("10.0.0.3", None, Some("eu-west-1z")),
        ],
    )
    .await;
    // The nodes list is retried, no faster than `backoff.max` (200 ms here):
    // of two more refusals, the second follows a whole pause.
    let refused = k.counts().failed;
    assert!(refused >= 1, "the nodes list was tried");
    let since = std::time::Instant::now();
    eventually("two more refused nodes lists", || {
        k.counts().failed >= refused + 2
    })
    .await;
    assert!(
        since.elapsed() >= Duration::from_millis(200),
        "paced retries, not a hot loop: {:?}",
        since.elapsed()
    );
    assert!(
        !obs.log.iter().any(is_error),
        "a refusal for nodes is not an error: {:?}",
        obs.log
    );
    // The permission granted: the next retry lists the nodes.
    k.refuse(Kind::Node, None);
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", Some("eu-west-1"), Some("eu-west-1a")),
            at("10.0.0.2", Some("eu-west-1"), Some("eu-west-1b")),
            at("10.0.0.3", Some("eu-west-1"), Some("eu-west-1z")),
        ],
    )
    .await;
    // Revoked again (the watch is cut, the relist refused, here as 404):
    // back to the slices' zones, still no error.
    k.refuse(Kind::Node, Some(404));
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", None, Some("eu-west-1a")),
            at("10.0.0.2", None, None),
            at("10.0.0.3", None, Some("eu-west-1z")),
        ],
    )
    .await;
    assert!(!obs.log.iter().any(is_error), "{:?}", obs.log);
}

#[tokio::test]
async fn with_nodes_off_the_nodes_are_never_requested() {
    let k = FakeKube::start().await;
    deploy_across_nodes(&k);
    k.refuse(Kind::Node, Some(403));
    let mut c = config(&k.url());
    c.nodes = false;
    let mut obs = Observer::start(registry(c));
    until_localities(
        &mut obs,
        "reviews",
        vec![
            at("10.0.0.1", None, None),
            at("10.0.0.2", None, None),
            at("10.0.0.3", None, Some("eu-west-1z")),
        ],
    )
    .await;
    eventually("three watches open", || k.counts().watches >= 3).await;
    assert_eq!(k.counts().failed, 0, "no nodes request was made");
}

/// The mesh proxy of each endpoint of `service`, by address.
fn meshes(
    catalog: &anymesh_core::CatalogState,
    service: &str,
) -> Vec<(String, Option<anymesh_core::model::MeshProxy>)> {
    let snap = catalog.snapshot(0);
    let mut out: Vec<_> = snap
        .services
        .get(&Hostname::new(service).unwrap())
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.mesh.clone()))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Pods marked as having a sidecar (Istio's `security.istio.io/tlsMode`
/// label, anymesh's annotations) give their endpoints a mesh proxy with the
/// pod's namespace and service account; a pod whose annotation cannot be
/// used loses its endpoint (named in the status) until it is fixed; marking
/// a running pod later reaches its endpoint through the pod watch.
#[tokio::test]
async fn sidecar_pods_give_their_endpoints_a_mesh_proxy() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    use anymesh_testkit::kubernetes::pod_with;
    let k = FakeKube::start().await;
    k.put_service("default", "reviews", &[("http", 9080)]);
    let istio = [("app", "reviews"), ("security.istio.io/tlsMode", "istio")];
    k.apply(
        Kind::Pod,
        pod_with(
            "default",
            "reviews-1",
            "10.0.0.1",
            &istio,
            &[],
            Some("bookinfo-reviews"),
        ),
    );
    k.apply(
        Kind::Pod,
        pod_with(
            "default",
            "reviews-2",
            "10.0.0.2",
            &[("app", "reviews")],
            &[],
            Some("default"),
        ),
    );
    k.apply(
        Kind::Pod,
        pod_with(
            "default",
            "reviews-3",
            "10.0.0.3",
            &[("app", "reviews")],
            &[
                ("anymesh.io/inject", "true"),
                ("anymesh.io/inbound-port", "sidecar"),
            ],
            Some("default"),
        ),
    );
    reviews(&k, &[ready(1), ready(2), ready(3)]);
    let mut obs = start(&k.url());
    obs.until("reviews-3 refused", |c, _| {
        matches!(c, Change::Status(SourceStatus::Degraded { message })
            if message.contains(r#"endpoint 10.0.0.3 of pod default/reviews-3: annotation anymesh.io/inbound-port "sidecar": not a port number 1..=65535"#))
    })
    .await;
    let proxy = |port, sa: &str| {
        Some(MeshProxy::new(
            port,
            Some("default".into()),
            Some(sa.into()),
        ))
    };
    assert_eq!(
        meshes(obs.catalog(), "reviews"),
        [
            (
                "10.0.0.1".to_string(),
                proxy(DEFAULT_MESH_PORT, "bookinfo-reviews")
            ),
            ("10.0.0.2".to_string(), None),
        ]
    );

    // The injector marks reviews-2; reviews-3 is fixed.
    k.apply(
        Kind::Pod,
        pod_with(
            "default",
            "reviews-2",
            "10.0.0.2",
            &[("app", "reviews")],
            &[
                ("anymesh.io/inject", "true"),
                ("anymesh.io/inbound-port", "15001"),
            ],
            Some("default"),
        ),
    );
    k.apply(
        Kind::Pod,
        pod_with(
            "default",
            "reviews-3",
            "10.0.0.3",
            &[("app", "reviews")],
            &[("anymesh.io/inject", "true")],
            None,
        ),
    );
    let want = [
        (
            "10.0.0.1".to_string(),
            proxy(DEFAULT_MESH_PORT, "bookinfo-reviews"),
        ),
        ("10.0.0.2".to_string(), proxy(15001, "default")),
        ("10.0.0.3".to_string(), proxy(DEFAULT_MESH_PORT, "default")),
    ];
    obs.until("every pod behind its proxy", |_, catalog| {
        meshes(catalog, "reviews") == want
    })
    .await;
}
