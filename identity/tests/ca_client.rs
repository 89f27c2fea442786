//! The CA client against a real CA server on 127.0.0.1: joining,
//! persisting, renewing short-lived certificates, outages and restarts,
//! root rotation.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used)]

mod ca_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anymesh_identity::ca::client::{CaClient, CaClientConfig, JoinToken};
use anymesh_identity::ca::{CaDir, CaServer};
use anymesh_identity::Identity;
use ca_support::*;
use tokio::sync::watch;

const SHORT: Duration = Duration::from_secs(3);

struct Setup {
    _tmp: tempfile::TempDir,
    ca: CaDir,
    boot_bundle: std::path::PathBuf,
    state: std::path::PathBuf,
    token_file: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CaDir::init_root(tmp.path().join("ca"), TD).unwrap();
    let boot_bundle = tmp.path().join("bootstrap-bundle.pem");
    std::fs::write(&boot_bundle, ca.bundle_pem().unwrap()).unwrap();
    let token_file = tmp.path().join("join-token");
    let token = ca
        .mint_token(&id("reviews"), Duration::from_secs(600))
        .unwrap();
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    Setup {
        state: tmp.path().join("proxy-state"),
        _tmp: tmp,
        ca,
        boot_bundle,
        token_file,
    }
}

fn client(s: &Setup, server: &CaServer, identity: &Arc<Identity>) -> CaClient {
    client_at(
        s,
        &format!("https://127.0.0.1:{}", server.local_addr().port()),
        identity,
    )
}

fn client_at(s: &Setup, url: &str, identity: &Arc<Identity>) -> CaClient {
    let mut config = CaClientConfig::new(url, s.boot_bundle.clone(), s.state.clone());
    config.token = Some(JoinToken::File(s.token_file.clone()));
    config.identity = Some(id("reviews"));
    config.retry_min = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(300);
    CaClient::new(config, identity.clone()).unwrap()
}

fn serial(identity: &Identity) -> Vec<u8> {
    identity.current().unwrap().chain[0].to_vec()
}

