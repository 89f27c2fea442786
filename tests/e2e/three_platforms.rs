//! One mesh service with endpoints on Kubernetes, on Marathon (Mesos) and on
//! a VM (file registry) at once, split by version across the three.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anymesh::upstream;
use anymesh_testkit::kubernetes::SliceEndpoint;
use anymesh_testkit::{FakeApp, FakeKube, FakeMarathon, FakeTask};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_on_kubernetes_marathon_and_a_vm_splits_by_version() {
    // v1 on Kubernetes (a pod on 127.0.0.2), v2 as a Marathon task, v3 on a VM.
    let pod = upstream::spawn_on("k8s-v1", SocketAddr::from(([127, 0, 0, 2], 0)))
        .await
        .expect("upstream k8s-v1");
    let task_up = upstream::spawn("mesos-v2")
        .await
        .expect("upstream mesos-v2");
    let vm = upstream::spawn("vm-v3").await.expect("upstream vm-v3");

    let k = FakeKube::start().await;
    k.put_service("shop", "reviews", &[("http", 9080)]);
    k.put_pod("shop", "reviews-a", "127.0.0.2", &[("version", "v1")]);
    k.put_slice(
        "shop",
        "reviews-a",
        "reviews",
        &[("http", pod.addr.port())],
        &[SliceEndpoint::ready("127.0.0.2", "reviews-a")],
    );

    let marathon = FakeMarathon::start().await;
    let mut app = FakeApp::new("/reviews").with_label("version", "v2");
    let task = FakeTask::new("reviews.t1", "127.0.0.1", &[task_up.addr.port()]);
    app.tasks.insert(task.id.clone(), task);
    marathon.add_app(app);

    let dir = tempfile::tempdir().expect("temp dir");
    let services = dir.path().join("vm-services.yaml");
    std::fs::write(
        &services,
        format!(
            "services:\n  - name: reviews\n    ports: [{{name: http, port: 9080}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, labels: {{version: v3}}}}\n",
            vm.addr.port()
        ),
    )
    .expect("services file");

    let registries = format!(
        "[{{name: k8s, type: kubernetes, connection: {{mode: url, url: '{}'}}, hostname: name}}, \
          {{name: mesos, type: marathon, urls: ['{}']}}, \
          {{name: vms, type: file, path: '{}'}}]",
        k.url(),
        marathon.url(),
        services.display()
    );
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - name: split\n    route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 60\n    - destination: {{host: reviews, subset: v2}}\n      weight: 30\n    - destination: {{host: reviews, subset: v3}}\n      weight: 10\n---\n{}",
        subsets_dr("reviews", &["v1", "v2", "v3"], "")
    );
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;
    eventually("all three platforms serve reviews", || async {
        let c = mesh.count("reviews", 60, &[]).await;
        (c.len() == 3).then_some(())
    })
    .await;

    // 2,000 requests: each share within 5σ of its weight.
    let n = 2000usize;
    let counts: BTreeMap<String, usize> = mesh.count("reviews", n, &[]).await;
    for (who, p) in [("k8s-v1", 0.6), ("mesos-v2", 0.3), ("vm-v3", 0.1)] {
        let got = counts.get(who).copied().unwrap_or(0) as f64;
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (got - mean).abs() <= 5.0 * sigma,
            "{who}: {got} of {n}, expected {mean} ± {:.0}: {counts:?}",
            5.0 * sigma
        );
    }

    // explain: one service, three sources, each endpoint with its own provenance.
    let (_, explain) = mesh.admin("/explain?host=reviews").await;
    for source in ["\"k8s\"", "\"mesos\"", "\"vms\""] {
        assert!(explain.contains(source), "{source} in {explain}");
    }
}
