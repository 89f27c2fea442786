//! Proxies whose certificates come from a real `anymesh ca`: joined with
//! one-time tokens, renewed over mutual TLS under load with lifetimes of
//! seconds, through a root rotation, with the CA stopped, and through a
//! PERMISSIVE → STRICT migration.
//!
//! The CA is `CaServer::start`, the code `anymesh ca serve` runs, started
//! in-process so a test can stop it and read its state; the first test makes
//! the CA and its tokens with the real binary's `anymesh ca init`, `token`
//! and `bundle`. The CA's own refusals (a CSR asking for another identity,
//! a replayed token after a CA restart, renewal without or with a foreign
//! client certificate) are tested against its HTTPS API in
//! `identity/tests/ca.rs`; here they are seen from the proxies.

mod setup;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anymesh_identity::ca::CaDir;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use setup::*;

use crate::harness::*;

/// A leaf lifetime no test outlives.
const LONG: Duration = Duration::from_secs(3600);

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n";

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

/// `anymesh ca <args>`, the real binary; its stdout.
fn anymesh_ca(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_anymesh"))
        .arg("ca")
        .args(args)
        .output()
        .expect("anymesh runs");
    assert!(
        out.status.success(),
        "anymesh ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_joined_with_tokens_from_the_cli_talk_mutual_tls() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("ca");
    let d = dir.to_str().expect("utf-8 path");
    anymesh_ca(&["init", "--dir", d, "--trust-domain", TRUST_DOMAIN]);
    let token = |sa: &str| {
        let id = format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}");
        anymesh_ca(&["token", "--dir", d, "--identity", &id, "--ttl", "10m"])
            .trim()
            .to_string()
    };
    let (token_a, token_b) = (token("a"), token("b"));
    assert!(
        token_a.len() >= 40 && token_a != token_b,
        "{token_a} / {token_b}"
    );
    let ca = Ca::serve(CaDir::open(&dir).expect("CA dir"), LONG).await;
    assert_eq!(
        std::fs::read_to_string(&ca.bundle).expect("bundle"),
        anymesh_ca(&["bundle", "--dir", d]),
        "the bootstrap bundle is what `anymesh ca bundle` prints"
    );

    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&ca, &token_b, "b", &app, "").await;
    let a = client_side(&ca, &token_a, &app, &b, "", None, true).await;
    for _ in 0..5 {
        let (status, who, body) = a.get("reviews", "/", &[]).await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    }
    assert!(mtls_count(&b) >= 1, "the hop was mutual TLS");
    assert_eq!(stats(&b).plaintext.load(Ordering::Relaxed), 0);

    // Each proxy persisted the identity its token named, private to it.
    for (proxy, sa) in [(&a, "a"), (&b, "b")] {
        let p = Persisted::read(proxy).expect("a persisted certificate");
        assert_eq!(
            p.creds.id.as_str(),
            format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}")
        );
        assert_eq!(p.signer(), Some(1));
        #[cfg(unix)]
        for file in ["svid.pem", "bundle.pem"] {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(proxy.path("identity").join(file)).expect("file");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
    }
}

