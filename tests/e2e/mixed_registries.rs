//! One mesh service fed by two registries at once: the fake Consul agent and
//! the fake Eureka server of the testkit, both configured in one
//! `anymesh.yaml`. Each registry says "version" its own way (Consul tags
//! `v1` and `version=v2`, Eureka metadata `ver: v1` / `ver: v2`); each
//! registry's mapping rules turn that into the `version` label the
//! DestinationRule's subsets select on, and a VirtualService splits 90/10.

use anymesh_testkit::consul::Instance;
use anymesh_testkit::{FakeConsul, FakeEureka, FakeInstance};
use serde_json::Value;

use crate::harness::*;

/// 90% to subset v1, 10% to subset v2 of `reviews`.
const SPLIT_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n    - name: split\n      route:\n        - destination: {host: reviews, subset: v1}\n          weight: 90\n        - destination: {host: reviews, subset: v2}\n          weight: 10\n---\n";

/// `/explain?host=reviews` as JSON, once it lists `n` endpoints.
async fn explain_with(mesh: &TestMesh, n: usize) -> Value {
    eventually("explain lists every endpoint", || async {
        let (status, body) = mesh.admin("/explain?host=reviews").await;
        if status != http::StatusCode::OK {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["endpoints"].as_array()?.len() == n).then_some(v)
    })
    .await
}

