//! From a Workload API response to the proxy's [`Credentials`]: the SVID
//! chosen, its chain split into certificates, its PKCS#8 key, and the
//! bundle of its own trust domain.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::X509Context;

use super::Selector;
use crate::creds::{Credentials, CredentialsError};

/// Why the SVID of a Workload API response is not put in force.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// The response is malformed (a required field empty, a chain or key
    /// that does not parse, a leaf that is no X.509-SVID).
    #[error("malformed response: {0}")]
    Response(#[source] spiffe::WorkloadApiError),
    /// No SVID of the response is the configured one.
    #[error("none of the {count} SVIDs in the response has {wanted}")]
    NotFound { wanted: String, count: usize },
    /// The response carries no bundle for the SVID's trust domain.
    #[error("no trust bundle for the SVID's trust domain {0}")]
    NoBundle(String),
    /// The chain or bundle is not usable as anymesh credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate: {0}")]
    KeyMismatch(String),
    /// The certificate's validity already ended.
    #[error("the certificate expired ({not_after_unix} s after the epoch)")]
    Expired { not_after_unix: u64 },
}

/// The credentials the selected SVID of `context` gives.
pub(super) fn credentials(
    context: &X509Context,
    select: &Selector,
) -> Result<Credentials, SvidError> {
    let svids = context.svids();
    let chosen = svids.iter().find(|s| {
        select
            .id
            .as_ref()
            .is_none_or(|id| s.spiffe_id().to_string() == id.as_str())
            && select
                .hint
                .as_deref()
                .is_none_or(|hint| s.hint() == Some(hint))
    });
    let Some(svid) = chosen else {
        let mut wanted = Vec::new();
        if let Some(id) = &select.id {
            wanted.push(format!("SPIFFE ID {id}"));
        }
        if let Some(hint) = &select.hint {
            wanted.push(format!("hint {hint:?}"));
        }
        if wanted.is_empty() {
            wanted.push("a SPIFFE ID".into());
        }
        return Err(SvidError::NotFound {
            wanted: wanted.join(" and "),
            count: svids.len(),
        });
    };
    let trust_domain = svid.spiffe_id().trust_domain();
    let bundle = context
        .bundle_set()
        .get(trust_domain)
        .ok_or_else(|| SvidError::NoBundle(trust_domain.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let roots = bundle
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| SvidError::KeyMismatch(e.to_string()))?;
    let creds = Credentials::new(chain, key, roots)?;
    if creds.expired_at(SystemTime::now()) {
        let not_after_unix = creds
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return Err(SvidError::Expired { not_after_unix });
    }
    Ok(creds)
}