fn allow_only(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-a, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {{principals: [\"{principal}\"]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_are_told_apart_by_the_identities_the_ca_issued() {
    let ca = Ca::start(LONG).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(
        &ca,
        &ca.token("b"),
        "b",
        &app,
        &format!(
            "{STRICT}---\n{}",
            allow_only("cluster.local/ns/default/sa/a")
        ),
    )
    .await;
    let a = client_side(&ca, &ca.token("a"), &app, &b, "", None, true).await;
    let c = client_side(&ca, &ca.token("c"), &app, &b, "", None, true).await;

    let (status, who, body) = a.get("reviews", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    // C is authenticated (mutual TLS with its own CA certificate) and
    // refused by the policy, which names A's identity only.
    let (status, _, body) = c.get("reviews", "/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    assert_eq!(
        app.received(),
        1,
        "only A's request reached the application"
    );
    assert!(mtls_count(&b) >= 2, "both callers came over mutual TLS");
    assert_eq!(stats(&b).refused_tls.load(Ordering::Relaxed), 0);
    assert_eq!(plaintext(&b).await, None, "STRICT: no plaintext");
}

/// Waits until `done` holds, failing with what `state` says after `limit`.
async fn until(what: &str, limit: Duration, done: impl Fn() -> bool, state: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {limit:?}; {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotating_every_few_seconds_under_load_fail_no_request() {
    rotation_under_load("http").await;
}

/// Over HTTP/2 the caller keeps one connection to B: it outlives every
/// certificate of both sides, the one it was made with expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_outlives_rotating_certificates_under_load() {
    rotation_under_load("http2").await;
}

async fn rotation_under_load(protocol: &str) {
    // Leaves live 3 s: each proxy renews at about half of that.
    let ca = Ca::start(Duration::from_secs(3)).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side_as(&ca, &ca.token("b"), "b", &app, STRICT, protocol).await;
    // Over HTTP/1.1 A keeps 2 idle connections to B: of 8 concurrent
    // requests, the others open new connections all the time, so the load
    // has both pooled connections outliving certificates and new
    // handshakes with new ones.
    let a = client_side_as(
        &ca,
        &ca.token("a"),
        &app,
        &b,
        "upstream: {pool_max_idle_per_host: 2}\n",
        None,
        true,
        protocol,
    )
    .await;
    let first_a = Persisted::read(&a).expect("A's certificate").creds;
    let (renew_a, renew_b) = (Renewals::watch(&a), Renewals::watch(&b));
    let load = Load::start(&a, "reviews");
    // Three renewals of each, and past the end of A's first certificate
    // (pooled connections made with it outlive it).
    until(
        "three renewals of each proxy and A's first certificate expired",
        Duration::from_secs(12),
        || {
            renew_a.count() >= 3
                && renew_b.count() >= 3
                && first_a.not_after < std::time::SystemTime::now()
        },
        || format!("A renewed {}, B {}", renew_a.count(), renew_b.count()),
    )
    .await;
    if protocol == "http" {
        // New connections after the last renewal handshake with the new
        // certificates.
        let handshakes = mtls_count(&b);
        until(
            "new handshakes after the renewals",
            Duration::from_secs(5),
            || mtls_count(&b) > handshakes,
            || format!("{} handshakes", mtls_count(&b)),
        )
        .await;
    }
    let (requests, failures) = load.finish().await;
    let (renewed_a, renewed_b) = (renew_a.finish().await, renew_b.finish().await);
    let now = Persisted::read(&a).expect("A's certificate").creds;
    eprintln!(
        "rotation under load ({protocol}): {requests} requests, {} failed, A renewed {renewed_a}×, B {renewed_b}×, B accepted {} mTLS connections",
        failures.len(),
        mtls_count(&b)
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(requests >= 100, "the load ran: {requests}");
    assert!(
        now.not_after > first_a.not_after,
        "A's certificate is a later one"
    );
    assert!(mtls_count(&b) >= 1);
    assert_eq!(stats(&b).refused_tls.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_with_overlapping_bundles_under_load_fails_no_request() {
    let ca = Ca::start(Duration::from_secs(3)).await;
    // The same CA directory served with long leaves: D joins through it and
    // keeps its first certificate for the whole test.
    let long = Ca::serve(ca.dir.clone(), LONG).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&ca, &ca.token("b"), "b", &app, STRICT).await;
    let a = client_side(
        &ca,
        &ca.token("a"),
        &app,
        &b,
        "upstream: {pool_max_idle_per_host: 2}\n",
        None,
        true,
    )
    .await;
    let load = Load::start(&a, "reviews");
    let read = |p: &TestMesh| Persisted::read(p);
    let state = || {
        let show = |p: Option<Persisted>| {
            p.map_or("-".into(), |p| {
                format!(
                    "leaf of root {:?}, bundle {:?}",
                    p.signer(),
                    p.bundle_roots()
                )
            })
        };
        format!("A: {}; B: {}", show(read(&a)), show(read(&b)))
    };
    let all = |check: &dyn Fn(&Persisted) -> bool| {
        [&a, &b].iter().all(|p| read(p).is_some_and(|p| check(&p)))
    };
    let limit = Duration::from_secs(8);

    // 1. A new root joins the bundle; the old one still signs.
    ca.dir.rotate(LONG, None).expect("rotate");
    until(
        "both roots in every bundle",
        limit,
        || all(&|p| p.bundle_roots() == [1, 2]),
        state,
    )
    .await;
    // D joins now: a leaf of the old root, a bundle of both.
    let d = client_side(&long, &long.token("d"), &app, &b, "", None, true).await;
    let d_cert = Persisted::read(&d).expect("D's certificate");
    assert_eq!(
        (d_cert.signer(), d_cert.bundle_roots()),
        (Some(1), vec![1, 2])
    );

    // 2. The new root signs.
    assert_eq!(ca.dir.activate().expect("activate"), 2);
    until(
        "leaves of the new root",
        limit,
        || all(&|p| p.signer() == Some(2)),
        state,
    )
    .await;

    // 3. The old root is retired, and leaves every bundle.
    assert_eq!(ca.dir.retire().expect("retire"), 1);
    until(
        "the old root dropped",
        limit,
        || all(&|p| p.bundle_roots() == [2]),
        state,
    )
    .await;
    let handshakes = mtls_count(&b);
    until(
        "new handshakes under the new root alone",
        Duration::from_secs(5),
        || mtls_count(&b) > handshakes,
        || format!("{} handshakes", mtls_count(&b)),
    )
    .await;
    let (requests, failures) = load.finish().await;
    eprintln!(
        "root rotation under load: {requests} requests, {} failed, B accepted {} mTLS connections",
        failures.len(),
        mtls_count(&b)
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(requests >= 100, "the load ran: {requests}");

    // D still holds only a leaf of the retired root: B refuses it.
    let refused = stats(&b).refused_tls.load(Ordering::Relaxed);
    let before = app.received();
    for _ in 0..3 {
        let (status, _, body) = d.get("reviews", "/", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    // B counts a refusal when its side of the handshake ends, which may
    // come a moment after D has given up.
    until(
        "B refused D's handshakes",
        Duration::from_secs(5),
        || stats(&b).refused_tls.load(Ordering::Relaxed) >= refused + 3,
        || format!("{} refused", stats(&b).refused_tls.load(Ordering::Relaxed)),
    )
    .await;
    assert_eq!(
        app.received(),
        before,
        "nothing of D's reached the application"
    );
    // A, whose leaf is of the new root, is still served.
    let (status, _, body) = a.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_stopped_proxies_serve_and_a_restart_uses_the_persisted_certificate() {
    let mut ca = Ca::start(LONG).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&ca, &ca.token("b"), "b", &app, STRICT).await;
    let a = client_side(&ca, &ca.token("a"), &app, &b, "", None, true).await;
    let (status, _, body) = a.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b_cert = Persisted::read(&b).expect("B's certificate").svid;

    ca.stop().await;
    assert!(
        tokio::net::TcpStream::connect(ca.addr).await.is_err(),
        "the CA is down"
    );
    for _ in 0..20 {
        let (status, _, body) = a.get("reviews", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "served with the CA down: {body}");
    }

    // B restarts with the same settings (its spent token among them).
    let TestMesh { mesh, dir, client } = b;
    mesh.shutdown().await;
    let logs = Logs::default();
    let mesh = start_mesh(&dir.path().join("anymesh.yaml"), Some(&logs)).await;
    let b = TestMesh { mesh, dir, client };
    assert!(
        logs.text().contains("installed the persisted certificate"),
        "{}",
        logs.text()
    );
    assert_eq!(
        Persisted::read(&b).expect("B's certificate").svid,
        b_cert,
        "the same certificate"
    );
    // Its inbound listener has a new port: A's registry learns it.
    write(&a.path("services.yaml"), &services_behind(&app, &b, "b"));
    eventually("A reaches the restarted B", || async {
        (a.get("reviews", "/", &[]).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    for _ in 0..10 {
        let (status, _, body) = a.get("reviews", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(
        mtls_count(&b) >= 1,
        "over mutual TLS with the persisted certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarted_with_the_ca_down_and_its_certificate_expired_says_what_to_do() {
    let mut ca = Ca::start(Duration::from_secs(2)).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&ca, &ca.token("b"), "b", &app, "").await;
    let not_after = Persisted::read(&b)
        .expect("B's certificate")
        .creds
        .not_after;
    ca.stop().await;
    until(
        "B's certificate expired",
        Duration::from_secs(5),
        || Persisted::read(&b).is_some_and(|p| p.creds.not_after < std::time::SystemTime::now()),
        || format!("B's first certificate ends at {not_after:?}"),
    )
    .await;

    let TestMesh { mesh, dir, client } = b;
    mesh.shutdown().await;
    let logs = Logs::default();
    let mesh = start_mesh(&dir.path().join("anymesh.yaml"), Some(&logs)).await;
    let b = TestMesh { mesh, dir, client };
    let text = logs.text();
    assert!(
        text.contains("the persisted certificate has expired")
            && text.contains("already used by this proxy")
            && text.contains("anymesh ca token --dir"),
        "the log says what happened and what to do: {text}"
    );
    eventually("/ready: no certificate", || async {
        let (status, body) = b.admin("/ready").await;
        (status == StatusCode::SERVICE_UNAVAILABLE && body.contains("no valid certificate"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_expired_token_gets_no_certificate_and_mesh_requests_fail_clearly() {
    let ca = Ca::start(LONG).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let token_b = ca.token("b");
    let b = server_side(&ca, &token_b, "b", &app, "").await;

    // Replayed: B's token, already used, by another proxy; expired: a
    // token whose lifetime ended as it was made.
    let expired = ca.token_for("e", Duration::ZERO);
    for (token, why) in [
        (token_b.as_str(), "already used"),
        (expired.as_str(), "expired"),
    ] {
        let logs = Logs::default();
        let e = client_side(&ca, token, &app, &b, "", Some(&logs), false).await;
        let text = logs.text();
        assert!(
            text.contains("no certificate from the CA yet") && text.contains(why),
            "the log says why: {text}"
        );
        assert!(Persisted::read(&e).is_none(), "nothing persisted");
        let (status, _, body) = e.get("reviews", "/", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no certificate for mutual TLS"), "{body}");
    }
    assert_eq!(app.received(), 0);
    assert_eq!(mtls_count(&b), 0);

    // A workload `f` given a token for `a`: the CA signs `a`, the
    // identity it authenticated, whatever the CSR asks; the proxy refuses
    // a certificate not its own, and so has none.
    let logs = Logs::default();
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("services.yaml"), "services: []\n");
    write(&dir.path().join("routes.yaml"), "");
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml}}]\n\
         routing: [routes.yaml]\n\
         identity:\n  ca: {{url: \"{}\", bundle: \"{}\", token: \"{}\", state_dir: \"{}\"}}\n\
         workloads:\n  - {{name: f, service_account: f, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0}}\n",
        ca.url(),
        ca.bundle.display(),
        ca.token("a"),
        dir.path().join("identity").display(),
        app.addr.port()
    );
    let f = setup::launch(dir, &yaml, Some(&logs), false).await;
    let text = logs.text();
    assert!(
        text.contains("issued a certificate for spiffe://cluster.local/ns/default/sa/a, not spiffe://cluster.local/ns/default/sa/f"),
        "{text}"
    );
    assert!(Persisted::read(&f).is_none(), "nothing persisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_to_strict_under_load_drops_no_mesh_request() {
    let ca = Ca::start(LONG).await;
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&ca, &ca.token("b"), "b", &app, "").await;
    let a = client_side(
        &ca,
        &ca.token("a"),
        &app,
        &b,
        "upstream: {pool_max_idle_per_host: 2}\n",
        None,
        true,
    )
    .await;
    assert_eq!(
        plaintext(&b).await,
        Some(StatusCode::OK),
        "PERMISSIVE serves plaintext"
    );
    let load = Load::start(&a, "reviews");
    let handshakes = mtls_count(&b);
    until(
        "mesh load flowing",
        Duration::from_secs(5),
        || mtls_count(&b) > handshakes + 40,
        || format!("{} handshakes", mtls_count(&b)),
    )
    .await;

    write(&b.path("routes.yaml"), STRICT);
    eventually("STRICT in force", || async {
        plaintext(&b).await.is_none().then_some(())
    })
    .await;
    let handshakes = mtls_count(&b);
    until(
        "mesh load flowing under STRICT",
        Duration::from_secs(5),
        || mtls_count(&b) > handshakes + 40,
        || format!("{} handshakes", mtls_count(&b)),
    )
    .await;
    let (requests, failures) = load.finish().await;
    let n = 20;
    let mut refused = 0;
    for _ in 0..n {
        if plaintext(&b).await.is_none() {
            refused += 1;
        }
    }
    eprintln!(
        "PERMISSIVE → STRICT under load: {requests} mesh requests, {} failed; plaintext refused {refused}/{n}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(requests >= 100, "the load ran: {requests}");
    assert_eq!(
        refused, n,
        "every plaintext attempt after the switch is refused"
    );
}
