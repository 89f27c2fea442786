//! Key sets fetched from a real HTTPS JWKS server on 127.0.0.1: shared
//! fetches, key rotation, refresh, failures.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod support;

use std::time::Duration;

use anymesh_authn::{Authenticator, AuthnError, FetchSettings, JwksCache};
use anymesh_core::security::jwt::JwksSource;
use jsonwebtoken::Algorithm;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn settings(server: &JwksServer) -> FetchSettings {
    FetchSettings {
        extra_roots: vec![server.ca.clone()],
        ..FetchSettings::default()
    }
}

fn check(a: &Authenticator, token: &str) -> Result<Option<String>, AuthnError> {
    let (mut headers, mut uri) = bearer(token);
    a.authenticate(&mut headers, &mut uri)
        .map(|auth| auth.map(|a| a.principal))
}

#[tokio::test]
async fn keys_are_fetched_over_https_once_per_uri() {
    let key = SigningKey::rsa(1, Algorithm::RS256, "r1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let cache = JwksCache::new(settings(&server)).unwrap();
    let _loop = cache.spawn();

    let a = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    let mut other_rule = rule(JwksSource::Uri(server.uri()));
    other_rule.issuer = "another-issuer-same-keys".into();
    let b = Authenticator::new(vec![other_rule], &cache).unwrap();
    tokio::time::timeout(WAIT, async {
        a.ready().await;
        b.ready().await;
    })
    .await
    .expect("first fetch within the deadline");

    assert_eq!(
        check(&a, &key.sign(&claims())),
        Ok(Some(format!("{ISSUER}/alice")))
    );
    assert_eq!(server.hits(), 1, "one fetch for two authenticators");
    // A rebuilt authenticator (new config) reuses the cached keys at once.
    let again = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    assert!(check(&again, &key.sign(&claims())).unwrap().is_some());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_at_once_and_the_old_one_dropped() {
    let old = SigningKey::ec(Algorithm::ES256, "2026-old");
    let new = SigningKey::ec(Algorithm::ES256, "2026-new");
    let server = JwksServer::start(jwks(&[&old])).await;
    // The default 20 min refresh: only the unknown kid can cause a fetch.
    let cache = JwksCache::new(settings(&server)).unwrap();
    let _loop = cache.spawn();
    let a = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();
    let old_token = old.sign(&claims());
    let new_token = new.sign(&claims());
    assert!(check(&a, &old_token).unwrap().is_some());

    // The server rotates: the new key replaces the old one.
    server.set(jwks(&[&new]));
    // The first token with the new kid is refused (the request path never
    // waits) and makes the cache fetch again.
    assert_eq!(check(&a, &new_token), Err(AuthnError::KidAlgMismatch));
    assert!(
        eventually(WAIT, || check(&a, &new_token).is_ok_and(|p| p.is_some())).await,
        "new key accepted after the early fetch"
    );
    assert_eq!(server.hits(), 2);
    assert_eq!(check(&a, &old_token), Err(AuthnError::KidAlgMismatch));
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_fetch_per_interval() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let server = JwksServer::start(jwks(&[&key])).await;
    let cache = JwksCache::new(settings(&server)).unwrap();
    let _loop = cache.spawn();
    let a = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();

    let attacker = SigningKey::ec(Algorithm::ES256, "x");
    let made_up = |i: usize| {
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(format!("made-up-{i}"));
        jsonwebtoken::encode(&header, &claims(), &attacker.key).unwrap()
    };
    assert_eq!(check(&a, &made_up(0)), Err(AuthnError::KidAlgMismatch));
    assert!(eventually(WAIT, || server.hits() >= 2).await, "early fetch");
    for i in 1..50 {
        assert_eq!(check(&a, &made_up(i)), Err(AuthnError::KidAlgMismatch));
    }
    // An observation window, not a synchronisation: a second early fetch
    // would have been asked for by now and would show within it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.hits(), 2, "one early fetch for 50 unknown kids");
}

#[tokio::test]
async fn the_periodic_refresh_drops_keys_that_left_the_set() {
    let k1 = SigningKey::rsa(1, Algorithm::RS256, "k1");
    let k2 = SigningKey::rsa(2, Algorithm::RS256, "k2");
    let server = JwksServer::start(jwks(&[&k1, &k2])).await;
    let cache = JwksCache::new(FetchSettings {
        refresh_interval: Duration::from_millis(200),
        ..settings(&server)
    })
    .unwrap();
    let _loop = cache.spawn();
    let a = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();
    let t1 = k1.sign(&claims());
    assert!(check(&a, &t1).unwrap().is_some());

    server.set(jwks(&[&k2]));
    assert!(
        eventually(WAIT, || check(&a, &t1) == Err(AuthnError::KidAlgMismatch)).await,
        "k1 refused once the refresh saw it gone"
    );
    assert!(check(&a, &k2.sign(&claims())).unwrap().is_some());
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_keys() {
    let key = SigningKey::ed25519("ed");
    let server = JwksServer::start(jwks(&[&key])).await;
    let cache = JwksCache::new(FetchSettings {
        refresh_interval: Duration::from_millis(100),
        retry_initial: Duration::from_millis(50),
        ..settings(&server)
    })
    .unwrap();
    let _loop = cache.spawn();
    let a = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();

    server.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = server.hits();
    assert!(
        eventually(WAIT, || server.hits() >= before + 3).await,
        "refreshes failed"
    );
    assert!(check(&a, &key.sign(&claims())).unwrap().is_some());
}

#[tokio::test]
async fn jwks_server_down_at_start_fails_closed_for_tokens_only() {
    let key = SigningKey::ec(Algorithm::ES384, "e");
    let server = JwksServer::start(jwks(&[&key])).await;
    server.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let cache = JwksCache::new(FetchSettings {
        retry_initial: Duration::from_millis(50),
        ..settings(&server)
    })
    .unwrap();
    let _loop = cache.spawn();
    let a = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();

    let token = key.sign(&claims());
    assert_eq!(check(&a, &token), Err(AuthnError::FetchFailed));
    assert_eq!(
        AuthnError::FetchFailed.reason(),
        "Jwks remote fetch is failed"
    );
    let mut headers = http::HeaderMap::new();
    let mut uri: http::Uri = "/".parse().unwrap();
    assert_eq!(a.authenticate(&mut headers, &mut uri), Ok(None));

    // The server comes back: the retries pick the keys up.
    server
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(eventually(WAIT, || check(&a, &token).is_ok()).await);
}

#[tokio::test]
async fn an_unreachable_or_untrusted_server_fails_closed() {
    let key = SigningKey::ec(Algorithm::ES256, "e");
    // Nothing listens on the port of a listener just closed.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let cache = JwksCache::new(FetchSettings::default()).unwrap();
    let _loop = cache.spawn();
    let mut r = rule(JwksSource::Uri(format!("https://127.0.0.1:{closed}/jwks")));
    r.fetch_timeout = Duration::from_secs(2);
    let a = Authenticator::new(vec![r], &cache).unwrap();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();
    assert_eq!(
        check(&a, &key.sign(&claims())),
        Err(AuthnError::FetchFailed)
    );

    // A server whose CA is not trusted.
    let server = JwksServer::start(jwks(&[&key])).await;
    let b = Authenticator::new(vec![rule(JwksSource::Uri(server.uri()))], &cache).unwrap();
    tokio::time::timeout(WAIT, b.ready()).await.unwrap();
    assert_eq!(
        check(&b, &key.sign(&claims())),
        Err(AuthnError::FetchFailed)
    );
    assert_eq!(server.hits(), 0, "the TLS handshake failed");
}

#[tokio::test]
async fn a_slow_server_is_cut_off_by_the_rule_timeout() {
    let key = SigningKey::ec(Algorithm::ES256, "e");
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cache = JwksCache::new(FetchSettings::default()).unwrap();
    let _loop = cache.spawn();
    let mut r = rule(JwksSource::Uri(format!("https://127.0.0.1:{port}/jwks")));
    r.fetch_timeout = Duration::from_millis(300);
    let a = Authenticator::new(vec![r], &cache).unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, a.ready()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        check(&a, &key.sign(&claims())),
        Err(AuthnError::FetchFailed)
    );
}
