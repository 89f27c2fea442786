//! [`TestPki`]: a throwaway CA with a server and a client certificate, as PEM
//! files, for TLS tests on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a test certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// PEM files in one directory: a CA, a server certificate for `localhost`
/// and `127.0.0.1` signed by it, a client certificate signed by it, and a
/// second, unrelated CA (for "wrong CA" tests).
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

impl TestPki {
    /// A rustls server config with the server certificate (for the fakes'
    /// HTTPS); with `require_client_cert`, clients must present a certificate
    /// signed by the CA.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
            match r {
                Ok(v) => v,
                Err(e) => panic!("test pki: {what}: {e}"),
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = must(
            CertificateDer::pem_file_iter(&self.server_cert).and_then(|i| i.collect()),
            "server certificate PEM",
        );
        let key = must(
            PrivateKeyDer::from_pem_file(&self.server_key),
            "server key PEM",
        );
        let builder = must(
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions(),
            "protocol versions",
        );
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            let ca = must(CertificateDer::from_pem_file(&self.ca), "CA PEM");
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

    /// Generates everything into `dir` (which must exist).
    pub fn generate(dir: &Path) -> Result<Self, PkiError> {
        let ca = ca("anymesh test CA")?;
        let other = ca_only("anymesh unrelated CA")?;
        let server = leaf(
            &ca,
            "etcd",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client = leaf(
            &ca,
            "anymesh",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let write = |name: &str, text: &str| -> Result<PathBuf, PkiError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| PkiError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.pem", &ca.pem())?,
            server_cert: write("server.pem", &server.0)?,
            server_key: write("server-key.pem", &server.1)?,
            client_cert: write("client.pem", &client.0)?,
            client_key: write("client-key.pem", &client.1)?,
            other_ca: write("other-ca.pem", &other)?,
        })
    }
}

fn ca_params(name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    CertifiedIssuer::self_signed(ca_params(name)?, KeyPair::generate()?)
}

/// A CA certificate alone, as PEM.
fn ca_only(name: &str) -> Result<String, rcgen::Error> {
    Ok(ca(name)?.pem())
}

/// A certificate and its key, as PEM, signed by `issuer`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &**issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}