/// The explained endpoint whose native id ends with `/<id>`.
fn endpoint<'v>(x: &'v Value, id: &str) -> &'v Value {
    let suffix = format!("/{id}");
    x["endpoints"]
        .as_array()
        .and_then(|eps| {
            eps.iter().find(|e| {
                e["native_id"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(&suffix))
            })
        })
        .unwrap_or_else(|| panic!("no endpoint {id} in {x:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_from_consul_and_eureka_splits_90_10_by_version() {
    let ups = upstreams(&["c1", "c2", "e1", "e2"]).await;
    let port = |name: &str| {
        ups.iter()
            .find(|u| u.name == name)
            .map(|u| u.addr.port())
            .expect("an upstream of that name")
    };

    // Consul: service `reviews` (its name is the mesh hostname as it is); one
    // instance tagged `v1`, one tagged `version=v2`.
    let consul = FakeConsul::start().await;
    consul.register(Instance::new("reviews", "c1", "127.0.0.1", port("c1")).tags(&["v1"]));
    consul.register(Instance::new("reviews", "c2", "127.0.0.1", port("c2")).tags(&["version=v2"]));
    // An unrelated service the routing files never mention.
    consul.register(Instance::new("billing", "b1", "127.0.0.1", port("c1")).tags(&["v1"]));

    // Eureka: application `REVIEWS` (lower-cased to the same hostname), the
    // version in metadata under `ver`.
    let eureka = FakeEureka::start().await;
    eureka.register(
        FakeInstance::new("REVIEWS", "e1", "127.0.0.1", port("e1")).with_metadata("ver", "v1"),
    );
    eureka.register(
        FakeInstance::new("REVIEWS", "e2", "127.0.0.1", port("e2")).with_metadata("ver", "v2"),
    );

    let registries = format!(
        "[{{name: consul, type: consul, address: '{}', wait: 2s, min_query_interval: 10ms, \
         jitter: 5ms, mapping: {{labels: {{key_value_tags: true, \
         tags: [{{match: '^v[0-9]+$', key: version}}]}}}}}}, \
         {{name: eureka, type: eureka, servers: ['{}'], refresh_interval: 100ms, \
         mapping: {{labels: {{rename: {{ver: version}}}}}}}}]",
        consul.url(),
        eureka.url()
    );
    let routes = format!("{SPLIT_VS}{}", subsets_dr("reviews", &["v1", "v2"], ""));
    let mesh = TestMesh::start_with_registries(&registries, &routes).await;

    // Explain: the one service has both sources and all four endpoints.
    let x = explain_with(&mesh, 4).await;
    assert_eq!(x["service"]["hostname"], "reviews", "{x:#}");
    assert_eq!(
        x["service"]["sources"],
        serde_json::json!(["consul", "eureka"]),
        "both registries contribute to the one service: {x:#}"
    );
    let source_names: Vec<&str> = x["sources"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["source"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(source_names, ["consul", "eureka"], "{x:#}");

    // Provenance: each endpoint names its registry and its registry's own
    // id, and keeps the labels as that registry gave them.
    for (id, source, native_id, version) in [
        ("c1", "consul", "node-127.0.0.1/c1", "v1"),
        ("c2", "consul", "node-127.0.0.1/c2", "v2"),
        ("e1", "eureka", "REVIEWS/e1", "v1"),
        ("e2", "eureka", "REVIEWS/e2", "v2"),
    ] {
        let ep = endpoint(&x, id);
        assert_eq!(ep["source"], source, "{ep:#}");
        assert_eq!(ep["native_id"], native_id, "{ep:#}");
        assert_eq!(ep["labels"]["version"], version, "mapped label: {ep:#}");
        assert_eq!(ep["health"], "healthy", "{ep:#}");
    }
    // The raw labels show the two dialects behind the one `version` label.
    let raw = |id: &str| endpoint(&x, id)["raw_labels"].clone();
    assert_eq!(raw("c1")["v1"], "", "a bare Consul tag: {:#}", raw("c1"));
    assert_eq!(
        raw("c2")["version=v2"],
        "",
        "a k=v Consul tag: {:#}",
        raw("c2")
    );
    assert!(raw("c1").get("version").is_none(), "{:#}", raw("c1"));
    assert_eq!(raw("e2")["ver"], "v2", "Eureka metadata: {:#}", raw("e2"));
    assert_eq!(raw("e2")["eureka.status"], "UP", "{:#}", raw("e2"));
    assert!(raw("e2").get("version").is_none(), "{:#}", raw("e2"));
    // The mapped labels carry no trace of the native spellings.
    assert!(endpoint(&x, "e2")["labels"].get("ver").is_none());
    assert!(endpoint(&x, "c2")["labels"].get("version=v2").is_none());

    // Each subset's cluster holds one endpoint of each registry.
    for (id, eligible_in) in [("c1", "v1"), ("e1", "v1"), ("c2", "v2"), ("e2", "v2")] {
        let verdicts = endpoint(&x, id)["clusters"].as_array().cloned();
        let verdicts = verdicts.unwrap_or_default();
        let eligible: Vec<&str> = verdicts
            .iter()
            .filter(|c| c["verdict"] == "eligible")
            .filter_map(|c| c["cluster"].as_str())
            .collect();
        assert!(
            eligible.len() == 1 && eligible[0].contains(&format!("|{eligible_in}|reviews")),
            "{id} is eligible in subset {eligible_in} only: {verdicts:#?}"
        );
    }

    // The split. Binomial(n = 2000, p = 0.1): mean 200, sigma 13.4; 5 sigma
    // is 67 (a false failure about once in 1.7 million runs).
    let n = 2000;
    let counts = mesh.count("reviews", n, &[]).await;
    let got = |who: &str| counts.get(who).copied().unwrap_or(0);
    assert_eq!(
        got("c1") + got("c2") + got("e1") + got("e2"),
        n,
        "{counts:?}"
    );
    let v2 = got("c2") + got("e2");
    assert!((133..=267).contains(&v2), "v2 got {v2} of {n}: {counts:?}");
    // Within a subset both registries' endpoints serve.
    for who in ["c1", "c2", "e1", "e2"] {
        assert!(got(who) > 0, "{who} served nothing: {counts:?}");
    }

    // The merged view stays live per registry: Eureka takes e2 out of
    // service, Consul marks c1 critical; each subset is left with the other
    // registry's endpoint.
    assert!(eureka.set_status("REVIEWS", "e2", "OUT_OF_SERVICE"));
    consul.set_check("node-127.0.0.1", "c1", "critical");
    eventually("v1 served by e1 only, v2 by c2 only", || async {
        let x = explain_with(&mesh, 4).await;
        let health = |id: &str| endpoint(&x, id)["health"].clone();
        (health("e2") == "unhealthy" && health("c1") == "unhealthy").then_some(())
    })
    .await;
    let counts = mesh.count("reviews", 200, &[]).await;
    assert!(
        counts.keys().all(|who| who == "e1" || who == "c2"),
        "only e1 (v1) and c2 (v2) serve: {counts:?}"
    );
    let (e1, c2) = (
        counts.get("e1").copied().unwrap_or(0),
        counts.get("c2").copied().unwrap_or(0),
    );
    assert!(e1 > c2, "the 90/10 split holds: {counts:?}");

    // Only the routed service is long-polled in Consul.
    eventually("a long-poll on reviews only", || async {
        let polled = consul.blocked_services();
        (polled.len() == 1 && polled.contains("reviews")).then_some(())
    })
    .await;
}
