//! The Eureka registry end to end: the fake Eureka server of the testkit,
//! instances registered the way Spring services register, traffic through
//! the proxy following status changes.

use anymesh_testkit::{FakeEureka, FakeInstance};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_registered_in_eureka_receive_traffic_and_follow_status_changes() {
    let eureka = FakeEureka::start().await;
    let ups = upstreams(&["e1", "e2"]).await;
    let port = |i: usize| ups[i].addr.port();
    eureka.register(
        FakeInstance::new("WEB", "e1", "127.0.0.1", port(0))
            .with_vip("web-vip")
            .with_metadata("version", "v1"),
    );
    let registries = format!(
        "[{{name: eureka, type: eureka, servers: ['{}'], refresh_interval: 100ms}}]",
        eureka.url()
    );
    // All traffic of `web` goes to the instances whose metadata says v2.
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web]\n  http:\n  - name: v2\n    match: [{{headers: {{x-version: {{exact: v2}}}}}}]\n    route:\n    - destination: {{host: web, subset: v2}}\n  - name: all\n    route:\n    - destination: {{host: web}}\n---\n{}",
        subsets_dr("web", &["v1", "v2"], "")
    );
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;
    eventually("the eureka instance is routed", || async {
        (mesh.get("web", "/", &[]).await.1 == "e1").then_some(())
    })
    .await;
    // The application name, lower-cased, and the VIP address both route.
    assert_eq!(mesh.count("web-vip", 5, &[]).await.get("e1"), Some(&5));

    // A registration arrives through a delta; its metadata is a label.
    eureka.register(
        FakeInstance::new("WEB", "e2", "127.0.0.1", port(1)).with_metadata("version", "v2"),
    );
    eventually("traffic on e2", || async {
        (mesh.get("web", "/", &[("x-version", "v2")]).await.1 == "e2").then_some(())
    })
    .await;
    assert_eq!(
        mesh.count("web", 10, &[("x-version", "v2")])
            .await
            .get("e2"),
        Some(&10)
    );

    // e1 is marked DOWN: it stops receiving traffic, and explain says why.
    assert!(eureka.set_status("WEB", "e1", "DOWN"));
    eventually("e1 out of routing", || async {
        let c = mesh.count("web", 10, &[]).await;
        (c.get("e2") == Some(&10)).then_some(())
    })
    .await;
    let (_, explain) = mesh.admin("/explain?host=web").await;
    assert!(
        explain.contains("WEB/e1") && explain.contains("DOWN"),
        "{explain}"
    );

    // Back UP: traffic returns to it.
    assert!(eureka.clear_status_override("WEB", "e1", "UP"));
    eventually("e1 back in routing", || async {
        (mesh.count("web", 10, &[]).await.contains_key("e1")).then_some(())
    })
    .await;

    // The server restarts empty: the mass-deregistration guard keeps both
    // instances serving.
    eureka.restart_empty();
    eventually("the empty registry is seen", || async {
        let snap = mesh.mesh.catalog.borrow().clone();
        (snap.sources[0].held_endpoints == 2).then_some(())
    })
    .await;
    let c = mesh.count("web", 20, &[]).await;
    assert_eq!(c.values().sum::<usize>(), 20, "{c:?}");
}
