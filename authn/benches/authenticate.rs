//! The request-path cost of `Authenticator::authenticate`: a valid token per
//! algorithm family, a refused one, and a request without a token; and
//! jsonwebtoken's own decode with RustCrypto beside it.
#![allow(clippy::unwrap_used)] // bench setup: a failure is the bench failing

#[path = "../tests/support/mod.rs"]
mod support;

use anymesh_authn::{Authenticator, FetchSettings, JwksCache};
use anymesh_core::security::jwt::JwksSource;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::*;

fn bench(c: &mut Criterion) {
    let keys = [
        SigningKey::rsa(1, Algorithm::RS256, "rs256"),
        SigningKey::ec(Algorithm::ES256, "es256"),
        SigningKey::ed25519("eddsa"),
    ];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let cache = JwksCache::new(FetchSettings::default()).unwrap();
    let a = Authenticator::new(vec![rule(JwksSource::Inline(jwks(&refs)))], &cache).unwrap();

    for key in &keys {
        let (headers, uri) = bearer(&key.sign(&claims()));
        c.bench_function(&format!("valid {:?}", key.alg), |b| {
            b.iter(|| {
                let (mut h, mut u) = (headers.clone(), uri.clone());
                a.authenticate(&mut h, &mut u).unwrap().unwrap()
            })
        });
    }
    // For comparison, under the same load: jsonwebtoken's own decode with
    // its RustCrypto provider (what the crate offers without aws-lc-rs).
    for key in &keys {
        let token = key.sign(&claims());
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk.clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(key.alg);
        validation.set_audience(&["api"]);
        c.bench_function(
            &format!("jsonwebtoken+RustCrypto decode {:?}", key.alg),
            |b| {
                b.iter(|| {
                    jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
                        .unwrap()
                })
            },
        );
    }

    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let (headers, uri) = bearer(&keys[0].sign(&expired));
    c.bench_function("expired (refused before the signature)", |b| {
        b.iter(|| {
            let (mut h, mut u) = (headers.clone(), uri.clone());
            a.authenticate(&mut h, &mut u).unwrap_err()
        })
    });
    let mut headers = http::HeaderMap::new();
    headers.insert("user-agent", "bench".parse().unwrap());
    let uri: http::Uri = "/path?x=1".parse().unwrap();
    c.bench_function("no token", |b| {
        b.iter(|| {
            let (mut h, mut u) = (headers.clone(), uri.clone());
            a.authenticate(&mut h, &mut u).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
