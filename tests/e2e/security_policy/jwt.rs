//! RequestAuthentication through B's inbound listener, its keys fetched
//! from a local HTTPS JWKS server whose CA B trusts through
//! `mesh.jwks_ca_file`: valid, expired, wrong issuer, wrong audience, bad
//! signature and `alg: none` tokens, a token required by an
//! AuthorizationPolicy (`requestPrincipals`), and a key rotation at the
//! server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use super::{call, call_seen, caller, endpoint, server, Answer, From, Served};
use crate::harness::{eventually, write, TestMesh};
use crate::mtls::pki::Root;

const ISSUER: &str = "https://issuer.test";

/// An ES256 signing key with its public JWK.
struct Key {
    kid: &'static str,
    key: EncodingKey,
    jwk: Value,
}

impl Key {
    fn new(kid: &'static str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk"))
                .expect("jwk json");
        jwk["kid"] = json!(kid);
        Key { kid, key, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims of `sub` valid for an hour, from [`ISSUER`] for audience `httpbin`.
fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": "httpbin", "iat": now(), "exp": now() + 3600})
}

/// The same token with its header replaced by `{"alg":"none","typ":"JWT"}`
/// and no signature.
fn unsigned(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a payload");
    format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
}

/// A JWKS server over HTTPS on 127.0.0.1 with a certificate of its own
/// test CA (an IP SAN), serving `doc` at any path.
struct JwksServer {
    addr: SocketAddr,
    ca_pem: String,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(doc: String) -> JwksServer {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "jwks test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let leaf = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
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
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, d, h) = (acceptor.clone(), d.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = Bytes::from(d.lock().clone());
                        async move {
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(body))
                                    .expect("response"),
                            )
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
            ca_pem: ca_cert.pem(),
            doc,
            hits,
            task,
        }
    }

    fn uri(&self) -> String {
        format!(
            "https://127.0.0.1:{}/.well-known/jwks.json",
            self.addr.port()
        )
    }

    fn set(&self, doc: String) {
        *self.doc.lock() = doc;
    }
}

fn request_authentication(uri: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [httpbin]\n    jwksUri: {uri}\n    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]\n---\n"
    )
}

