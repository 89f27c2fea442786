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

/// `integration/mesos/`: the app definition running a service with anymesh
/// beside it decodes with the adapter's own decoder, translates as intended,
/// and its command and configuration hang together.
#[test]
fn the_mesos_integration_app_definition_is_valid() {
    use anymesh::settings::{RegistryKind, Settings};
    use anymesh_adapter_marathon::{decode_apps, MarathonConfig, Task, Translator};
    use anymesh_core::{Health, SourceId};

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/mesos");
    let text = std::fs::read_to_string(dir.join("web-with-anymesh.json")).expect("app definition");
    let def: serde_json::Value = serde_json::from_str(&text).expect("the definition is JSON");
    // As `GET /v2/apps/{id}` would return it.
    let wrapped = serde_json::json!({ "app": def }).to_string();
    let list = decode_apps(wrapped.as_bytes()).expect("decodes as a Marathon app");
    assert!(list.problems.is_empty(), "{:?}", list.problems);
    let app = &list.apps[0];
    assert_eq!(app.id, "/shop/web");
    assert_eq!(app.labels["version"], "v1");

    // Only the service's port is a mesh port; the sidecar's are skipped.
    let tr = Translator::new(
        SourceId::new("mesos"),
        &MarathonConfig::new(["http://m:8080"]),
    );
    let svc = tr.service(app).expect("a service");
    assert_eq!(svc.hostname.as_str(), "web.shop");
    let mut with_ports = app.clone();
    for (p, n) in with_ports
        .port_definitions
        .iter_mut()
        .zip([10000, 10001, 10002])
    {
        p.port = n;
    }
    let svc = tr.service(&with_ports).expect("a service");
    let declared: Vec<_> = svc
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.number))
        .collect();
    assert_eq!(declared, [("http", 10000)]);

    // A running task gets traffic on its `http` host port only when both
    // health checks (the service's and anymesh's /ready) are alive.
    let task = |alive: [bool; 2]| -> Task {
        let results: Vec<_> = alive
            .iter()
            .map(|a| serde_json::json!({"alive": a, "consecutiveFailures": 0}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "shop_web.1", "host": "10.0.0.7", "ports": [31000, 31001, 31002],
            "state": "TASK_RUNNING", "healthCheckResults": results
        }))
        .expect("a task")
    };
    let ep = tr.endpoint(app, &task([true, true])).expect("an endpoint");
    assert_eq!((ep.address.as_str(), ep.ports.len()), ("10.0.0.7", 1));
    assert_eq!(
        (ep.ports[0].name.as_str(), ep.ports[0].number),
        ("http", 31000)
    );
    assert_eq!(ep.health, Health::Healthy);
    let ep = tr.endpoint(app, &task([true, false])).expect("an endpoint");
    assert_eq!(
        ep.health,
        Health::Unhealthy,
        "anymesh not ready: no traffic"
    );

    // Health checks point at existing ports; one is anymesh's /ready.
    let ports: Vec<&str> = def["portDefinitions"]
        .as_array()
        .expect("portDefinitions")
        .iter()
        .map(|p| p["name"].as_str().expect("every port is named"))
        .collect();
    let checks = def["healthChecks"].as_array().expect("healthChecks");
    assert_eq!(checks.len(), app.health_checks.len());
    for c in checks {
        let i = c["portIndex"].as_u64().expect("portIndex") as usize;
        assert!(i < ports.len(), "health check port index {i}");
    }
    assert!(checks.iter().any(|c| c["path"] == "/ready"
        && ports[c["portIndex"].as_u64().unwrap_or(0) as usize] == "anymesh-admin"));

    // Every $PORT_<NAME> of the command is a named port (Marathon exports
    // PORT_<NAME> upper-cased with `-` as `_`).
    let cmd = def["cmd"].as_str().expect("cmd");
    let exported: Vec<String> = ports
        .iter()
        .map(|n| format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_")))
        .collect();
    for used in cmd.split('$').skip(1) {
        let var: String = used
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if var.starts_with("PORT_") {
            assert!(exported.contains(&var), "{var} is not a port of the app");
        }
    }
    assert!(cmd.contains("anymesh proxy --config anymesh.yaml"), "{cmd}");
    assert!(cmd.contains("anymesh.yaml.in"), "{cmd}");
    // Mesos runs the command with `sh -c`: it must at least parse.
    if let Ok(out) = std::process::Command::new("sh")
        .args(["-n", "-c", cmd])
        .output()
    {
        assert!(
            out.status.success(),
            "sh -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The configuration, with the ports filled in as the command does, loads.
    let template = std::fs::read_to_string(dir.join("anymesh.yaml.in")).expect("template");
    let yaml = template
        .replace("@OUTBOUND@", "31001")
        .replace("@ADMIN@", "31002");
    let settings = Settings::parse(&dir.join("anymesh.yaml"), &yaml)
        .expect("the filled-in anymesh.yaml loads");
    let RegistryKind::Marathon(cfg) = &settings.registries[0].kind else {
        panic!("the mesos config reads Marathon");
    };
    assert!(cfg.urls.iter().all(|u| u.starts_with("http")));
    assert_eq!(settings.listeners.outbound.port(), 31001);
}

/// One mesh service with endpoints from a file registry (a VM) and from
/// Marathon (Mesos tasks), split by version across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_with_endpoints_from_a_file_registry_and_marathon_split_by_version() {
    let marathon = FakeMarathon::start().await;
    let ups = upstreams(&["vm1", "mesos1"]).await;
    let mut app = FakeApp::new("/web").with_label("version", "v2");
    let task = FakeTask::new("web.mesos1", "127.0.0.1", &[ups[1].addr.port()]);
    app.tasks.insert(task.id.clone(), task);
    marathon.add_app(app);

    let files = tempfile::tempdir().expect("temp dir");
    let services_file = files.path().join("vm-services.yaml");
    write(
        &services_file,
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
    );
    let registries = format!(
        "[{{name: vms, type: file, path: '{}', poll_interval: 200ms}}, {{name: mesos, type: marathon, urls: ['{}'], guard: {{enabled: false}}}}]",
        services_file.display(),
        marathon.url()
    );
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web]\n  http:\n  - name: pinned\n    match: [{{headers: {{x-version: {{exact: v2}}}}}}]\n    route:\n    - destination: {{host: web, subset: v2}}\n  - name: split\n    route:\n    - destination: {{host: web, subset: v1}}\n      weight: 50\n    - destination: {{host: web, subset: v2}}\n      weight: 50\n---\n{}",
        subsets_dr("web", &["v1", "v2"], "")
    );
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;
    eventually("both registries' endpoints serve web", || async {
        let c = mesh.count("web", 40, &[]).await;
        (c.contains_key("vm1") && c.contains_key("mesos1")).then_some(())
    })
    .await;
    assert_eq!(
        mesh.count("web", 10, &[("x-version", "v2")])
            .await
            .get("mesos1"),
        Some(&10)
    );

    // The Mesos task is killed: the v2 subset is empty (the guard, which
    // would hold the last endpoint of a source, is off for this registry).
    assert!(marathon.kill_task("/web", "web.mesos1"));
    eventually("the killed task leaves the v2 subset", || async {
        (mesh.get("web", "/", &[("x-version", "v2")]).await.0
            == http::StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
    })
    .await;
}
