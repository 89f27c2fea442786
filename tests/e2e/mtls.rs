//! Two anymesh proxies on loopback with an application behind the second:
//! mutual TLS between them with SPIFFE identities, secure naming,
//! PeerAuthentication modes and AuthorizationPolicy, with real rustls on
//! both sides.

mod metrics;
mod observe;
pub(crate) mod pki;
mod telemetry_policy;
mod trace_chain;

use std::sync::atomic::Ordering;

use anymesh::mesh::Mesh;
use anymesh::settings::Settings;
use anymesh::upstream::Upstream;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pki::{identity_files, Root};

use crate::harness::*;

/// The proxy in front of the application: workload `b` (service account
/// `b`) serving the application's port.
async fn server_side(root: &Root, app: &Upstream, routes: &str) -> TestMesh {
    server_side_with(root, app, routes, |_| String::new()).await
}

/// [`server_side`] with `extra(dir)` appended to its anymesh.yaml.
async fn server_side_with(
    root: &Root,
    app: &Upstream,
    routes: &str,
    extra: impl FnOnce(&std::path::Path) -> String,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = extra(dir.path());
    root.write_svid(&dir.path().join("id"), "default", "b", false);
    write(&dir.path().join("services.yaml"), "services: []\n");
    write(&dir.path().join("routes.yaml"), routes);
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}\
         workloads:\n  - {{name: b, namespace: default, service_account: b, labels: {{app: b}}, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0, handshake_timeout: 2s}}\n{extra}",
        identity_files(&dir.path().join("id")),
        app.addr.port()
    );
    launch(dir, &yaml).await
}

/// The caller's proxy (service account `a`), whose registry says the
/// application's endpoint is fronted by `server`'s proxy, with identity
/// `service_account`.
async fn client_side(
    root: &Root,
    app: &Upstream,
    server: &TestMesh,
    service_account: &str,
) -> TestMesh {
    client_side_with(app, server, service_account, |dir| {
        root.write_svid(dir, "default", "a", false)
    })
    .await
}

/// [`client_side`] with the caller's certificate files written by `id`.
async fn client_side_with(
    app: &Upstream,
    server: &TestMesh,
    service_account: &str,
    id: impl FnOnce(&std::path::Path),
) -> TestMesh {
    caller(app, server, service_account, id, "", "").await
}

/// The caller's proxy: its registry lists the application's endpoint (with
/// `labels`, YAML flow-map entries) behind `server`'s proxy, whose identity
/// is `service_account`; `extra` is appended to its anymesh.yaml.
async fn caller(
    app: &Upstream,
    server: &TestMesh,
    service_account: &str,
    id: impl FnOnce(&std::path::Path),
    labels: &str,
    extra: &str,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    id(&dir.path().join("id"));
    let inbound = server
        .mesh
        .inbound
        .expect("the server side has an inbound listener");
    write(
        &dir.path().join("services.yaml"),
        &format!(
            "services:\n  - name: reviews\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: app, labels: {{{labels}}}, mesh: {{port: {}, service_account: {service_account}}}}}\n",
            app.addr.port(),
            inbound.port()
        ),
    );
    write(&dir.path().join("routes.yaml"), "");
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}{extra}",
        identity_files(&dir.path().join("id"))
    );
    launch(dir, &yaml).await
}

pub(crate) async fn launch(dir: tempfile::TempDir, yaml: &str) -> TestMesh {
    let file = dir.path().join("anymesh.yaml");
    write(&file, yaml);
    let settings = Settings::load(&file).expect("settings");
    let mesh = Mesh::start(settings).await.expect("mesh starts");
    let client = Client::builder(TokioExecutor::new()).build_http();
    let t = TestMesh { mesh, dir, client };
    // Registries synced: ready, or held back only by the certificate (a
    // test's proxy may hold an expired one on purpose).
    eventually("/ready", || async {
        let (status, body) = t.admin("/ready").await;
        (status == StatusCode::OK || body.contains("no valid certificate")).then_some(())
    })
    .await;
    t
}