/// Istio's "require a token" policy, and a DENY of one request principal.
fn require_token() -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {{requestPrincipals: [\"*\"]}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: not-mallory, namespace: foo}}\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source: {{requestPrincipals: [\"{ISSUER}/mallory\"]}}\n---\n"
    )
}

async fn with_token(a: &TestMesh, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    call(
        From::Proxy(a),
        "httpbin",
        &Method::GET,
        "/headers",
        &headers,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authentication_through_the_inbound_listener_with_a_rotating_jwks_server() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let jwks_server = JwksServer::start(jwks(&[&k1])).await;
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let served = [Served {
        name: "httpbin",
        labels: "app: httpbin",
        app: &app,
    }];
    let ra = request_authentication(&jwks_server.uri());
    let ca_dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca_dir.path().join("jwks-ca.pem");
    write(&ca_file, &jwks_server.ca_pem);
    let extra = format!("mesh: {{jwks_ca_file: {}}}\n", ca_file.display());
    let b = server(&root, "foo", "httpbin", &served, &ra, &extra).await;
    let inbound = b.mesh.inbound.expect("inbound");
    let endpoints = [endpoint(
        &app,
        "app: httpbin",
        Some((inbound, "foo", "httpbin")),
    )];
    let a = caller(&root, "foo", "sleep", "httpbin", &endpoints, "").await;

    let valid = k1.sign(&claims("alice"));
    eventually("a valid token accepted (keys fetched)", || async {
        let (status, who, _) = with_token(&a, Some(&valid)).await;
        (status == StatusCode::OK && who == "app").then_some(())
    })
    .await;
    assert!(jwks_server.hits.load(Ordering::SeqCst) >= 1);
    // The application gets the claim it asked for, not the token (no
    // forwardOriginalToken).
    let bearer = format!("Bearer {valid}");
    let (answer, seen) = call_seen(
        From::Proxy(&a),
        "httpbin",
        &Method::GET,
        "/headers",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    let seen: Vec<&str> = seen.split(',').collect();
    assert!(
        seen.contains(&"x-jwt-sub") && !seen.contains(&"authorization"),
        "{seen:?}"
    );

    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 600);
    let mut wrong_issuer = claims("alice");
    wrong_issuer["iss"] = json!("https://other-issuer.test");
    let mut wrong_audience = claims("alice");
    wrong_audience["aud"] = json!("reviews");
    // Signed by another key under k1's kid.
    let forged = Key::new("k1");
    let refused: [(&str, String, &str); 6] = [
        ("expired", k1.sign(&expired), "Jwt is expired"),
        (
            "wrong issuer",
            k1.sign(&wrong_issuer),
            "Jwt issuer is not configured",
        ),
        (
            "wrong audience",
            k1.sign(&wrong_audience),
            "Audiences in Jwt are not allowed",
        ),
        (
            "bad signature",
            forged.sign(&claims("alice")),
            "Jwt verification fails",
        ),
        (
            "alg: none",
            unsigned(&valid),
            "Jwt header [alg] is not supported",
        ),
        // Istio's authentication task sends this one.
        (
            "not a JWT",
            "deadbeef".to_string(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ];
    let mut failures = Vec::new();
    for (what, token, reason) in &refused {
        let (status, who, body) = with_token(&a, Some(token)).await;
        if (status, body.as_str(), who.as_str()) != (StatusCode::UNAUTHORIZED, *reason, "-") {
            failures.push(format!(
                "{what}: expected 401 {reason:?}, got {status} from {who}: {body:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (status, who, body) = with_token(&a, None).await;
    assert_eq!(
        (status, who.as_str()),
        (StatusCode::OK, "app"),
        "no token passes without a requirement: {body}"
    );

    write(&b.path("routes.yaml"), &format!("{ra}{}", require_token()));
    eventually("the requirement in force", || async {
        (with_token(&a, None).await.0 == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    let (status, _, body) = with_token(&a, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    let (status, who, body) = with_token(&a, Some(&valid)).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    // The principal is `<iss>/<sub>`: mallory's valid token is denied by name.
    let (status, _, body) = with_token(&a, Some(&k1.sign(&claims("mallory")))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );

    // Rotation: the server now publishes k2 only; a token of the new kid
    // makes B fetch early, and k1's tokens are refused from then on.
    jwks_server.set(jwks(&[&k2]));
    let rotated = k2.sign(&claims("alice"));
    eventually("a token of the new key accepted", || async {
        (with_token(&a, Some(&rotated)).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let (status, _, body) = with_token(&a, Some(&valid)).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            "Jwks doesn't have key to match kid or alg from Jwt"
        ),
        "the retired key's token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_jwks_ca_file_stops_the_proxy_naming_the_setting() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let served = [Served {
        name: "httpbin",
        labels: "app: httpbin",
        app: &app,
    }];
    for (file, content, says) in [
        ("missing.pem", None, "missing.pem"),
        (
            "empty.pem",
            Some("not a certificate\n"),
            "no CERTIFICATE block",
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = dir.path().join("id");
        root.write_svid(&id, "foo", "httpbin", false);
        if let Some(content) = content {
            write(&dir.path().join(file), content);
        }
        write(&dir.path().join("services.yaml"), "services: []\n");
        write(&dir.path().join("routes.yaml"), "");
        let yaml = format!(
            "{}{}{}mesh: {{jwks_ca_file: {file}}}\n",
            super::COMMON,
            crate::mtls::pki::identity_files(&id),
            super::workloads("foo", "httpbin", &served)
        );
        let path = dir.path().join("anymesh.yaml");
        write(&path, &yaml);
        let settings = anymesh::settings::Settings::load(&path).expect("settings");
        let err = match anymesh::mesh::Mesh::start(settings).await {
            Ok(_) => panic!("{file}: the proxy started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("mesh.jwks_ca_file") && err.contains(says),
            "{file}: {err}"
        );
    }
}
