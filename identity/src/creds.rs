//! The proxy's credentials at one moment: its certificate chain and key
//! (an X.509-SVID), the identity the certificate proves, and the trust
//! bundle peers are verified against.

use std::time::{Duration, SystemTime};

use rustls::crypto::ring::default_provider;
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why a certificate, key or bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{what}: no PEM block of the expected kind")]
    Empty { what: &'static str },
    #[error("{what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("certificate: cannot parse X.509: {0}")]
    X509(String),
    #[error("certificate: not an X.509-SVID leaf: {0}")]
    NotSvid(#[from] SvidError),
    #[error("private key: {0}")]
    Key(String),
    #[error("private key: does not match the public key of the leaf certificate")]
    KeyMismatch,
}

/// Which of the three inputs (chain, key, bundle) an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Chain,
    Key,
    Bundle,
}

impl CredentialsError {
    /// The input the error is about, so a file source can name its path.
    pub(crate) fn part(&self) -> Part {
        match self {
            Self::Empty { what } | Self::Pem { what, .. } => match *what {
                "private key" => Part::Key,
                "trust bundle" => Part::Bundle,
                _ => Part::Chain,
            },
            Self::X509(_) | Self::NotSvid(_) => Part::Chain,
            Self::Key(_) | Self::KeyMismatch => Part::Key,
        }
    }
}

/// Why a certificate is not a usable X.509-SVID leaf (the SPIFFE X.509-SVID
/// specification, sections 3.1, 4.1, 4.3 and 5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("cannot parse the certificate: {0}")]
    Malformed(String),
    #[error("no URI SAN (an X.509-SVID names its SPIFFE ID in exactly one)")]
    NoUriSan,
    #[error("{0} URI SANs (an X.509-SVID has exactly one)")]
    SeveralUriSans(usize),
    #[error("the URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffeId(SpiffeIdError),
    #[error("{0} names a trust domain, not a workload (a leaf's SPIFFE ID has a path)")]
    NoPath(SpiffeId),
    #[error("a CA certificate (basic constraints cA) used as a leaf")]
    CaCertificate,
    #[error("key usage: {0}")]
    KeyUsage(&'static str),
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

    /// Credentials from DER values; see [`Credentials::from_pem`]. The leaf
    /// must be an end-entity X.509-SVID ([`SvidError`] says why not) and the
    /// key must be the private half of its public key. An expired leaf is
    /// accepted here: a restarted proxy may hold one, and
    /// [`crate::Identity::valid_at`] says so.
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
        check_key(&chain, &key)?;
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

/// Reads the SPIFFE ID (the one URI SAN) and validity of a leaf certificate,
/// after checking it is an end-entity X.509-SVID (see [`svid_leaf`]).
pub(crate) fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, CredentialsError> {
    svid_leaf(der).map_err(|e| match e {
        SvidError::Malformed(m) => CredentialsError::X509(m),
        other => CredentialsError::NotSvid(other),
    })
}

/// Checks that `der` is an end-entity X.509-SVID, as a validator must
/// (X.509-SVID §5.2) and as an issuer must make it (§4.3): exactly one URI
/// SAN, a SPIFFE ID with a path; basic constraints not cA; key usage present
/// with digitalSignature and without keyCertSign or cRLSign (criticality is
/// not checked: it changes nothing for a verifier). Says nothing about the
/// signature or the validity period: that is path validation's job.
pub(crate) fn svid_leaf(der: &[u8]) -> Result<LeafInfo, SvidError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    let id = svid_id(&cert)?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => return Err(SvidError::CaCertificate),
        Ok(_) => {}
        Err(e) => return Err(SvidError::Malformed(e.to_string())),
    }
    match cert.key_usage() {
        Ok(Some(ku)) => {
            let ku = ku.value;
            if ku.key_cert_sign() {
                return Err(SvidError::KeyUsage("keyCertSign set on a leaf"));
            }
            if ku.crl_sign() {
                return Err(SvidError::KeyUsage("cRLSign set on a leaf"));
            }
            if !ku.digital_signature() {
                return Err(SvidError::KeyUsage("digitalSignature missing"));
            }
        }
        Ok(None) => return Err(SvidError::KeyUsage("the key usage extension is missing")),
        Err(e) => return Err(SvidError::Malformed(e.to_string())),
    }
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

/// The SPIFFE ID of a leaf: its one URI SAN, with a non-empty path.
fn svid_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
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
        Err(e) => return Err(SvidError::Malformed(e.to_string())),
    };
    let uri = match uris.as_slice() {
        [one] => *one,
        [] => return Err(SvidError::NoUriSan),
        _ => return Err(SvidError::SeveralUriSans(uris.len())),
    };
    let id = SpiffeId::parse(uri).map_err(SvidError::NotSpiffeId)?;
    if id.path().is_empty() {
        return Err(SvidError::NoPath(id));
    }
    Ok(id)
}

/// Checks that `key` is the private half of the leaf's public key (the
/// SubjectPublicKeyInfo each gives, compared byte for byte).
pub(crate) fn check_key(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), CredentialsError> {
    match CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &default_provider()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CredentialsError::KeyMismatch)
        }
        Err(e) => Err(CredentialsError::Key(e.to_string())),
    }
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
