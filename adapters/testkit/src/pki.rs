//! [`TestPki`]: a throw-away CA with a server certificate for `localhost` /
//! `127.0.0.1` and a client certificate, written as PEM files, for testing
//! adapters' TLS settings against the fakes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, a server and a client certificate, as PEM text and files.
pub struct TestPki {
    dir: tempfile::TempDir,
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
    pub client_pem: String,
    pub client_key_pem: String,
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("test pki: {what}: {e}"),
    }
}

impl TestPki {
    /// Generates the CA and both certificates and writes `ca.pem`,
    /// `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`.
    pub fn new() -> TestPki {
        let mut ca = must(CertificateParams::new(Vec::<String>::new()), "CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "anymesh test CA");
        let ca_key = must(KeyPair::generate(), "CA key");
        let ca_cert = must(ca.self_signed(&ca_key), "CA certificate");

        let mut server = must(
            CertificateParams::new(vec!["localhost".to_string()]),
            "server params",
        );
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = must(KeyPair::generate(), "server key");
        let server_cert = must(
            server.signed_by(&server_key, &ca_cert, &ca_key),
            "server certificate",
        );

        let mut client = must(
            CertificateParams::new(Vec::<String>::new()),
            "client params",
        );
        client
            .distinguished_name
            .push(DnType::CommonName, "anymesh");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = must(KeyPair::generate(), "client key");
        let client_cert = must(
            client.signed_by(&client_key, &ca_cert, &ca_key),
            "client certificate",
        );

        let pki = TestPki {
            dir: must(tempfile::tempdir(), "temp dir"),
            ca_pem: ca_cert.pem(),
            server_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        for (name, text) in [
            ("ca.pem", &pki.ca_pem),
            ("server.pem", &pki.server_pem),
            ("server-key.pem", &pki.server_key_pem),
            ("client.pem", &pki.client_pem),
            ("client-key.pem", &pki.client_key_pem),
        ] {
            must(std::fs::write(pki.path(name), text), name);
        }
        pki
    }

    /// The path of one of the PEM files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rustls server config with the server certificate; with
    /// `require_client_cert`, clients must present one signed by the CA.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = must(
            CertificateDer::pem_slice_iter(self.server_pem.as_bytes()).collect(),
            "server certificate PEM",
        );
        let key = must(
            PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()),
            "server key PEM",
        );
        let builder = must(
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions(),
            "protocol versions",
        );
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            let ca = must(
                CertificateDer::from_pem_slice(self.ca_pem.as_bytes()),
                "CA PEM",
            );
            must(roots.add(ca), "CA root");
            let verifier = must(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build(),
                "client verifier",
            );
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = must(builder.with_single_cert(certs, key), "server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
