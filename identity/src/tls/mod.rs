//! Mutual TLS between proxies: rustls configs built from [`crate::Credentials`],
//! SPIFFE peer verification and the peer identity of a finished handshake.
//!
//! Both sides present their X.509-SVID and require the peer's. A peer's
//! chain is validated against the trust bundle (standard X.509 path
//! validation, webpki through rustls) and its leaf against the SPIFFE
//! X.509-SVID rules: exactly one URI SAN, a SPIFFE ID with a path, in a
//! trusted trust domain (by default the proxy's own), not a CA, key usage
//! digitalSignature without keyCertSign or cRLSign. There is no hostname
//! verification: the SNI a caller sets carries routing information; after
//! the handshake the caller compares the peer's identity with the one the
//! registry names ([`check_peer`], secure naming).
//!
//! Root rotation: the bundle is a set of roots and a peer chaining to any
//! of them is accepted, so an operator adds the new root to every proxy's
//! bundle, then issues leaves under it, and retires the old root only when
//! no leaf under it is left.
//!
//! Mesh mTLS is TLS 1.3 only (both ends are anymesh proxies), and the configs
//! allow secret extraction: the proxy hands the record layer over from
//! rustls once the handshake is made.
//!
//! Session resumption is on at both ends (pooled mesh connections
//! reconnect): the server issues TLS 1.3 tickets; the client keeps an in-memory store shared by its HTTP/1.1
//! and HTTP/2 configs. A resumed session carries the peer chain verified at
//! its full handshake; [`peer()`] checks the leaf's validity again.
//!
//! Refusals carry a [`PeerError`] naming the reason; a handshake error from
//! tokio-rustls maps to it with [`PeerError::from_io`].

mod peer;
mod verify;

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::ring::{default_provider, Ticketer};
use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::version::TLS13;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use peer::{check_peer, peer, peer_id, PeerError};

use crate::creds::Credentials;
use verify::{SpiffeClientVerifier, SpiffeServerVerifier, TrustDomains};

/// The ALPN protocol of mesh mTLS carrying HTTP/2 (and gRPC).
pub const ALPN_H2: &[u8] = b"anymesh-h2";
/// The ALPN protocol of mesh mTLS carrying HTTP/1.1.
pub const ALPN_H1: &[u8] = b"anymesh-http/1.1";

/// The TLS server name a mesh peer sends for the endpoint port `port` of
/// the workloads behind the proxy it connects to.
pub fn server_name_for_port(port: u16) -> String {
    format!("inbound-{port}.anymesh")
}

/// How many TLS sessions a client config remembers for resumption (one or
/// two per peer it talks to).
const CLIENT_SESSIONS: usize = 4096;

/// Why TLS configs cannot be built from credentials.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("trust bundle: certificate {index} is not a usable root: {reason}")]
    Bundle { index: usize, reason: String },
    #[error("trust bundle: {0}")]
    Verifier(String),
    #[error("certificate and key: {0}")]
    Certificate(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What peers the configs accept, beyond the credentials themselves.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The trust domains whose workloads are accepted as peers; empty
    /// means the trust domain of the proxy's own SPIFFE ID only.
    pub trust_domains: Vec<String>,
}

/// The TLS configs of one set of credentials, built once per rotation and
/// read by every new connection (one atomic load from
/// [`crate::Identity::tls`]).
#[derive(Debug)]
pub struct TlsConfigs {
    /// The credentials the configs present.
    pub creds: Arc<Credentials>,
    /// For the inbound listener: ALPN `anymesh-h2`, `anymesh-http/1.1`.
    pub server: Arc<ServerConfig>,
    /// For upstream connections speaking HTTP/1.1 (ALPN `anymesh-http/1.1`).
    pub client_h1: Arc<ClientConfig>,
    /// For upstream connections speaking HTTP/2 (ALPN `anymesh-h2`).
    pub client_h2: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// Builds the server and both client configs.
    pub fn build(creds: Arc<Credentials>, options: &TlsOptions) -> Result<Self, TlsError> {
        Self::build_with(creds, options, Ticketer::new()?)
    }

