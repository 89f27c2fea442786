//! Istio's bookinfo sample `destination-rule-all-mtls.yaml` (every
//! service `ISTIO_MUTUAL`, subsets by `version`) in a caller's routing,
//! with a bookinfo-like `reviews`: versions v1..v3 behind proxy B (one
//! identity, `bookinfo-reviews`, as bookinfo's reviews deployments share).

use std::sync::atomic::Ordering;

use anymesh::upstream::Upstream;
use http::StatusCode;

use super::{caller, endpoint, server, Served};
use crate::harness::TestMesh;
use crate::mtls::pki::Root;
use crate::mtls::stats;

const ALL_MTLS: &str =
    include_str!("../../../core/tests/fixtures/istio-bookinfo/destination-rule-all-mtls.yaml");

/// B fronting reviews v1..v3 and the caller's proxy (productpage's
/// identity) with the sample in its routing; `extra` endpoints are added
/// to the caller's registry.
async fn bookinfo(root: &Root, apps: &[Upstream], extra: &[String]) -> (TestMesh, TestMesh) {
    let labels: Vec<String> = (1..=apps.len())
        .map(|v| format!("app: reviews, version: v{v}"))
        .collect();
    let served: Vec<Served<'_>> = apps
        .iter()
        .zip(&labels)
        .map(|(app, labels)| Served {
            name: &app.name,
            labels,
            app,
        })
        .collect();
    let b = server(root, "default", "bookinfo-reviews", &served, "", "").await;
    let inbound = b.mesh.inbound.expect("inbound");
    let mut endpoints: Vec<String> = apps
        .iter()
        .zip(&labels)
        .map(|(app, labels)| endpoint(app, labels, Some((inbound, "default", "bookinfo-reviews"))))
        .collect();
    endpoints.extend_from_slice(extra);
    let a = caller(
        root,
        "default",
        "bookinfo-productpage",
        "reviews",
        &endpoints,
        ALL_MTLS,
    )
    .await;
    (b, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_destination_rule_all_mtls_loads_cleanly_and_reviews_are_reached_over_mutual_tls()
{
    let root = Root::new("cluster.local");
    let apps = crate::harness::upstreams(&["reviews-v1", "reviews-v2", "reviews-v3"]).await;
    let (b, a) = bookinfo(&root, &apps, &[]).await;

    let (status, config) = a.admin("/config").await;
    assert_eq!(status, StatusCode::OK);
    let config: serde_json::Value = serde_json::from_str(&config).expect("/config is JSON");
    assert_eq!(
        config["diagnostics"],
        serde_json::json!([]),
        "the sample loads without warnings"
    );

    let counts = a.count("reviews", 30, &[]).await;
    for app in &apps {
        assert!(
            counts.get(&app.name).copied().unwrap_or(0) > 0,
            "{} answered: {counts:?}",
            app.name
        );
    }
    let s = stats(&b);
    assert!(s.mtls.load(Ordering::Relaxed) >= 1, "B counted mutual TLS");
    assert_eq!(
        s.plaintext.load(Ordering::Relaxed),
        0,
        "nothing reached B in plaintext"
    );
}

/// `ISTIO_MUTUAL` is a DestinationRule setting, not auto mTLS: an endpoint
/// of the host that no proxy is known to front still gets mutual TLS (so
/// it fails against a plaintext-only server) and is never sent plaintext.
///
/// Depends on DestinationRule `tls.mode` wired into the upstream pool
/// (another change of issue 21); with auto mTLS alone, the unmarked
/// endpoint is used plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_never_sends_plaintext_to_an_endpoint_without_a_proxy() {
    let root = Root::new("cluster.local");
    let apps = crate::harness::upstreams(&["reviews-v1", "reviews-v2", "reviews-v3"]).await;
    let plain = anymesh::upstream::spawn("plain-v3").await.expect("app");
    let unmarked = endpoint(&plain, "app: reviews, version: v3", None);
    let (b, a) = bookinfo(&root, &apps, &[unmarked]).await;

    let mut ok = 0;
    for _ in 0..40 {
        let (status, who, _) = a.get("reviews", "/", &[]).await;
        if status == StatusCode::OK {
            assert_ne!(who, "plain-v3", "the plaintext-only endpoint answered");
            ok += 1;
        }
    }
    assert_eq!(
        plain.received(),
        0,
        "no plaintext request reached the endpoint without a proxy"
    );
    assert!(ok > 0, "the endpoints behind B answered");
    assert!(stats(&b).mtls.load(Ordering::Relaxed) >= 1);
}
