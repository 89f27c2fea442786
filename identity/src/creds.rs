//! The proxy's credentials at one moment: its certificate chain and key
//! (an X.509-SVID), the identity the certificate proves, and the trust
//! bundle peers are verified against.

use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::spiffe::SpiffeId;

/// Why a certificate, key or bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{what}: no PEM block of the expected kind")]
    Empty { what: &'static str },
    #[error("{what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("certificate: cannot parse X.509: {0}")]
    X509(String),
    #[error("certificate: {0}")]
    NotSvid(String),
}

/// A certificate chain and key proving one SPIFFE ID, and the roots its
/// peers must chain to.
#[derive(Debug)]
pub struct Credentials {
    /// The identity the leaf certificate's one URI SAN names.
    pub id: SpiffeId,
    /// Leaf first, then any intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The roots peers are verified against; during a root rotation both
    /// the old and the new root.
    pub bundle: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Credentials {
    /// Credentials from PEM text: the chain (leaf first), the key (PKCS#8,
    /// SEC1 or PKCS#1) and the bundle (one or more roots). The identity and
    /// validity are read from the leaf, which must carry exactly one
    /// `spiffe://` URI SAN.
    pub fn from_pem(chain: &[u8], key: &[u8], bundle: &[u8]) -> Result<Self, CredentialsError> {
        let chain = certs(chain, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CredentialsError::Pem {
            what: "private key",
            detail: e.to_string(),
        })?;
        let bundle = certs(bundle, "trust bundle")?;
        Self::new(chain, key, bundle)
    }

    /// Credentials from DER values; see [`Credentials::from_pem`].
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CredentialsError> {
        let leaf = chain.first().ok_or(CredentialsError::Empty {
            what: "certificate chain",
        })?;
        if bundle.is_empty() {
            return Err(CredentialsError::Empty {
                what: "trust bundle",
            });
        }
        let info = leaf_info(leaf)?;
        Ok(Self {
            id: info.id,
            chain,
            key,
            bundle,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// How long the leaf certificate is valid for in all.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether the leaf certificate has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// What anymesh reads off a leaf certificate.
pub(crate) struct LeafInfo {
    pub id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads the SPIFFE ID (the one URI SAN) and validity of a leaf certificate.
pub(crate) fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, CredentialsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CredentialsError::X509(e.to_string()))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(CredentialsError::X509(e.to_string())),
    };
    let uri = match uris.as_slice() {
        [one] => *one,
        [] => {
            return Err(CredentialsError::NotSvid(
                "no URI SAN: an X.509-SVID names its SPIFFE ID in exactly one".into(),
            ))
        }
        _ => {
            return Err(CredentialsError::NotSvid(format!(
                "{} URI SANs: an X.509-SVID has exactly one",
                uris.len()
            )))
        }
    };
    let id = SpiffeId::parse(uri).map_err(|e| CredentialsError::NotSvid(e.to_string()))?;
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    };
    Ok(LeafInfo {
        id,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialsError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CredentialsError::Empty { what });
    }
    Ok(certs)
}
