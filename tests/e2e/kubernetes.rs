//! The Kubernetes registry end to end: the fake Kubernetes API server of the
//! testkit, read by the real kube client; traffic through the proxy follows
//! EndpointSlice changes and pod labels.

use std::net::SocketAddr;

use anymesh::upstream;
use anymesh_testkit::kubernetes::SliceEndpoint;
use anymesh_testkit::FakeKube;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_from_the_kubernetes_api_receive_traffic_split_by_pod_version() {
    let k = FakeKube::start().await;
    // Two pods with their own loopback addresses, as pods have their own IPs.
    let v1 = upstream::spawn_on("v1", SocketAddr::from(([127, 0, 0, 2], 0)))
        .await
        .expect("upstream v1");
    let v2 = upstream::spawn_on("v2", SocketAddr::from(([127, 0, 0, 3], 0)))
        .await
        .expect("upstream v2");
    k.put_service("default", "reviews", &[("http", 9080)]);
    k.put_pod(
        "default",
        "reviews-v1-a",
        "127.0.0.2",
        &[("app", "reviews"), ("version", "v1")],
    );
    k.put_pod(
        "default",
        "reviews-v2-a",
        "127.0.0.3",
        &[("app", "reviews"), ("version", "v2")],
    );
    // Ports are per slice: one slice per target port.
    let slice_v1 = |eps: &[SliceEndpoint]| {
        k.put_slice(
            "default",
            "reviews-v1",
            "reviews",
            &[("http", v1.addr.port())],
            eps,
        );
    };
    let slice_v2 = |eps: &[SliceEndpoint]| {
        k.put_slice(
            "default",
            "reviews-v2",
            "reviews",
            &[("http", v2.addr.port())],
            eps,
        );
    };
    slice_v1(&[SliceEndpoint::ready("127.0.0.2", "reviews-v1-a")]);
    slice_v2(&[SliceEndpoint::ready("127.0.0.3", "reviews-v2-a")]);

    let registries = format!(
        "[{{name: k8s, type: kubernetes, connection: {{mode: url, url: '{}'}}, hostname: name, namespaces: [default]}}]",
        k.url()
    );
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - name: v2\n    match: [{{headers: {{x-version: {{exact: v2}}}}}}]\n    route:\n    - destination: {{host: reviews, subset: v2}}\n  - name: v1\n    route:\n    - destination: {{host: reviews, subset: v1}}\n---\n{}",
        subsets_dr("reviews", &["v1", "v2"], "")
    );
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;
    eventually("the kubernetes endpoints are routed", || async {
        (mesh.get("reviews", "/", &[]).await.1 == "v1").then_some(())
    })
    .await;
    assert_eq!(
        mesh.count("reviews", 10, &[("x-version", "v2")])
            .await
            .get("v2"),
        Some(&10)
    );
    // The cluster DNS names are aliases of the same service.
    assert_eq!(
        mesh.count("reviews.default.svc.cluster.local", 5, &[])
            .await
            .get("v1"),
        Some(&5)
    );

    // The v2 pod's readiness probe fails: it leaves routing, explain says why.
    slice_v2(&[SliceEndpoint::not_ready("127.0.0.3", "reviews-v2-a")]);
    eventually("v2 out of routing", || async {
        (mesh.get("reviews", "/", &[("x-version", "v2")]).await.1 != "v2").then_some(())
    })
    .await;
    let (_, explain) = mesh.admin("/explain?host=reviews").await;
    assert!(explain.contains("default/reviews/127.0.0.3"), "{explain}");
    assert!(
        explain.contains("\"k8s.ready\": \"false\"")
            && explain.contains("\"reason\": \"unhealthy\""),
        "{explain}"
    );

    // Ready again, then relabelled v1 on the pod: traffic follows the label.
    slice_v2(&[SliceEndpoint::ready("127.0.0.3", "reviews-v2-a")]);
    eventually("v2 back", || async {
        (mesh.get("reviews", "/", &[("x-version", "v2")]).await.1 == "v2").then_some(())
    })
    .await;
    k.put_pod(
        "default",
        "reviews-v2-a",
        "127.0.0.3",
        &[("app", "reviews"), ("version", "v1")],
    );
    eventually("both pods serve v1", || async {
        let c = mesh.count("reviews", 20, &[]).await;
        (c.contains_key("v1") && c.contains_key("v2")).then_some(())
    })
    .await;
}

/// One mesh service with endpoints in Kubernetes and in a file registry (a
/// VM), split by version across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_with_endpoints_in_kubernetes_and_on_a_vm() {
    let k = FakeKube::start().await;
    let pod = upstream::spawn_on("pod-v1", SocketAddr::from(([127, 0, 0, 2], 0)))
        .await
        .expect("upstream pod-v1");
    let vm = upstream::spawn("vm-v2").await.expect("upstream vm-v2");
    k.put_service("shop", "reviews", &[("http", 9080)]);
    k.put_pod("shop", "reviews-a", "127.0.0.2", &[("version", "v1")]);
    k.put_slice(
        "shop",
        "reviews-a",
        "reviews",
        &[("http", pod.addr.port())],
        &[SliceEndpoint::ready("127.0.0.2", "reviews-a")],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let services = dir.path().join("vm-services.yaml");
    std::fs::write(
        &services,
        format!(
            "services:\n  - name: reviews\n    ports: [{{name: http, port: 9080}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, labels: {{version: v2}}}}\n",
            vm.addr.port()
        ),
    )
    .expect("services file");
    let registries = format!(
        "[{{name: k8s, type: kubernetes, connection: {{mode: url, url: '{}'}}, hostname: name}}, {{name: vms, type: file, path: '{}'}}]",
        k.url(),
        services.display()
    );
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - name: v2\n    match: [{{headers: {{x-version: {{exact: v2}}}}}}]\n    route:\n    - destination: {{host: reviews, subset: v2}}\n  - name: v1\n    route:\n    - destination: {{host: reviews, subset: v1}}\n---\n{}",
        subsets_dr("reviews", &["v1", "v2"], "")
    );
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;
    eventually("both registries are routed", || async {
        let to_pod = mesh.get("reviews", "/", &[]).await.1 == "pod-v1";
        let to_vm = mesh.get("reviews", "/", &[("x-version", "v2")]).await.1 == "vm-v2";
        (to_pod && to_vm).then_some(())
    })
    .await;
    assert_eq!(
        mesh.count("reviews", 10, &[]).await.get("pod-v1"),
        Some(&10)
    );
    assert_eq!(
        mesh.count("reviews", 10, &[("x-version", "v2")])
            .await
            .get("vm-v2"),
        Some(&10)
    );
    let (_, explain) = mesh.admin("/explain?host=reviews").await;
    assert!(
        explain.contains("\"k8s\"") && explain.contains("\"vms\""),
        "both sources declare the service: {explain}"
    );
}
