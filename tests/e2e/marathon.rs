//! The Marathon registry end to end: the fake Marathon of the testkit, tasks
//! launched and killed the way Mesos does, traffic through the proxy
//! following the event stream.

use anymesh_testkit::{FakeApp, FakeMarathon, FakeTask};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_running_in_marathon_receive_traffic_and_follow_kills_and_health() {
    let marathon = FakeMarathon::start().await;
    let ups = upstreams(&["m1", "m2"]).await;
    let port = |i: usize| ups[i].addr.port();
    // `/shop/web` (reversed: `web.shop`), labelled v1, one health check.
    let mut app = FakeApp::new("/shop/web")
        .with_label("version", "v1")
        .with_health_checks(1);
    let mut task = FakeTask::new("shop_web.m1", "127.0.0.1", &[port(0)]);
    task.health = vec![(true, 0)];
    app.tasks.insert(task.id.clone(), task);
    marathon.add_app(app);
    let registries = format!(
        "[{{name: mesos, type: marathon, urls: ['{}'], backoff: {{initial: 50ms, max: 500ms}}}}]",
        marathon.url()
    );
    let mesh = TestMesh::start_with_registries(&registries, "").await;
    eventually("the marathon task is routed", || async {
        (mesh.get("web.shop", "/", &[]).await.1 == "m1").then_some(())
    })
    .await;

    // A second task is launched: both get traffic.
    assert!(marathon.launch(
        "/shop/web",
        FakeTask::new("shop_web.m2", "127.0.0.1", &[port(1)])
    ));
    eventually("traffic on both tasks", || async {
        let c = mesh.count("web.shop", 20, &[]).await;
        (c.contains_key("m1") && c.contains_key("m2")).then_some(())
    })
    .await;

    // m1's health check fails: it leaves routing, and explain says why.
    assert!(marathon.set_health("/shop/web", "shop_web.m1", false));
    eventually("m1 out of routing", || async {
        (mesh.count("web.shop", 10, &[]).await.get("m2") == Some(&10)).then_some(())
    })
    .await;
    let (_, explain) = mesh.admin("/explain?host=web.shop").await;
    assert!(
        explain.contains("shop_web.m1") && explain.contains("health check 0 failing"),
        "{explain}"
    );
    assert!(marathon.set_health("/shop/web", "shop_web.m1", true));
    eventually("m1 back in routing", || async {
        (mesh.count("web.shop", 20, &[]).await.contains_key("m1")).then_some(())
    })
    .await;

    // m2 is killed: only m1 serves.
    assert!(marathon.kill_task("/shop/web", "shop_web.m2"));
    eventually("m2 gone", || async {
        (mesh.count("web.shop", 10, &[]).await.get("m1") == Some(&10)).then_some(())
    })
    .await;
    let (_, explain) = mesh.admin("/explain?host=web.shop").await;
    assert!(!explain.contains("shop_web.m2"), "{explain}");
}