/// A plaintext GET straight to the inbound listener: the status, or `None`
/// when the connection was refused (closed without an answer).
async fn plaintext(server: &TestMesh) -> Option<StatusCode> {
    let addr = server.mesh.inbound.expect("inbound");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}/"))
        .header("host", "reviews")
        .body(Full::default())
        .expect("request");
    client.request(req).await.ok().map(|r| r.status())
}

pub(crate) fn stats(server: &TestMesh) -> &anymesh_proxy::inbound::InboundStats {
    &server.mesh.inbound_state.as_ref().expect("inbound").stats
}

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_proxies_and_strict_refuses_every_plaintext_attempt() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, "").await;
    let a = client_side(&root, &app, &b, "b").await;

    let (status, who, body) = a.get("reviews", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    assert!(
        stats(&b).mtls.load(Ordering::Relaxed) >= 1,
        "the hop was mutual TLS"
    );

    // PERMISSIVE (no policy): plaintext is served on the same port.
    assert_eq!(plaintext(&b).await, Some(StatusCode::OK));

    write(&b.path("routes.yaml"), STRICT);
    eventually("STRICT in force", || async {
        plaintext(&b).await.is_none().then_some(())
    })
    .await;
    let n = 50;
    let before = stats(&b).refused_plaintext.load(Ordering::Relaxed);
    let mut refused = 0;
    for _ in 0..n {
        if plaintext(&b).await.is_none() {
            refused += 1;
        }
    }
    assert_eq!(
        refused, n,
        "every plaintext attempt is refused under STRICT"
    );
    assert!(stats(&b).refused_plaintext.load(Ordering::Relaxed) >= before + n as u64);
    for _ in 0..n {
        let (status, _, body) = a.get("reviews", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "mesh traffic still flows: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_naming_refuses_a_proxy_presenting_another_identity() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, "").await;
    // The registry says the endpoint's proxy is `reviews`; it proves `b`.
    let a = client_side(&root, &app, &b, "reviews").await;
    let (status, _, body) = a.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("secure naming"), "{body}");
    assert!(
        body.contains("spiffe://cluster.local/ns/default/sa/reviews"),
        "{body}"
    );
    assert_eq!(app.received(), 0, "nothing reached the application");
}

async fn refused_peer(root_of_a: &Root, expired: bool) {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, STRICT).await;
    // The caller's proxy trusts B's root but presents a certificate B must refuse.
    let a = client_side_with(&app, &b, "b", |id| {
        root_of_a.write_svid(id, "default", "a", expired);
        let mut bundle = root.pem.clone();
        bundle.push_str(&root_of_a.pem);
        write(&id.join("bundle.pem"), &bundle);
    })
    .await;
    let ready = a.admin("/ready").await;
    if expired {
        assert_eq!(
            ready.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "an expired certificate is not ready: {}",
            ready.1
        );
    }
    for _ in 0..5 {
        let (status, _, body) = a.get("reviews", "/", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    assert!(
        stats(&b).refused_tls.load(Ordering::Relaxed) >= 5,
        "B refused the handshakes"
    );
    assert_eq!(stats(&b).mtls.load(Ordering::Relaxed), 0);
    assert_eq!(app.received(), 0, "nothing reached the application");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_trust_domain_is_refused() {
    refused_peer(&Root::new("other.example"), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_an_expired_certificate_is_refused() {
    refused_peer(&Root::new("cluster.local"), true).await;
}

fn allow_from(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-a, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {{principals: [\"{principal}\"]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_admits_the_named_principal_only() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, &allow_from("cluster.local/ns/default/sa/a")).await;
    let a = client_side(&root, &app, &b, "b").await;
    let (status, who, body) = a.get("reviews", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    // Plaintext has no principal: an ALLOW by principal refuses it.
    assert_eq!(plaintext(&b).await, Some(StatusCode::FORBIDDEN));

    write(
        &b.path("routes.yaml"),
        &allow_from("cluster.local/ns/default/sa/c"),
    );
    eventually("the new policy in force", || async {
        let (status, _, body) = a.get("reviews", "/", &[]).await;
        (status == StatusCode::FORBIDDEN).then_some(body)
    })
    .await;
    let (status, _, body) = a.get("reviews", "/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
}
