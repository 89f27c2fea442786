//! TLS origination to upstreams (DestinationRule `tls` modes `SIMPLE` and
//! `MUTUAL`): the client configs, built from the files the rule names and
//! cached per set of files, and the server certificate check.
//!
//! - The server's chain is verified against `caCertificates` (a PEM file of
//!   one or more roots), or the webpki roots (Mozilla's) when none is given.
//! - Its name: any of `subjectAltNames` when given (a DNS name or IP
//!   address matched as webpki matches host names, a URI such as a SPIFFE
//!   ID compared exactly with the certificate's URI SANs), else the server
//!   name sent (the `sni`, else the service's hostname).
//! - `insecureSkipVerify` accepts any certificate (the handshake signature
//!   is still checked against it); a warning is logged once per cluster.
//! - `MUTUAL` presents the certificate chain and key of `clientCertificate`
//!   and `privateKey`.
//! - ALPN: `h2` for HTTP/2 and gRPC ports, else `http/1.1`.
//!
//! Files are read at the first connection that needs them and kept while
//! their size and modification time stay the same (checked at every new
//! connection, three `stat`s): a certificate renewed on disk is used by the
//! next connection. A missing or unusable file fails the connection with
//! the file and the reason (503 `upstream_connect_error`), logged once per
//! change of the files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use anymesh_core::routes::Origination;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::version::{TLS12, TLS13};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

/// How many distinct sets of origination settings keep a config (a few
/// per DestinationRule; past it the cache starts over).
const CACHED: usize = 256;

/// The client configs of TLS origination, per set of files and settings.
#[derive(Default)]
pub(crate) struct OriginationConfigs {
    cache: Mutex<Vec<Cached>>,
    /// Clusters whose `insecureSkipVerify` was warned about.
    warned: Mutex<HashSet<String>>,
}

/// One config (or the reason there is none) with the state of its files
/// when it was built.
struct Cached {
    key: Key,
    stamps: Stamps,
    config: Result<Arc<ClientConfig>, Arc<str>>,
}

/// What a config depends on.
#[derive(PartialEq, Eq)]
struct Key {
    ca: Option<PathBuf>,
    /// `MUTUAL`: certificate and key.
    client: Option<(PathBuf, PathBuf)>,
    subject_alt_names: Vec<String>,
    insecure: bool,
    h2: bool,
}

/// Size and modification time of each file (`None`: cannot be read).
type Stamps = Vec<Option<(u64, SystemTime)>>;

impl Key {
    fn of(o: &Origination, h2: bool) -> Result<Self, String> {
        let s = &o.settings;
        let client = match (o.mutual, &s.client_certificate, &s.private_key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (true, _, _) => {
                return Err("tls mode MUTUAL needs clientCertificate and privateKey".to_string())
            }
        };
        Ok(Self {
            ca: s.ca_certificates.clone(),
            client,
            subject_alt_names: s.subject_alt_names.clone(),
            insecure: s.insecure_skip_verify,
            h2,
        })
    }

    fn files(&self) -> impl Iterator<Item = &Path> {
        let client = self
            .client
            .iter()
            .flat_map(|(c, k)| [c.as_path(), k.as_path()]);
        self.ca.as_deref().into_iter().chain(client)
    }

    fn stamps(&self) -> Stamps {
        self.files()
            .map(|f| {
                let m = std::fs::metadata(f).ok()?;
                Some((m.len(), m.modified().ok()?))
            })
            .collect()
    }
}

