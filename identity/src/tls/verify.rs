//! The two certificate verifiers: standard X.509 path validation against
//! the trust bundle (webpki, through rustls), plus the SPIFFE X.509-SVID
//! leaf rules and the trust domain check. No hostname verification: the
//! SNI a caller sends carries routing, not identity; the identity is
//! compared after the handshake ([`super::check_peer`]).
//!
//! Each verifier remembers the chains it verified (exact DER, until a
//! certificate of the chain expires, an hour at most): mesh peers
//! reconnect with the same certificate all day, and path validation is one
//! ECDSA verification, about a third of a full mutual handshake's CPU on the
//! server. The handshake signature (proof that the peer holds the key) is
//! verified every time. A verifier lives as long as its trust bundle: a new
//! bundle means new configs and an empty memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PeerError;
use crate::creds::svid_leaf;

/// The trust domains whose workloads a verifier accepts.
pub(crate) type TrustDomains = Arc<[String]>;

/// The SPIFFE checks on a peer's leaf, before path validation (so that a
/// workload of another trust domain, which usually also has another CA, is
/// reported as such rather than as "unknown CA"). Returns when the leaf
/// stops being valid.
fn check_leaf(
    leaf: &CertificateDer<'_>,
    trusted: &TrustDomains,
) -> Result<(SystemTime, SystemTime), rustls::Error> {
    let refuse = |e: PeerError| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    };
    let info = svid_leaf(leaf).map_err(|e| refuse(PeerError::Svid(e)))?;
    if !trusted.iter().any(|td| td == info.id.trust_domain()) {
        return Err(refuse(PeerError::ForeignTrustDomain {
            id: info.id,
            trusted: trusted.to_vec(),
        }));
    }
    Ok((info.not_before, info.not_after))
}

/// The chains a verifier verified, by their exact bytes.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    chains: Mutex<HashMap<Vec<u8>, (u64, u64)>>,
}

/// How many chains a verifier remembers (a few per peer workload).
const VERIFIED_CHAINS: usize = 4096;
/// How long a verified chain is remembered at most.
const VERIFIED_FOR: Duration = Duration::from_secs(3600);

impl Verified {
    fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<u8> {
        let len = end_entity.len() + intermediates.iter().map(|c| c.len() + 4).sum::<usize>() + 4;
        let mut key = Vec::with_capacity(len);
        for cert in std::iter::once(end_entity).chain(intermediates) {
            key.extend_from_slice(&u32::try_from(cert.len()).unwrap_or(u32::MAX).to_be_bytes());
            key.extend_from_slice(cert);
        }
        key
    }

    fn contains(&self, key: &[u8], now: UnixTime) -> bool {
        let now = now.as_secs();
        self.chains
            .lock()
            .get(key)
            .is_some_and(|&(from, until)| from <= now && now < until)
    }

    /// Remembers a chain verified at `now`, valid in `[from, until)` as far
    /// as its leaf goes (the intermediates' validity is read here).
    fn insert(
        &self,
        key: Vec<u8>,
        intermediates: &[CertificateDer<'_>],
        (from, until): (SystemTime, SystemTime),
        now: UnixTime,
    ) {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs()
        };
        let (mut from, mut until) = (secs(from), secs(until));
        until = until.min(now.as_secs().saturating_add(VERIFIED_FOR.as_secs()));
        for cert in intermediates {
            let Ok((_, cert)) = X509Certificate::from_der(cert) else {
                return;
            };
            let validity = cert.validity();
            let (nb, na) = (
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            );
            from = from.max(u64::try_from(nb).unwrap_or(u64::MAX));
            until = until.min(u64::try_from(na).unwrap_or(0));
        }
        let mut chains = self.chains.lock();
        if chains.len() >= VERIFIED_CHAINS {
            let now = now.as_secs();
            chains.retain(|_, &mut (_, until)| now < until);
            if chains.len() >= VERIFIED_CHAINS {
                chains.clear();
            }
        }
        chains.insert(key, (from, until));
    }
}

/// Verifies a server's certificate (the client side of mesh mTLS).
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    trusted: TrustDomains,
    algs: WebPkiSupportedAlgorithms,
    verified: Verified,
}

impl SpiffeServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        trusted: TrustDomains,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            roots,
            trusted,
            algs,
            verified: Verified::default(),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = Verified::key(end_entity, intermediates);
        if self.verified.contains(&key, now) {
            return Ok(ServerCertVerified::assertion());
        }
        let validity = check_leaf(end_entity, &self.trusted)?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        self.verified.insert(key, intermediates, validity, now);
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Verifies a client's certificate (the server side of mesh mTLS): rustls's
/// webpki client verifier (client certificate mandatory) with the SPIFFE
/// checks in front.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trusted: TrustDomains,
    verified: Verified,
}

impl SpiffeClientVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>, trusted: TrustDomains) -> Self {
        Self {
            inner,
            trusted,
            verified: Verified::default(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = Verified::key(end_entity, intermediates);
        if self.verified.contains(&key, now) {
            return Ok(ClientCertVerified::assertion());
        }
        let validity = check_leaf(end_entity, &self.trusted)?;
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.verified.insert(key, intermediates, validity, now);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_chain_is_remembered_only_inside_its_validity_and_an_hour() {
        let verified = Verified::default();
        let leaf = CertificateDer::from(vec![1, 2, 3]);
        let other = CertificateDer::from(vec![1, 2, 4]);
        let at = |s: u64| UnixTime::since_unix_epoch(Duration::from_secs(s));
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let key = Verified::key(&leaf, &[]);
        verified.insert(key.clone(), &[], (t(1_000), t(100_000)), at(2_000));
        assert!(verified.contains(&key, at(2_000)));
        assert!(verified.contains(&key, at(2_000 + 3_599)));
        assert!(
            !verified.contains(&key, at(2_000 + 3_600)),
            "an hour at most"
        );
        assert!(!verified.contains(&key, at(999)), "not valid yet");
        assert!(!verified.contains(&Verified::key(&other, &[]), at(2_000)));
        // The same bytes split differently are another chain.
        let split = Verified::key(
            &CertificateDer::from(vec![1]),
            &[CertificateDer::from(vec![2, 3])],
        );
        assert!(!verified.contains(&split, at(2_000)));

        verified.insert(key.clone(), &[], (t(1_000), t(2_500)), at(2_000));
        assert!(verified.contains(&key, at(2_499)));
        assert!(!verified.contains(&key, at(2_500)), "expired with the leaf");
    }
}
