//! Routing config from the cluster: Istio VirtualServices and
//! DestinationRules served by the fake Kubernetes API server, read by the
//! real kube client (`routing_from_cluster: true`), merged with the routing
//! files; an invalid one is reported and skipped while the others apply.

use std::net::SocketAddr;
use std::path::Path;

use anymesh::upstream;
use anymesh_testkit::kubernetes::{Kind, SliceEndpoint};
use anymesh_testkit::FakeKube;
use serde_json::{json, Value};

use crate::harness::*;

/// A VirtualService for `reviews` sending `w1`% to subset v1, `w2`% to v2.
fn split(w1: u32, w2: u32) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": w1},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": w2}
        ]}]}
    })
}

/// A VirtualService whose weights sum to 90: refused by validation.
fn bad() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "ratings", "namespace": "default"},
        "spec": {"hosts": ["ratings"], "http": [{"route": [
            {"destination": {"host": "ratings", "subset": "v1"}, "weight": 50},
            {"destination": {"host": "ratings", "subset": "v2"}, "weight": 40}
        ]}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_virtual_services_in_the_cluster_and_skips_an_invalid_one() {
    let k = FakeKube::start().await;
    let v1 = upstream::spawn_on("v1", SocketAddr::from(([127, 0, 0, 2], 0)))
        .await
        .expect("upstream v1");
    let v2 = upstream::spawn_on("v2", SocketAddr::from(([127, 0, 0, 3], 0)))
        .await
        .expect("upstream v2");
    k.put_service("default", "reviews", &[("http", 9080)]);
    k.put_pod("default", "reviews-v1", "127.0.0.2", &[("version", "v1")]);
    k.put_pod("default", "reviews-v2", "127.0.0.3", &[("version", "v2")]);
    for (name, up, ip) in [
        ("reviews-v1", &v1, "127.0.0.2"),
        ("reviews-v2", &v2, "127.0.0.3"),
    ] {
        k.put_slice(
            "default",
            name,
            "reviews",
            &[("http", up.addr.port())],
            &[SliceEndpoint::ready(ip, name)],
        );
    }
    k.apply(Kind::VirtualService, split(100, 0));
    k.apply(Kind::VirtualService, bad());

    // The DestinationRule is in a routing file: cluster and file resources
    // are checked together (the cluster's subsets resolve against it).
    let registries = format!(
        "[{{name: k8s, type: kubernetes, connection: {{mode: url, url: '{}'}}, hostname: name, \
         namespaces: [default], routing_from_cluster: true, backoff: {{initial: 20ms, max: 200ms}}}}]",
        k.url()
    );
    let mesh =
        TestMesh::start_with_registries(&registries, &subsets_dr("reviews", &["v1", "v2"], ""))
            .await;

    // The invalid VirtualService is reported, naming it and where; the valid one applies.
    let config = eventually("the cluster's resources are read", || async {
        let (_, body) = mesh.admin("/config").await;
        body.contains("VirtualService default/ratings: spec.http[0].route: weights sum to 90")
            .then_some(body)
    })
    .await;
    assert!(
        config.contains(
            "error: k8s (cluster): VirtualService default/ratings: spec.http[0].route: weights sum to 90"
        ) && config.contains("(resource skipped)"),
        "{config}"
    );
    eventually("all of reviews goes to v1", || async {
        (mesh.count("reviews", 20, &[]).await.get("v1") == Some(&20)).then_some(())
    })
    .await;

    // Switch 100/0 → 0/100 in the cluster while traffic flows.
    let load = Load::start(&mesh, "reviews");
    eventually("load running", || async {
        (load.seen("v1") > 50).then_some(())
    })
    .await;
    assert_eq!(load.seen("v2"), 0);
    k.apply(Kind::VirtualService, split(0, 100));
    eventually("reviews switches to v2", || async {
        (mesh.count("reviews", 10, &[]).await.get("v2") == Some(&10)).then_some(())
    })
    .await;
    load.next_epoch();
    eventually("load on v2", || async {
        (load.seen("v2") > 100).then_some(())
    })
    .await;
    assert_eq!(load.seen("v1"), 0, "requests after the switch reached v1");
    let (sent, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    // The routing files are untouched and in force.
    let (_, metrics) = mesh.admin("/metrics").await;
    assert!(
        metrics.contains("anymesh_routing_files_in_force 1"),
        "{metrics}"
    );

    // Deleted in the cluster: reviews falls back to every endpoint.
    assert!(k.delete(Kind::VirtualService, "default", "reviews"));
    eventually("both versions serve again", || async {
        let c = mesh.count("reviews", 40, &[]).await;
        (c.contains_key("v1") && c.contains_key("v2")).then_some(())
    })
    .await;
    // Fixed in the cluster: the report goes away.
    let mut fixed = bad();
    fixed["spec"]["http"][0]["route"][1]["weight"] = json!(50);
    k.apply(Kind::VirtualService, fixed);
    eventually("the report is gone", || async {
        let (_, body) = mesh.admin("/config").await;
        (!body.contains("weights sum to 90")).then_some(())
    })
    .await;
}

/// `anymesh check` reads the cluster's routing resources once and fails on
/// an invalid one, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_routing_from_the_cluster_and_names_an_invalid_resource() {
    let k = FakeKube::start().await;
    k.apply(Kind::VirtualService, split(100, 0));
    k.apply(Kind::VirtualService, bad());
    k.apply(
        Kind::DestinationRule,
        json!({"metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"host": "reviews", "subsets": [
                   {"name": "v1", "labels": {"version": "v1"}},
                   {"name": "v2", "labels": {"version": "v2"}}]}}),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("routes.yaml"), "");
    write(
        &dir.path().join("anymesh.yaml"),
        &format!(
            "registries: [{{name: k8s, type: kubernetes, connection: {{mode: url, url: '{}'}}, \
             routing_from_cluster: true}}]\nrouting: [routes.yaml]\n",
            k.url()
        ),
    );
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out) = run(&["check", "--timeout", "10s"], &cfg).await;
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(
            "registry k8s: routing from the cluster (networking.istio.io/v1): \
             1 VirtualServices, 1 DestinationRules (1 skipped)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "error: k8s (cluster): VirtualService default/ratings: spec.http[0].route: weights sum to 90"
        ),
        "{out}"
    );

    let (code, out) = run(&["check", "--offline"], &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("routing from the cluster (networking.istio.io/v1): not read"),
        "{out}"
    );
}

async fn run(args: &[&str], cfg: &Path) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_anymesh"));
    cmd.args(args).arg("-c").arg(cfg);
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().expect("run anymesh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .expect("join")
}