    /// As [`TlsConfigs::build`], with the server's ticket keys given, so that
    /// tickets issued before a rotation still resume after it.
    pub(crate) fn build_with(
        creds: Arc<Credentials>,
        options: &TlsOptions,
        ticketer: Arc<dyn ProducesTickets>,
    ) -> Result<Self, TlsError> {
        let parts = Parts::new(&creds, options)?;
        let server = parts.server(&creds, ticketer)?;
        let client_h1 = parts.client(&creds, &[ALPN_H1])?;
        let mut client_h2 = client_h1.clone();
        client_h2.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            creds,
            server: Arc::new(server),
            client_h1: Arc::new(client_h1),
            client_h2: Arc::new(client_h2),
        })
    }

    /// The client config for an ALPN protocol ([`ALPN_H2`] or [`ALPN_H1`]).
    pub fn client(&self, h2: bool) -> &Arc<ClientConfig> {
        if h2 {
            &self.client_h2
        } else {
            &self.client_h1
        }
    }
}

/// The server config of mesh mTLS for `creds`: presents the SVID chain,
/// requires a client certificate (verified as the module doc says), ALPN
/// `anymesh-h2` and `anymesh-http/1.1`, TLS 1.3, session tickets.
pub fn server_config(creds: &Credentials) -> Result<Arc<ServerConfig>, TlsError> {
    let parts = Parts::new(creds, &TlsOptions::default())?;
    Ok(Arc::new(parts.server(creds, Ticketer::new()?)?))
}

/// A client config of mesh mTLS for `creds`: presents the SVID as client
/// certificate, verifies the server against the bundle without hostname
/// verification, offers `alpn`, resumes sessions.
pub fn client_config(creds: &Credentials, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let parts = Parts::new(creds, &TlsOptions::default())?;
    Ok(Arc::new(parts.client(creds, alpn)?))
}

/// What the server and client configs of one set of credentials share.
struct Parts {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    trusted: TrustDomains,
}

impl Parts {
    fn new(creds: &Credentials, options: &TlsOptions) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for (index, root) in creds.bundle.iter().enumerate() {
            roots.add(root.clone()).map_err(|e| TlsError::Bundle {
                index,
                reason: e.to_string(),
            })?;
        }
        let trusted: TrustDomains = if options.trust_domains.is_empty() {
            Arc::from(vec![creds.id.trust_domain().to_string()])
        } else {
            Arc::from(options.trust_domains.clone())
        };
        Ok(Self {
            provider: mesh_provider(),
            roots: Arc::new(roots),
            trusted,
        })
    }

    fn server(
        &self,
        creds: &Credentials,
        ticketer: Arc<dyn ProducesTickets>,
    ) -> Result<ServerConfig, TlsError> {
        let webpki =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let verifier = Arc::new(SpiffeClientVerifier::new(webpki, self.trusted.clone()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(creds.chain.clone(), creds.key.clone_key())
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_H1.to_vec()];
        config.ticketer = ticketer;
        // The proxy seals and opens records itself once rustls has made
        // the handshake (anymesh-proxy's stream/mesh.rs).
        config.enable_secret_extraction = true;
        Ok(config)
    }

    fn client(&self, creds: &Credentials, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
        let verifier = Arc::new(SpiffeServerVerifier::new(
            self.roots.clone(),
            self.trusted.clone(),
            self.provider.signature_verification_algorithms,
        ));
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::in_memory_sessions(CLIENT_SESSIONS);
        config.enable_secret_extraction = true;
        Ok(config)
    }
}

/// ring's provider with AES-128-GCM preferred: ring lists AES-256-GCM first,
/// but with AES-NI the 128-bit key's 10 rounds cost less than 14 per record
/// (as BoringSSL prefers), and its SHA-256 key schedule less than SHA-384 in
/// every handshake. Every suite stays offered.
fn mesh_provider() -> Arc<CryptoProvider> {
    let mut provider = default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| u8::from(s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    Arc::new(provider)
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    #[test]
    fn mesh_connections_prefer_aes_128_gcm_and_keep_every_suite() {
        let ours = mesh_provider();
        assert_eq!(
            ours.cipher_suites.first().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert_eq!(
            ours.cipher_suites.len(),
            default_provider().cipher_suites.len()
        );
    }
}
