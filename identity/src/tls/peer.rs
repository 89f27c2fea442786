//! Who the peer of a finished handshake is, and why a handshake or a peer
//! was refused, in words the proxy can log.

use std::io;
use std::time::{Duration, SystemTime};

use rustls::{CertificateError, CommonState};

use crate::creds::{svid_leaf, SvidError};
use crate::spiffe::SpiffeId;

/// Why a peer was refused: during the handshake (by our verifier, or by the
/// peer refusing ours) or after it (secure naming).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer's certificate is not an X.509-SVID leaf: {0}")]
    Svid(SvidError),
    #[error(
        "the peer {id} is in trust domain {}, not one this proxy trusts ({})",
        id.trust_domain(),
        trusted.join(", ")
    )]
    ForeignTrustDomain { id: SpiffeId, trusted: Vec<String> },
    #[error("the peer's certificate expired{}", at_secs(" at unix time ", *not_after))]
    Expired { not_after: Option<u64> },
    #[error("the peer's certificate is not valid yet{}", at_secs(" until unix time ", *not_before))]
    NotYetValid { not_before: Option<u64> },
    /// Also when an issuer of the right name is in the bundle but its key
    /// did not sign the certificate (two CAs of the same name, or a forgery).
    #[error("the peer's certificate is signed by a CA not in the trust bundle")]
    UnknownCa,
    #[error("the peer's certificate is invalid: {0}")]
    Invalid(String),
    #[error("secure naming: the peer is {found}, the registry says {expected}")]
    Mismatch { expected: SpiffeId, found: SpiffeId },
    #[error("the peer refused our certificate or handshake (alert {0})")]
    RefusedByPeer(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

fn at_secs(prefix: &str, secs: Option<u64>) -> String {
    secs.map(|s| format!("{prefix}{s}")).unwrap_or_default()
}

impl PeerError {
    /// The reason behind a rustls error from a handshake (either side).
    pub fn from_rustls(err: &rustls::Error) -> Self {
        use CertificateError as C;
        match err {
            rustls::Error::NoCertificatesPresented => Self::NoCertificate,
            rustls::Error::AlertReceived(alert) => Self::RefusedByPeer(format!("{alert:?}")),
            rustls::Error::InvalidCertificate(cert) => match cert {
                C::Other(other) => match other.0.downcast_ref::<PeerError>() {
                    Some(ours) => ours.clone(),
                    None => Self::Invalid(other.to_string()),
                },
                C::Expired => Self::Expired { not_after: None },
                C::ExpiredContext { not_after, .. } => Self::Expired {
                    not_after: Some(not_after.as_secs()),
                },
                C::NotValidYet => Self::NotYetValid { not_before: None },
                C::NotValidYetContext { not_before, .. } => Self::NotYetValid {
                    not_before: Some(not_before.as_secs()),
                },
                C::UnknownIssuer | C::BadSignature => Self::UnknownCa,
                other => Self::Invalid(other.to_string()),
            },
            other => Self::Handshake(other.to_string()),
        }
    }

    /// The reason behind a handshake's I/O error, as tokio-rustls returns it
    /// (`None`: not a TLS error, e.g. the connection was reset).
    pub fn from_io(err: &io::Error) -> Option<Self> {
        err.get_ref()?
            .downcast_ref::<rustls::Error>()
            .map(Self::from_rustls)
    }
}

/// The verified identity of the peer of a finished handshake, read from its
/// leaf certificate. A resumed session carries the chain verified at its full
/// handshake; the leaf's validity is checked again now, so a session resumed
/// after the peer's certificate expired yields [`PeerError::Expired`].
pub fn peer(conn: &CommonState) -> Result<SpiffeId, PeerError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(PeerError::NoCertificate)?;
    let info = svid_leaf(leaf).map_err(PeerError::Svid)?;
    let now = SystemTime::now();
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    };
    if now < info.not_before {
        return Err(PeerError::NotYetValid {
            not_before: Some(secs(info.not_before)),
        });
    }
    if now >= info.not_after {
        return Err(PeerError::Expired {
            not_after: Some(secs(info.not_after)),
        });
    }
    Ok(info.id)
}

/// The peer's SPIFFE ID, if it presented a valid one (see [`peer`]).
pub fn peer_id(conn: &CommonState) -> Option<SpiffeId> {
    peer(conn).ok()
}

/// Secure naming: the peer must be exactly `expected`, the identity the
/// registry names for the endpoint dialled. Called by the outbound side
/// after the handshake; returns the peer's identity.
pub fn check_peer(conn: &CommonState, expected: &SpiffeId) -> Result<SpiffeId, PeerError> {
    let found = peer(conn)?;
    if &found != expected {
        return Err(PeerError::Mismatch {
            expected: expected.clone(),
            found,
        });
    }
    Ok(found)
}