#[tokio::test]
async fn bootstrap_joins_persists_privately_and_renews_short_certificates_repeatedly() {
    let s = setup();
    let server = serve(&s.ca, SHORT).await;
    let identity = Arc::new(Identity::new());
    let c = client(&s, &server, &identity);
    c.bootstrap().await.unwrap();
    let first = identity.current().unwrap();
    assert_eq!(first.id, id("reviews"));
    for file in ["svid.pem", "bundle.pem", "token-used"] {
        let path = s.state.join(file);
        assert!(path.exists(), "{file}");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600, "{file}");
    }

    let mut versions = identity.subscribe();
    let start = *versions.borrow_and_update();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(c.run(stop));
    // Several rotations, each a new certificate for the same identity.
    let mut seen = vec![serial(&identity)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 {
        tokio::time::timeout_at(deadline, versions.changed())
            .await
            .expect("a renewal in time")
            .unwrap();
        let creds = identity.current().unwrap();
        assert_eq!(creds.id, id("reviews"));
        let now = serial(&identity);
        assert!(!seen.contains(&now), "a new certificate each time");
        seen.push(now);
    }
    assert!(*versions.borrow() >= start + 3);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn with_the_ca_down_the_client_keeps_its_certificate_and_retries_until_it_is_back() {
    let s = setup();
    let ttl = Duration::from_secs(6);
    let server = serve(&s.ca, ttl).await;
    let addr = server.local_addr();
    let identity = Arc::new(Identity::new());
    let c = client(&s, &server, &identity);
    c.bootstrap().await.unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(c.run(stop));
    server.shutdown().await;

    // Past the renewal point (half the lifetime) with the CA down: the
    // certificate in force stays.
    let held = serial(&identity);
    let creds = identity.current().unwrap();
    let renew_by = creds.not_before + creds.lifetime().mul_f64(0.65);
    eventually("the renewal point passes", Duration::from_secs(10), || {
        SystemTime::now() > renew_by
    })
    .await;
    assert_eq!(serial(&identity), held);
    assert!(identity.valid_at(SystemTime::now()));

    // The CA comes back on the same address: the retries renew.
    let server = serve_on(&s.ca, ttl, addr).await;
    eventually(
        "a renewal after the outage",
        Duration::from_secs(10),
        || serial(&identity) != held,
    )
    .await;
    assert_eq!(identity.current().unwrap().id, id("reviews"));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_restarted_while_the_ca_is_down_serves_with_its_persisted_certificate() {
    let s = setup();
    let server = serve(&s.ca, Duration::from_secs(3600)).await;
    let url = format!("https://127.0.0.1:{}", server.local_addr().port());
    let first = Arc::new(Identity::new());
    client(&s, &server, &first).bootstrap().await.unwrap();
    server.shutdown().await;

    let restarted = Arc::new(Identity::new());
    let c = client_at(&s, &url, &restarted);
    c.bootstrap().await.unwrap();
    assert_eq!(serial(&restarted), serial(&first));
    assert!(restarted.valid_at(SystemTime::now()));
}

#[tokio::test]
async fn an_expired_certificate_with_a_spent_token_says_what_the_operator_must_do() {
    let s = setup();
    let server = serve(&s.ca, Duration::from_secs(1)).await;
    let addr = server.local_addr();
    let url = format!("https://127.0.0.1:{}", addr.port());
    let identity = Arc::new(Identity::new());
    client(&s, &server, &identity).bootstrap().await.unwrap();
    let expiry = identity.current().unwrap().not_after;
    eventually("the certificate expires", Duration::from_secs(10), || {
        SystemTime::now() >= expiry
    })
    .await;

    let restarted = Arc::new(Identity::new());
    let err = client_at(&s, &url, &restarted)
        .bootstrap()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already used"), "{err}");
    assert!(err.contains("anymesh ca token"), "{err}");
    assert!(err.contains(id("reviews").as_str()), "{err}");
    assert!(err.contains(&s.token_file.display().to_string()), "{err}");

    // The operator writes a new token to the file: the next attempt joins.
    let token =
        s.ca.mint_token(&id("reviews"), Duration::from_secs(600))
            .unwrap();
    std::fs::write(&s.token_file, token).unwrap();
    client_at(&s, &url, &restarted).bootstrap().await.unwrap();
    assert!(restarted.valid_at(SystemTime::now()));
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_the_ca_refuses_is_reported_with_the_reason() {
    let s = setup();
    let server = serve(&s.ca, Duration::from_secs(3600)).await;
    let expired = s.ca.mint_token(&id("reviews"), Duration::ZERO).unwrap();
    std::fs::write(&s.token_file, expired).unwrap();
    let identity = Arc::new(Identity::new());
    let err = client(&s, &server, &identity)
        .bootstrap()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("anymesh ca token"), "{err}");
    assert!(identity.current().is_none());
    server.shutdown().await;
}

fn roots_in(state: &Path) -> usize {
    certs(&std::fs::read_to_string(state.join("bundle.pem")).unwrap()).len()
}

#[tokio::test]
async fn renewals_carry_a_root_rotation_to_the_client() {
    let s = setup();
    let server = serve(&s.ca, SHORT).await;
    let identity = Arc::new(Identity::new());
    let c = client(&s, &server, &identity);
    c.bootstrap().await.unwrap();
    let old_root = bundle(&s.ca)[0].clone();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(c.run(stop));

    // Rotation: the client's bundle gains the new root at its next renewal,
    // while its leaves still come from the old root.
    s.ca.rotate(Duration::from_secs(3600), None).unwrap();
    eventually(
        "both roots in the client's bundle",
        Duration::from_secs(10),
        || identity.current().unwrap().bundle.len() == 2,
    )
    .await;
    assert_eq!(roots_in(&s.state), 2);
    let leaf = identity.current().unwrap().chain[0].clone();
    assert_eq!(view(&leaf).issuer, subject_of(&old_root));

    // Activation: its next leaf comes from the new root.
    s.ca.activate().unwrap();
    let new_root = bundle(&s.ca).into_iter().find(|r| *r != old_root).unwrap();
    eventually("a leaf of the new root", Duration::from_secs(10), || {
        view(&identity.current().unwrap().chain[0]).issuer == subject_of(&new_root)
    })
    .await;

    // Retirement: the old root leaves its bundle.
    s.ca.retire().unwrap();
    eventually("the old root dropped", Duration::from_secs(10), || {
        identity.current().unwrap().bundle == vec![new_root.clone()]
    })
    .await;
    assert_eq!(roots_in(&s.state), 1);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    server.shutdown().await;
}
