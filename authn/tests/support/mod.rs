//! Test support: signing keys of every supported kind, tokens, and a real
//! HTTPS JWKS server on 127.0.0.1 with its own CA.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anymesh_core::security::jwt::{JwksSource, JwtRule};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://issuer.example.com";

/// A private key that signs tokens, with its public JWK.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub key: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    fn new(alg: Algorithm, kid: &str, key: EncodingKey) -> SigningKey {
        let jwk = Jwk::from_encoding_key(&key, alg).expect("jwk from key");
        let mut jwk = serde_json::to_value(jwk).expect("jwk json");
        jwk["kid"] = json!(kid);
        SigningKey {
            alg,
            kid: kid.to_owned(),
            key,
            jwk,
        }
    }

    /// RSA key `n` (1 or 2) from the fixtures, for `alg` (RS* or PS*).
    pub fn rsa(n: u8, alg: Algorithm, kid: &str) -> SigningKey {
        let pem = match n {
            1 => include_bytes!("../fixtures/rsa1.pem").as_slice(),
            _ => include_bytes!("../fixtures/rsa2.pem").as_slice(),
        };
        SigningKey::new(alg, kid, EncodingKey::from_rsa_pem(pem).expect("rsa pem"))
    }

    pub fn ec(alg: Algorithm, kid: &str) -> SigningKey {
        let rcgen_alg = match alg {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            other => panic!("not an EC alg: {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("ec key");
        SigningKey::new(alg, kid, EncodingKey::from_ec_der(&pair.serialize_der()))
    }

    pub fn ed25519(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed key");
        // ring writes PKCS#8 v2 (seed and public key); ed25519-dalek reads
        // v1: the same prefix with version 0 and the seed alone.
        let v2 = pair.serialize_der();
        assert_eq!(
            &v2[2..16],
            b"\x02\x01\x01\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20"
        );
        let mut v1 = b"\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20".to_vec();
        v1.extend_from_slice(&v2[16..48]);
        SigningKey::new(Algorithm::EdDSA, kid, EncodingKey::from_ed_der(&v1))
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }

    /// Signs without `kid`.
    pub fn sign_without_kid(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).expect("sign")
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims valid for an hour, from `ISSUER` for audience `api`.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": "api",
        "azp": "web-app",
        "exp": now() + 3600,
        "iat": now(),
        "group": "admins",
        "level": 3,
        "admin": true,
        "org": { "team": { "name": "mesh" } },
    })
}

/// A rule for `ISSUER` with default locations and no outputs.
pub fn rule(jwks: JwksSource) -> JwtRule {
    JwtRule {
        issuer: ISSUER.into(),
        audiences: vec![],
        jwks,
        from_headers: vec![],
        from_params: vec![],
        from_cookies: vec![],
        output_payload_to_header: None,
        output_claim_to_headers: vec![],
        forward_original_token: false,
        fetch_timeout: Duration::from_secs(5),
    }
}

/// Headers and URI of a request carrying `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> (http::HeaderMap, http::Uri) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    (headers, "/path".parse().expect("uri"))
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JWKS server over HTTPS on 127.0.0.1, signed by its own test CA.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub doc: Arc<Mutex<String>>,
    pub fail: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(doc: String) -> JwksServer {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authn test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let doc = Arc::new(Mutex::new(doc));
        let fail = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, f, h) = (doc.clone(), fail.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (d, f, h) = (d.clone(), f.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |_req| {
                        let (d, f, h) = (d.clone(), f.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let resp = if f.load(Ordering::SeqCst) {
                                http::Response::builder()
                                    .status(503)
                                    .body(Full::new(Bytes::from_static(b"down")))
                            } else {
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(d.lock().clone())))
                            };
                            Ok::<_, Infallible>(resp.expect("response"))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            ca: ca_cert.der().clone(),
            doc,
            fail,
            hits,
            task,
        }
    }

    pub fn uri(&self) -> String {
        format!(
            "https://127.0.0.1:{}/.well-known/jwks.json",
            self.addr.port()
        )
    }

    pub fn set(&self, doc: String) {
        *self.doc.lock() = doc;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
