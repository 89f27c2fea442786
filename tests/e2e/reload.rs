//! Changes to the watched files apply without restart and drop nothing.

use http::StatusCode;

use crate::harness::*;

fn routes_to(mesh: &TestMesh, port: u16) -> bool {
    let r = mesh.mesh.router.current();
    r.table.clusters.iter().any(|c| {
        c.endpoints
            .iter()
            .any(|e| e.authority.ends_with(&format!(":{port}")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_added_and_removed_live_without_dropping_requests() {
    let ups = upstreams(&["one", "two"]).await;
    let mesh = TestMesh::start(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
    )
    .await;
    let load = Load::start(&mesh, "web");
    eventually("traffic on one", || async {
        (load.seen("one") > 50).then_some(())
    })
    .await;

    // A slow request to `one` that is still in flight when `one` is removed.
    let before = ups[0].received();
    let slow = {
        let client = mesh.client.clone();
        let req = http::Request::get(format!("http://{}/", mesh.proxy()))
            .header("host", "web")
            .header("x-delay-ms", "1500")
            .body(http_body_util::Full::default())
            .expect("request");
        tokio::spawn(async move { client.request(req).await })
    };
    eventually("the slow request reached one", || async {
        (ups[0].received() > before).then_some(())
    })
    .await;

    // Add `two`: it starts receiving traffic without a restart.
    write(
        &mesh.path("services.yaml"),
        &services(
            "web",
            "http",
            &[
                endpoint(&ups[0], "version: v1"),
                endpoint(&ups[1], "version: v1"),
            ],
        ),
    );
    eventually("traffic on two", || async {
        (load.seen("two") > 50).then_some(())
    })
    .await;

    // Remove `one`: requests started after the swap never reach it.
    write(
        &mesh.path("services.yaml"),
        &services("web", "http", &[endpoint(&ups[1], "version: v1")]),
    );
    eventually("one removed from the route table", || async {
        (!routes_to(&mesh, ups[0].addr.port())).then_some(())
    })
    .await;
    load.next_epoch();
    eventually("more traffic on two", || async {
        (load.seen("two") > 100).then_some(())
    })
    .await;
    assert_eq!(
        load.seen("one"),
        0,
        "a removed endpoint got requests that started after its removal"
    );

    let slow = slow
        .await
        .expect("join")
        .expect("the in-flight request completed");
    assert_eq!(
        slow.status(),
        StatusCode::OK,
        "the request in flight across the removal was served"
    );
    assert_eq!(slow.headers()["x-upstream"], "one");

    let (total, failures) = load.finish().await;
    assert!(total > 200, "load ran: {total}");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test]
async fn broken_services_file_keeps_the_old_routing() {
    let ups = upstreams(&["one"]).await;
    let mesh = TestMesh::start(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
    )
    .await;
    assert_eq!(mesh.get("web", "/", &[]).await.1, "one");
    write(
        &mesh.path("services.yaml"),
        "services:\n  - name: web\n    endpoints: [ {address: 127.0.0.1, port: }\n",
    );
    let err = eventually("the file source reports the error", || async {
        let snap = mesh.mesh.catalog.borrow().clone();
        snap.sources.iter().find_map(|s| s.last_error.clone())
    })
    .await;
    assert!(err.contains("services.yaml"), "error names the file: {err}");
    assert!(
        err.contains("services.yaml:4:1:"),
        "error names line and column: {err}"
    );
    let counts = mesh.count("web", 20, &[]).await;
    assert_eq!(
        counts.get("one"),
        Some(&20),
        "old routing stays in force: {counts:?}"
    );
    let (_, cfg) = mesh.admin("/config").await;
    assert!(
        cfg.contains("stale_since"),
        "admin shows the source as stale"
    );
    // The registry's state as metrics (updated from each catalog snapshot).
    let metrics = eventually("stale in /metrics", || async {
        let (_, m) = mesh.admin("/metrics").await;
        m.contains(r#"anymesh_registry_stale{source="file"} 1"#)
            .then_some(m)
    })
    .await;
    assert!(
        metrics.contains(r#"anymesh_registry_connected{source="file"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"anymesh_registry_endpoints{source="file"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"anymesh_registry_changes_total{source="file"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn routing_file_changes_apply_and_broken_ones_are_refused() {
    let ups = upstreams(&["v1", "v2"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| endpoint(u, &format!("version: {}", u.name)))
        .collect();
    let to = |subset: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {{host: web, subset: {subset}}}\n---\n{}",
            subsets_dr("web", &["v1", "v2"], "")
        )
    };
    let mesh = TestMesh::start(&services("web", "http", &eps), &to("v1")).await;
    assert_eq!(mesh.count("web", 10, &[]).await.get("v1"), Some(&10));
    write(&mesh.path("routes.yaml"), &to("v2"));
    eventually("routing reloaded to v2", || async {
        (mesh.get("web", "/", &[]).await.1 == "v2").then_some(())
    })
    .await;

    // A broken routing file (unknown subset) is refused: wait until the reloader says so.
    write(&mesh.path("routes.yaml"), &to("v7"));
    eventually("the reload is refused", || async {
        let (_, m) = mesh.admin("/metrics").await;
        m.contains("anymesh_routing_files_in_force 0").then_some(())
    })
    .await;
    let (_, cfg) = mesh.admin("/config").await;
    assert!(cfg.contains("last reload refused"), "{cfg}");
    assert!(cfg.contains("v7"), "the refusal names the problem: {cfg}");
    let counts = mesh.count("web", 50, &[]).await;
    assert_eq!(
        counts.get("v2"),
        Some(&50),
        "the previous routing stays in force: {counts:?}"
    );

    // A valid file applies again.
    write(&mesh.path("routes.yaml"), &to("v1"));
    eventually("routing reloaded to v1", || async {
        (mesh.get("web", "/", &[]).await.1 == "v1").then_some(())
    })
    .await;
    let (_, m) = mesh.admin("/metrics").await;
    assert!(m.contains("anymesh_routing_files_in_force 1"), "{m}");
}

#[tokio::test]
async fn not_ready_until_the_registry_answers() {
    let ups = upstreams(&["one"]).await;
    let mesh = TestMesh::start_unready("").await;
    assert_eq!(
        mesh.admin("/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _, body) = mesh.get("web", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("not ready"), "{body}");
    write(
        &mesh.path("services.yaml"),
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
    );
    eventually("ready", || async {
        (mesh.admin("/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(mesh.get("web", "/", &[]).await.1, "one");
}

#[tokio::test]
async fn the_guard_holds_a_mass_removal_from_the_registry_file() {
    let ups = upstreams(&["one", "two", "three"]).await;
    let eps: Vec<String> = ups.iter().map(|u| endpoint(u, "version: v1")).collect();
    let mesh = TestMesh::start(&services("web", "http", &eps), "").await;
    // Two of three endpoints vanish at once: held (on by default, 60 s grace).
    write(
        &mesh.path("services.yaml"),
        &services("web", "http", &eps[..1]),
    );
    eventually("the guard holds two endpoints", || async {
        let snap = mesh.mesh.catalog.borrow().clone();
        (snap.sources[0].held_endpoints == 2).then_some(())
    })
    .await;
    let counts = mesh.count("web", 30, &[]).await;
    assert_eq!(counts.len(), 3, "all three still served: {counts:?}");
    let (_, cfg) = mesh.admin("/config").await;
    assert!(cfg.contains("\"held_endpoints\": 2"), "{cfg}");
}
