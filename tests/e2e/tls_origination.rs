//! DestinationRule `trafficPolicy.tls` on the request path: TLS
//! origination (`SIMPLE`, `MUTUAL`, `insecureSkipVerify`) to a local HTTPS
//! upstream (tokio-rustls with an rcgen CA), `DISABLE` toward an endpoint
//! with mesh metadata, and `ISTIO_MUTUAL` (Istio's bookinfo sample, pinned
//! `subjectAltNames`) between two anymesh proxies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::*;
use crate::mtls::pki::{identity_files, Root};

/// A test CA (ECDSA P-256) issuing server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate with the DNS SAN `name`.
    fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let params = CertificateParams::new(vec![name.to_string()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// An HTTPS/1.1 upstream answering every request `200 over tls`, with
/// `x-upstream: tls-app`; with `client_ca`, it requires a client
/// certificate signed by it. Counts the requests it answered.
struct HttpsUpstream {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
}

async fn https_upstream(leaf: &Leaf, client_ca: Option<&Ca>) -> HttpsUpstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("pem"))
                .expect("root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Request heads without bodies (GETs), kept alive.
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .expect("found above")
                        + 4;
                    buf.drain(..end);
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nx-upstream: tls-app\r\n\r\nover tls\n";
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    HttpsUpstream { addr, answered }
}

/// An HTTPS upstream speaking HTTP/2 only (ALPN `h2`), answering `200`
/// with `x-upstream: tls-h2-app`; counts the connections that negotiated `h2`.
async fn https_h2_upstream(leaf: &Leaf) -> (SocketAddr, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let h2 = Arc::new(AtomicUsize::new(0));
    let count = h2.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let svc = hyper::service::service_fn(|_req| async {
                    http::Response::builder()
                        .header("x-upstream", "tls-h2-app")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"over h2\n",
                        )))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
            });
        }
    });
    (addr, h2)
}

/// A temp dir holding PEM files.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    fn put(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        write(&path, text);
        path
    }
}

/// A mesh whose registry has `api.test` (port 443, HTTP/1.1) at `upstream`.
async fn mesh_to(upstream: SocketAddr, routes: &str) -> TestMesh {
    let services = format!(
        "services:\n  - name: api.test\n    ports: [{{name: https, port: 443, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: tls-app}}\n",
        upstream.port()
    );
    TestMesh::start_with_services_and_settings(&services, routes, "").await
}

