//! What the CA tests share: a CA on 127.0.0.1, a raw HTTPS client that can
//! send any CSR, and certificate inspection.

// Test helpers: a failure here is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anymesh_identity::ca::{CaDir, CaServer, ServeOptions};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair, SanType, SignatureAlgorithm};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub const TD: &str = "example.org";

pub fn id(sa: &str) -> anymesh_identity::SpiffeId {
    anymesh_identity::SpiffeId::for_account(TD, "shop", sa).unwrap()
}

pub async fn serve(ca: &CaDir, leaf_ttl: Duration) -> CaServer {
    serve_on(ca, leaf_ttl, "127.0.0.1:0".parse().unwrap()).await
}

pub async fn serve_on(ca: &CaDir, leaf_ttl: Duration, listen: SocketAddr) -> CaServer {
    CaServer::start(
        ca.clone(),
        ServeOptions {
            listen,
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            leaf_ttl,
        },
    )
    .await
    .unwrap()
}

pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

pub fn bundle(ca: &CaDir) -> Vec<CertificateDer<'static>> {
    certs(&ca.bundle_pem().unwrap())
}

/// A CSR for `sans` with a new key of `alg`.
pub fn csr_with(sans: Vec<SanType>, alg: &'static SignatureAlgorithm) -> (KeyPair, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans;
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

pub fn csr() -> (KeyPair, String) {
    csr_with(Vec::new(), &rcgen::PKCS_ECDSA_P256_SHA256)
}

/// The answer of one request: the status and JSON body, or why the
/// connection failed.
pub async fn request(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<(u16, serde_json::Value), String> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store);
    let config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    // A refused client certificate shows in TLS 1.3 only once the server
    // answers the first request.
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

pub async fn join(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    token: &str,
    csr: &str,
) -> Result<(u16, serde_json::Value), String> {
    request(
        addr,
        roots,
        None,
        "POST",
        "/v1/join",
        serde_json::json!({"token": token, "csr": csr}),
    )
    .await
}

/// The chain from a successful answer.
pub fn chain_of(answer: &(u16, serde_json::Value)) -> Vec<CertificateDer<'static>> {
    assert_eq!(answer.0, 200, "{}", answer.1);
    certs(answer.1["chain"].as_str().unwrap())
}

/// What a leaf says about itself.
#[derive(Debug)]
pub struct LeafView {
    pub uris: Vec<String>,
    pub other_sans: usize,
    pub subject_empty: bool,
    pub is_ca: bool,
    pub key_usage: (bool, bool, bool, bool), // digitalSignature, keyEncipherment, keyCertSign, cRLSign
    pub eku: (bool, bool),                   // serverAuth, clientAuth
    pub issuer: String,
    pub lifetime: i64,
    pub spki: Vec<u8>,
}

pub fn view(der: &CertificateDer<'_>) -> LeafView {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let mut uris = Vec::new();
    let mut other_sans = 0;
    if let Some(san) = cert.subject_alternative_name().unwrap() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push(u.to_string()),
                _ => other_sans += 1,
            }
        }
    }
    let subject_empty = cert.subject().iter_attributes().next().is_none();
    let ku = cert.key_usage().unwrap().unwrap().value;
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    LeafView {
        uris,
        other_sans,
        subject_empty,
        is_ca: cert.is_ca(),
        key_usage: (
            ku.digital_signature(),
            ku.key_encipherment(),
            ku.key_cert_sign(),
            ku.crl_sign(),
        ),
        eku: (eku.server_auth, eku.client_auth),
        issuer: cert.issuer().to_string(),
        lifetime: cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
        spki: cert.public_key().subject_public_key.data.to_vec(),
    }
}

/// Full path validation (webpki, as rustls does for client certificates):
/// does `chain` (leaf first) chain to one of `roots`, now?
pub fn verifies(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
) -> Result<(), String> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn subject_of(der: &CertificateDer<'_>) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.subject().to_string()
}

pub fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::try_from(key.serialize_der()).unwrap()
}

#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Polls `f` every 20 ms until it holds or `deadline` passes.
pub async fn eventually(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
