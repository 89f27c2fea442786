//! The two certificate verifiers: standard X.509 path validation against
//! the trust bundle (webpki, through rustls), plus the SPIFFE X.509-SVID
//! leaf rules and the trust domain check. No hostname verification: the
//! SNI a caller sends carries routing, not identity; the identity is
//! compared after the handshake ([`super::check_peer`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::PeerError;
use crate::creds::svid_leaf;

/// The trust domains whose workloads a verifier accepts.
pub(crate) type TrustDomains = Arc<[String]>;

/// The SPIFFE checks on a peer's leaf, before path validation (so that a
/// workload of another trust domain, which usually also has another CA, is
/// reported as such rather than as "unknown CA").
fn check_leaf(leaf: &CertificateDer<'_>, trusted: &TrustDomains) -> Result<(), rustls::Error> {
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
    Ok(())
}

/// Verifies a server's certificate (the client side of mesh mTLS).
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    trusted: TrustDomains,
    algs: WebPkiSupportedAlgorithms,
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
        check_leaf(end_entity, &self.trusted)?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
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
}

impl SpiffeClientVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>, trusted: TrustDomains) -> Self {
        Self { inner, trusted }
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
        check_leaf(end_entity, &self.trusted)?;
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
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
