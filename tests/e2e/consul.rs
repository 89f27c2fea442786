//! The Consul registry end to end: a fake Consul agent (real HTTP, blocking
//! queries), instances tagged `v1`/`v2`, traffic through the proxy, a
//! deregistration followed, and the routing files deciding which services
//! get a long-poll.

use std::collections::BTreeSet;

use anymesh_core::Health;
use anymesh_testkit::consul::Instance;
use anymesh_testkit::FakeConsul;

use crate::harness::*;

const WEB_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http:\n    - match:\n        - headers:\n            x-canary: {exact: \"1\"}\n      route:\n        - destination: {host: web, subset: v2}\n    - route:\n        - destination: {host: web, subset: v1}\n---\n";

const OTHER_VS: &str = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other}\nspec:\n  hosts: [other]\n  http:\n    - route:\n        - destination: {host: other}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_instances_receive_traffic_and_follow_deregistration_and_routing() {
    let fake = FakeConsul::start().await;
    let ups = upstreams(&["c1", "c2", "c3"]).await;
    let port = |i: usize| ups[i].addr.port();
    let inst = |svc: &str, id: &str, i: usize, tag: &str| {
        Instance::new(svc, id, "127.0.0.1", port(i)).tags(&[tag])
    };
    fake.register(inst("web", "c1", 0, "v1"));
    fake.register(inst("web", "c2", 1, "v2"));
    fake.register(inst("web", "c3", 2, "v1"));
    fake.register(inst("other", "o1", 2, "v1"));

    let registries = format!(
        "[{{name: consul, type: consul, address: '{}', wait: 2s, min_query_interval: 10ms, \
         jitter: 5ms, mapping: {{labels: {{tags: [{{match: '^v[0-9]+$', key: version}}]}}}}}}]",
        fake.url()
    );
    let routes = format!("{WEB_VS}{}", subsets_dr("web", &["v1", "v2"], ""));
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;

    // Tags became `version` labels: the subsets route by them.
    let canary = mesh.count("web", 10, &[("x-canary", "1")]).await;
    assert_eq!(canary.get("c2"), Some(&10), "{canary:?}");
    eventually("both v1 instances served", || async {
        let c = mesh.count("web", 20, &[]).await;
        (c.len() == 2 && !c.contains_key("c2")).then_some(())
    })
    .await;

    // Only the routed service has a long-poll in the agent.
    let only = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    eventually("a long-poll on web only", || async {
        (fake.blocked_services() == only(&["web"])).then_some(())
    })
    .await;

    // A deregistration reaches routing through the blocking query.
    fake.deregister("node-127.0.0.1", "c1");
    eventually("c1 gone from routing", || async {
        let c = mesh.count("web", 10, &[]).await;
        (c.get("c3") == Some(&10)).then_some(())
    })
    .await;

    // A check going critical takes an instance out too.
    fake.set_check("node-127.0.0.1", "c3", "critical");
    eventually("c3 unhealthy in the catalog", || async {
        let snap = mesh.mesh.catalog.borrow().clone();
        let web = snap
            .services
            .values()
            .find(|s| s.hostname.as_str() == "web")?;
        web.endpoints
            .iter()
            .any(|e| e.provenance.native_id.ends_with("/c3") && e.health == Health::Unhealthy)
            .then_some(())
    })
    .await;
    eventually("no healthy v1 instance left: 503", || async {
        let (status, _, _) = mesh.get("web", "/", &[]).await;
        (status == http::StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    fake.set_check("node-127.0.0.1", "c3", "passing");

    // Provenance names the Consul node and service ID.
    let (_, cfg) = mesh.admin("/config").await;
    assert!(cfg.contains("node-127.0.0.1/c2"), "{cfg}");

    // Routing starts referencing `other`: its long-poll starts and it is served.
    write(&mesh.path("routes.yaml"), &format!("{routes}{OTHER_VS}"));
    eventually("other served", || async {
        (mesh.get("other", "/", &[]).await.1 == "c3").then_some(())
    })
    .await;
    eventually("long-polls on web and other", || async {
        (fake.blocked_services() == only(&["other", "web"])).then_some(())
    })
    .await;
}

/// The agent goes away under load: no request fails, the source is marked
/// stale; it comes back with a change made meanwhile and the proxy converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_while_the_consul_agent_is_unreachable() {
    let fake = FakeConsul::start().await;
    let ups = upstreams(&["k1", "k2"]).await;
    for (i, up) in ups.iter().enumerate() {
        fake.register(Instance::new(
            "web",
            &format!("k{}", i + 1),
            "127.0.0.1",
            up.addr.port(),
        ));
    }
    let registries = format!(
        "[{{name: consul, type: consul, address: '{}', services: [web], wait: 2s, \
         min_query_interval: 10ms, jitter: 5ms, backoff: {{initial: 50ms, max: 200ms}}}}]",
        fake.url()
    );
    let mesh = TestMesh::start_with_registries(&registries, "").await;
    eventually("both instances served", || async {
        (mesh.count("web", 20, &[]).await.len() == 2).then_some(())
    })
    .await;

    let load = Load::start(&mesh, "web");
    eventually("load running", || async {
        (load.seen("k1") + load.seen("k2") > 50).then_some(())
    })
    .await;
    fake.stop();
    eventually("the source is marked stale", || async {
        let snap = mesh.mesh.catalog.borrow().clone();
        snap.sources[0].stale_since.map(|_| ())
    })
    .await;
    load.next_epoch();
    eventually("load continues during the outage", || async {
        (load.seen("k1") + load.seen("k2") > 200).then_some(())
    })
    .await;
    let (sent, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    fake.deregister("node-127.0.0.1", "k1");
    fake.start_again().await;
    eventually("only k2 left", || async {
        (mesh.count("web", 10, &[]).await.get("k2") == Some(&10)).then_some(())
    })
    .await;
    let snap = mesh.mesh.catalog.borrow().clone();
    assert!(snap.sources[0].connected && snap.sources[0].stale_since.is_none());
}