/// A DestinationRule for `api.test` with the given `tls` fields (flow mapping entries).
fn rule(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api}}\nspec:\n  host: api.test\n  trafficPolicy:\n    tls: {{{tls}}}\n"
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Writes `routes` and waits until a request gets `want` with a body
/// containing `marker` (so that an answer of the previous rule is not
/// taken for one of the new); the body.
async fn routes_give(
    mesh: &TestMesh,
    host: &str,
    routes: &str,
    want: StatusCode,
    marker: &str,
) -> String {
    write(&mesh.path("routes.yaml"), routes);
    eventually("the new rule in force", || async {
        let (status, _, body) = mesh.get(host, "/", &[]).await;
        (status == want && body.contains(marker)).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_origination_verifies_the_server_and_says_what_failed() {
    let (ca, stranger) = (Ca::new("test root"), Ca::new("stranger root"));
    let files = Files::new();
    let ca_file = files.put("ca.pem", &ca.pem);
    let stranger_file = files.put("stranger.pem", &stranger.pem);
    let upstream = https_upstream(&ca.leaf("api.test"), None).await;
    let simple = |ca: &Path, extra: &str| {
        rule(&format!(
            "mode: SIMPLE, caCertificates: {}, sni: api.test{extra}",
            path(ca)
        ))
    };
    let mesh = mesh_to(upstream.addr, &simple(&ca_file, "")).await;
    let (status, who, body) = mesh.get("api.test", "/", &[]).await;
    assert_eq!(
        (status, who.as_str()),
        (StatusCode::OK, "tls-app"),
        "{body}"
    );
    assert_eq!(body, "over tls\n");

    // A CA that did not sign the server's certificate.
    let body = routes_give(
        &mesh,
        "api.test",
        &simple(&stranger_file, ""),
        StatusCode::SERVICE_UNAVAILABLE,
        "stranger.pem",
    )
    .await;
    assert!(
        body.contains("not signed by a CA of caCertificates") && body.contains("stranger.pem"),
        "{body}"
    );
    // A server name the certificate does not carry; subjectAltNames
    // naming the one it carries instead.
    let body = routes_give(
        &mesh,
        "api.test",
        &rule(&format!(
            "mode: SIMPLE, caCertificates: {}, sni: other.test",
            path(&ca_file)
        )),
        StatusCode::SERVICE_UNAVAILABLE,
        "not valid for name",
    )
    .await;
    assert!(body.contains("not valid for name"), "{body}");
    routes_give(
        &mesh,
        "api.test",
        &rule(&format!(
            "mode: SIMPLE, caCertificates: {}, sni: other.test, subjectAltNames: [api.test]",
            path(&ca_file)
        )),
        StatusCode::OK,
        "over tls",
    )
    .await;
    // A CA file that does not exist: named in the answer.
    let missing = files.0.path().join("missing.pem");
    let body = routes_give(
        &mesh,
        "api.test",
        &simple(&missing, ""),
        StatusCode::SERVICE_UNAVAILABLE,
        "missing.pem",
    )
    .await;
    assert!(
        body.contains("caCertificates") && body.contains(&path(&missing)),
        "{body}"
    );
    // insecureSkipVerify: a certificate no configured root trusts.
    routes_give(
        &mesh,
        "api.test",
        &rule("mode: SIMPLE, insecureSkipVerify: true"),
        StatusCode::OK,
        "over tls",
    )
    .await;
    // Without caCertificates the webpki roots apply: the test CA is not one.
    let body = routes_give(
        &mesh,
        "api.test",
        &rule("mode: SIMPLE, sni: api.test"),
        StatusCode::SERVICE_UNAVAILABLE,
        "webpki roots",
    )
    .await;
    assert!(body.contains("webpki roots"), "{body}");
    assert!(upstream.answered.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_origination_presents_the_client_certificate() {
    let (ca, clients) = (Ca::new("test root"), Ca::new("client root"));
    let files = Files::new();
    let ca_file = files.put("ca.pem", &ca.pem);
    let client = clients.leaf("client.test");
    let cert = files.put("client.pem", &client.cert);
    let key = files.put("client-key.pem", &client.key);
    let upstream = https_upstream(&ca.leaf("api.test"), Some(&clients)).await;
    let mutual = rule(&format!(
        "mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}, sni: api.test",
        path(&ca_file),
        path(&cert),
        path(&key)
    ));
    let mesh = mesh_to(upstream.addr, &mutual).await;
    let (status, who, body) = mesh.get("api.test", "/", &[]).await;
    assert_eq!(
        (status, who.as_str()),
        (StatusCode::OK, "tls-app"),
        "{body}"
    );

    // SIMPLE presents no certificate: the upstream refuses the connection.
    let simple = rule(&format!(
        "mode: SIMPLE, caCertificates: {}, sni: api.test",
        path(&ca_file)
    ));
    routes_give(
        &mesh,
        "api.test",
        &simple,
        StatusCode::SERVICE_UNAVAILABLE,
        "",
    )
    .await;
    let answered = upstream.answered.load(Ordering::SeqCst);
    for _ in 0..3 {
        let (status, _, body) = mesh.get("api.test", "/", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    assert_eq!(upstream.answered.load(Ordering::SeqCst), answered);

    // MUTUAL again, with a key file that holds no key: named in the answer.
    let broken = files.put("broken-key.pem", "not a key");
    let body = routes_give(
        &mesh,
        "api.test",
        &mutual.replace(&path(&key), &path(&broken)),
        StatusCode::SERVICE_UNAVAILABLE,
        "broken-key.pem",
    )
    .await;
    assert!(
        body.contains("privateKey") && body.contains("broken-key.pem"),
        "{body}"
    );
    routes_give(&mesh, "api.test", &mutual, StatusCode::OK, "over tls").await;
}

/// An HTTP/2 port gets ALPN `h2` on the originated connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origination_to_an_http2_port_negotiates_h2() {
    let ca = Ca::new("test root");
    let files = Files::new();
    let ca_file = files.put("ca.pem", &ca.pem);
    let (addr, h2) = https_h2_upstream(&ca.leaf("api.test")).await;
    let services = format!(
        "services:\n  - name: api.test\n    ports: [{{name: grpc, port: 443, protocol: http2}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: tls-h2-app}}\n",
        addr.port()
    );
    let routes = rule(&format!("mode: SIMPLE, caCertificates: {}", path(&ca_file)));
    let mesh = TestMesh::start_with_services_and_settings(&services, &routes, "").await;
    for _ in 0..3 {
        let (status, who, body) = mesh.get("api.test", "/", &[]).await;
        assert_eq!(
            (status, who.as_str()),
            (StatusCode::OK, "tls-h2-app"),
            "{body}"
        );
    }
    assert_eq!(
        h2.load(Ordering::SeqCst),
        1,
        "one multiplexed h2 connection"
    );
}

/// The proxy in front of `app` (workload `b`) and a caller whose registry
/// says `app`'s endpoint (service `reviews`) is fronted by it with
/// identity `b`: the pattern of `mtls.rs`. The caller reads `routes`.
async fn proxies(
    root: &Root,
    app: &anymesh::upstream::Upstream,
    routes: &str,
) -> (TestMesh, TestMesh) {
    let common = "listeners: {outbound: 127.0.0.1:0, admin: 127.0.0.1:0}\n\
                  registries: [{name: file, type: file, path: services.yaml, poll_interval: 200ms}]\n\
                  routing: [routes.yaml]\nrouting_reload_interval: 100ms\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let id = dir.path().join("id");
    root.write_svid(&id, "default", "b", false);
    write(&dir.path().join("services.yaml"), "services: []\n");
    write(&dir.path().join("routes.yaml"), "");
    let yaml = format!(
        "{common}{}workloads:\n  - {{name: b, namespace: default, service_account: b, labels: {{app: b}}, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0, handshake_timeout: 2s}}\n",
        identity_files(&id),
        app.addr.port()
    );
    let b = crate::mtls::launch(dir, &yaml).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let id = dir.path().join("id");
    root.write_svid(&id, "default", "a", false);
    let inbound = b
        .mesh
        .inbound
        .expect("the server side has an inbound listener");
    write(
        &dir.path().join("services.yaml"),
        &format!(
            "services:\n  - name: reviews\n    ports: [{{name: http, port: 9080, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: app, labels: {{version: v1}}, mesh: {{port: {}, service_account: b}}}}\n",
            app.addr.port(),
            inbound.port()
        ),
    );
    write(&dir.path().join("routes.yaml"), routes);
    let a = crate::mtls::launch(dir, &format!("{common}{}", identity_files(&id))).await;
    (b, a)
}

fn istio_mutual(sans: &[&str]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: {sans:?}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_and_disable_toward_an_endpoint_with_a_mesh_proxy() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    // Istio's sample: every bookinfo service ISTIO_MUTUAL.
    let bookinfo =
        include_str!("../../core/tests/fixtures/istio-bookinfo/destination-rule-all-mtls.yaml");
    let (b, a) = proxies(&root, &app, bookinfo).await;
    let mtls = || crate::mtls::stats(&b).mtls.load(Ordering::Relaxed);
    let (status, who, body) = a.get("reviews:9080", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    assert!(mtls() >= 1, "the hop was mutual TLS");

    // subjectAltNames replace the registry's identity: none is b's.
    routes_give(
        &a,
        "reviews:9080",
        &istio_mutual(&["spiffe://cluster.local/ns/default/sa/other"]),
        StatusCode::SERVICE_UNAVAILABLE,
        "secure naming",
    )
    .await;

    // DISABLE: plaintext to the application's own port, past its proxy.
    let disable = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    tls: {mode: DISABLE}\n";
    routes_give(&a, "reviews:9080", disable, StatusCode::OK, "").await;
    let (before, received) = (mtls(), app.received());
    for _ in 0..5 {
        let (status, who, body) = a.get("reviews:9080", "/", &[]).await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    }
    assert_eq!(mtls(), before, "no mutual TLS with DISABLE");
    assert_eq!(app.received(), received + 5);
    let plain = crate::mtls::stats(&b).plaintext.load(Ordering::Relaxed);
    assert_eq!(
        plain, 0,
        "nothing went through the proxy in plaintext either"
    );

    // Any of the subjectAltNames may match: mutual TLS again.
    write(
        &a.path("routes.yaml"),
        &istio_mutual(&[
            "spiffe://cluster.local/ns/default/sa/other",
            "spiffe://cluster.local/ns/default/sa/b",
        ]),
    );
    eventually("mutual TLS again", || async {
        let (status, _, _) = a.get("reviews:9080", "/", &[]).await;
        (status == StatusCode::OK && mtls() > before).then_some(())
    })
    .await;
}
