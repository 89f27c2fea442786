//! A test PKI (rcgen, ECDSA P-256), raw rustls peers that present whatever
//! certificate a case needs, and a TLS handshake over 127.0.0.1 TCP.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use anymesh_identity::Credentials;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::default_provider;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// A root CA of one trust domain.
pub struct Ca {
    pub td: String,
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

impl Ca {
    pub fn new(td: &str) -> Self {
        Self::named(td, &format!("root of {td}"))
    }

    pub fn named(td: &str, name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{td}").try_into().expect("uri"),
        )];
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            td: td.to_string(),
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf SVID for `ns/sa` in this CA's trust domain.
    pub fn svid(&self, ns: &str, sa: &str) -> Leaf {
        self.leaf(Spec::svid(&format!("spiffe://{}/ns/{ns}/sa/{sa}", self.td)))
    }

    pub fn leaf(&self, spec: Spec) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().expect("uri")))
            .collect();
        params.key_usages = spec.key_usages;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if spec.ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        if let Some(nb) = spec.not_before {
            params.not_before = nb;
        }
        if let Some(na) = spec.not_after {
            params.not_after = na;
        }
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// What a leaf certificate holds.
pub struct Spec {
    pub uris: Vec<String>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub ca: bool,
    pub not_before: Option<time::OffsetDateTime>,
    pub not_after: Option<time::OffsetDateTime>,
}

impl Spec {
    pub fn svid(uri: &str) -> Self {
        Self {
            uris: vec![uri.to_string()],
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ca: false,
            not_before: None,
            not_after: None,
        }
    }

    pub fn expired(mut self) -> Self {
        self.not_before = Some(date_time_ymd(2000, 1, 1));
        self.not_after = Some(date_time_ymd(2001, 1, 1));
        self
    }

    pub fn not_yet_valid(mut self) -> Self {
        self.not_before = Some(date_time_ymd(2200, 1, 1));
        self.not_after = Some(date_time_ymd(2201, 1, 1));
        self
    }
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Credentials presenting this leaf, trusting `bundle`.
    pub fn creds(&self, bundle: &[&Ca]) -> Credentials {
        Credentials::new(
            vec![self.der.clone()],
            self.key(),
            bundle.iter().map(|c| c.der.clone()).collect(),
        )
        .expect("valid credentials")
    }

    /// A server config presenting this leaf, accepting any client certificate.
    pub fn raw_server(&self) -> Arc<ServerConfig> {
        let mut c = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(Arc::new(AcceptAll))
            .with_single_cert(vec![self.der.clone()], self.key())
            .expect("server config");
        c.alpn_protocols = vec![b"anymesh-http/1.1".to_vec()];
        Arc::new(c)
    }

    /// A client config presenting this leaf, accepting any server certificate.
    pub fn raw_client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut c = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(versions)
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAll))
            .with_client_auth_cert(vec![self.der.clone()], self.key())
            .expect("client config");
        c.alpn_protocols = vec![b"anymesh-http/1.1".to_vec()];
        Arc::new(c)
    }
}

/// A client config presenting no certificate, accepting any server.
pub fn anonymous_client() -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAll))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"anymesh-http/1.1".to_vec()];
    Arc::new(c)
}

/// Verifies handshake signatures, accepts every certificate: the peer that
/// presents a bad certificate must not be the one that refuses.
#[derive(Debug)]
struct AcceptAll;

fn algs() -> rustls::crypto::WebPkiSupportedAlgorithms {
    default_provider().signature_verification_algorithms
}

impl ServerCertVerifier for AcceptAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &algs())
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &algs())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        algs().supported_schemes()
    }
}

impl ClientCertVerifier for AcceptAll {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &algs())
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &algs())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        algs().supported_schemes()
    }
}

/// Both ends of one handshake over 127.0.0.1, after one byte each way (in
/// TLS 1.3 a client learns that the server refused its certificate only
/// when it next reads).
pub struct Outcome {
    pub server: std::io::Result<server::TlsStream<TcpStream>>,
    pub client: std::io::Result<client::TlsStream<TcpStream>>,
}

pub async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        tls.write_all(&b).await?;
        tls.flush().await?;
        Ok::<_, std::io::Error>(tls)
    });
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        // The SNI carries routing, not identity: nothing in the certificates
        // names it.
        let sni = ServerName::try_from("reviews.shop.svc.routing.invalid").expect("sni");
        let mut tls = TlsConnector::from(client).connect(sni, tcp).await?;
        tls.write_all(b"x").await?;
        tls.flush().await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(tls)
    };
    let client = connect.await;
    let server = accept.await.expect("accept task");
    Outcome { server, client }
}
