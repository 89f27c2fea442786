//! [`ClusterRouting`] against the fake API server: VirtualServices and
//! DestinationRules listed and watched with the real kube client, each
//! validated on its own; an invalid one is reported and left out.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_kubernetes::{ClusterRouting, Connection, KubernetesConfig, RoutingView};
use anymesh_core::config::GoDuration;
use anymesh_testkit::kubernetes::Kind;
use anymesh_testkit::FakeKube;
use serde_json::{json, Value};
use tokio::sync::watch;

fn config(url: &str) -> KubernetesConfig {
    let mut c = KubernetesConfig::new(Connection::Url { url: url.into() });
    c.routing_from_cluster = true;
    c.backoff.initial = GoDuration(Duration::from_millis(20));
    c.backoff.max = GoDuration(Duration::from_millis(200));
    c
}

fn vs(ns: &str, name: &str, weights: (u32, u32)) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [name], "http": [{"route": [
            {"destination": {"host": name, "subset": "v1"}, "weight": weights.0},
            {"destination": {"host": name, "subset": "v2"}, "weight": weights.1}
        ]}]}
    })
}

/// Starts the watcher; the receiver sees every view it publishes.
fn start(
    c: KubernetesConfig,
) -> (
    watch::Receiver<Arc<RoutingView>>,
    tokio::task::JoinHandle<()>,
) {
    let routing = ClusterRouting::new("k8s", c).unwrap();
    let (tx, rx) = watch::channel(Arc::new(RoutingView::default()));
    let task = tokio::spawn(async move { routing.run(tx).await });
    (rx, task)
}

async fn until(
    rx: &mut watch::Receiver<Arc<RoutingView>>,
    what: &str,
    f: impl Fn(&RoutingView) -> bool,
) -> Arc<RoutingView> {
    let got = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| f(v)))
        .await
        .ok()
        .and_then(|r| r.ok().map(|v| v.clone()));
    match got {
        Some(v) => v,
        None => panic!("timed out waiting for {what}: {:?}", rx.borrow()),
    }
}

fn ids(v: &RoutingView) -> Vec<String> {
    v.set.virtual_services.iter().map(|r| r.id()).collect()
}

#[tokio::test]
async fn lists_and_watches_and_skips_an_invalid_resource() {
    let k = FakeKube::start().await;
    k.apply(Kind::VirtualService, vs("default", "reviews", (100, 0)));
    k.apply(Kind::VirtualService, vs("default", "ratings", (50, 40)));
    k.apply(
        Kind::DestinationRule,
        json!({"metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}),
    );
    let (mut rx, task) = start(config(&k.url()));
    let v = until(&mut rx, "the first list", |v| v.synced).await;
    assert_eq!(ids(&v), vec!["default/reviews"]);
    assert_eq!(v.set.destination_rules.len(), 1);
    assert_eq!(v.error, None);
    let errors: Vec<String> = v.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        vec!["k8s (cluster): VirtualService default/ratings: spec.http[0].route: weights sum to 90, must sum to 100"]
    );
    assert_eq!(
        v.set.virtual_services[0].spec.http[0].route[0].weight,
        Some(100)
    );

    // A change, a fix and a deletion arrive through the watch.
    k.apply(Kind::VirtualService, vs("default", "reviews", (0, 100)));
    until(&mut rx, "the new weights", |v| {
        v.set
            .virtual_services
            .first()
            .is_some_and(|r| r.spec.http[0].route[0].weight == Some(0))
    })
    .await;
    k.apply(Kind::VirtualService, vs("default", "ratings", (50, 50)));
    let v = until(&mut rx, "the fixed resource", |v| {
        v.set.virtual_services.len() == 2
    })
    .await;
    assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
    k.delete(Kind::DestinationRule, "default", "reviews");
    until(&mut rx, "the deletion", |v| {
        v.set.destination_rules.is_empty()
    })
    .await;

    // 410 Gone mid-watch: the watchers relist and nothing is lost.
    k.expire_watches();
    k.apply(Kind::VirtualService, vs("default", "details", (100, 0)));
    until(&mut rx, "the relist", |v| v.set.virtual_services.len() == 3).await;

    // The API server fails: the error is published, the resources stay.
    k.fail_with(Some(500));
    let v = until(&mut rx, "the error", |v| v.error.is_some()).await;
    assert_eq!(v.set.virtual_services.len(), 3);
    k.fail_with(None);
    until(&mut rx, "recovery", |v| v.error.is_none()).await;
    task.abort();
}

#[tokio::test]
async fn reads_only_the_watched_namespaces_at_the_configured_version() {
    let k = FakeKube::start().await;
    k.apply(Kind::VirtualService, vs("shop", "reviews", (100, 0)));
    k.apply(Kind::VirtualService, vs("other", "reviews", (100, 0)));
    let mut c = config(&k.url());
    c.namespaces = vec!["shop".into()];
    let (mut rx, task) = start(c.clone());
    let v = until(&mut rx, "the first list", |v| v.synced).await;
    assert_eq!(ids(&v), vec!["shop/reviews"]);
    task.abort();

    // The fake serves v1 only: a cluster without that version (or without
    // the CRDs) is an error naming the resource, retried.
    c.istio_version = "v1beta1".into();
    let (mut rx, task) = start(c.clone());
    let v = until(&mut rx, "the error", |v| v.error.is_some()).await;
    let e = v.error.clone().unwrap_or_default();
    assert!(
        e.contains("virtualservices.networking.istio.io in namespace shop"),
        "{e}"
    );
    assert!(!v.synced);
    task.abort();

    // list_once, as `anymesh check` uses it.
    c.istio_version = "v1".into();
    let v = ClusterRouting::new("k8s", c)
        .unwrap()
        .list_once()
        .await
        .unwrap();
    assert_eq!(ids(&v), vec!["shop/reviews"]);
}