impl OriginationConfigs {
    /// The client config for `o` on a connection carrying HTTP/2 (`h2`) or
    /// HTTP/1.1; the error names the file and what is wrong with it.
    pub(crate) fn config(&self, o: &Origination, h2: bool) -> Result<Arc<ClientConfig>, Arc<str>> {
        if o.settings.insecure_skip_verify {
            let mut warned = self.warned.lock();
            if !warned.contains(&o.cluster) {
                warned.insert(o.cluster.clone());
                tracing::warn!(cluster = %o.cluster, "DestinationRule tls insecureSkipVerify: the upstream's certificate is not verified");
            }
        }
        let key = Key::of(o, h2).map_err(Arc::<str>::from)?;
        let stamps = key.stamps();
        {
            let cache = self.cache.lock();
            if let Some(c) = cache.iter().find(|c| c.key == key && c.stamps == stamps) {
                return c.config.clone();
            }
        }
        // Built outside the lock: files are read.
        let config = build(&key).map(Arc::new).map_err(Arc::<str>::from);
        if let Err(e) = &config {
            tracing::warn!(cluster = %o.cluster, error = %e, "TLS origination: cannot build the client config");
        }
        let mut cache = self.cache.lock();
        cache.retain(|c| c.key != key);
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.push(Cached {
            key,
            stamps,
            config: config.clone(),
        });
        config
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Mozilla's roots (webpki-roots), for origination without `caCertificates`.
fn webpki_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Arc::new(roots)
        })
        .clone()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// Builds the config of `key`, reading its files.
fn build(key: &Key) -> Result<ClientConfig, String> {
    let roots = match &key.ca {
        None => webpki_roots(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for (i, cert) in certificates(path, "caCertificates")?
                .into_iter()
                .enumerate()
            {
                roots.add(cert).map_err(|e| {
                    format!(
                        "caCertificates {}: certificate {i} is not a usable root: {e}",
                        path.display()
                    )
                })?;
            }
            Arc::new(roots)
        }
    };
    let provider = provider();
    let verifier = Arc::new(OriginVerifier {
        roots,
        names: key
            .subject_alt_names
            .iter()
            .map(|n| SanName::of(n))
            .collect(),
        insecure: key.insecure,
        algs: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &key.client {
        None => builder.with_no_client_auth(),
        Some((cert, private_key)) => {
            let chain = certificates(cert, "clientCertificate")?;
            let pem = read(private_key, "privateKey")?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                format!(
                    "privateKey {}: no usable PEM private key: {e}",
                    private_key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "clientCertificate {} and privateKey {}: {e}",
                    cert.display(),
                    private_key.display()
                )
            })?
        }
    };
    config.alpn_protocols = vec![if key.h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(config)
}

/// A name of `subjectAltNames`.
#[derive(Debug)]
enum SanName {
    /// A DNS name or IP address, matched as webpki matches server names.
    Host(ServerName<'static>),
    /// Anything else with a scheme (`spiffe://...`): a URI SAN, exactly.
    Uri(String),
}

impl SanName {
    fn of(name: &str) -> Self {
        if name.contains("://") {
            return SanName::Uri(name.to_string());
        }
        match ServerName::try_from(name.to_string()) {
            Ok(n) => SanName::Host(n),
            // Not a host name: only a URI SAN could carry it.
            Err(_) => SanName::Uri(name.to_string()),
        }
    }

    fn matches(&self, cert: &ParsedCertificate<'_>, der: &CertificateDer<'_>) -> bool {
        match self {
            SanName::Host(n) => verify_server_name(cert, n).is_ok(),
            SanName::Uri(u) => uri_sans(der).iter().any(|s| s == u),
        }
    }
}

/// The URI SANs of a certificate.
fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// The server certificate check of origination (module doc).
#[derive(Debug)]
struct OriginVerifier {
    roots: Arc<RootCertStore>,
    /// `subjectAltNames`; empty: the server name is verified.
    names: Vec<SanName>,
    insecure: bool,
    algs: WebPkiSupportedAlgorithms,
}

/// The names a refused certificate did not carry.
#[derive(Debug)]
struct NoSubjectAltName(Vec<String>);

impl std::fmt::Display for NoSubjectAltName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the certificate names none of the subjectAltNames {:?}",
            self.0
        )
    }
}

impl std::error::Error for NoSubjectAltName {}

impl ServerCertVerifier for OriginVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if self.names.is_empty() {
            verify_server_name(&cert, server_name)?;
        } else if !self.names.iter().any(|n| n.matches(&cert, end_entity)) {
            let names = self
                .names
                .iter()
                .map(|n| match n {
                    SanName::Host(h) => h.to_str().into_owned(),
                    SanName::Uri(u) => u.clone(),
                })
                .collect();
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NoSubjectAltName(names))),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
