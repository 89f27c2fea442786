//! Workload identities for anymesh: SPIFFE IDs ([`SpiffeId`]), the proxy's
//! certificate and trust bundle at one moment ([`Credentials`]), and the live
//! handle every listener and upstream connection reads them from
//! ([`Identity`]), whichever source issues them.
//!
//! Rotation swaps the credentials in the handle: connections already open
//! keep the session they made; new ones use the new certificate.
//!
//! Mutual TLS between proxies ([`tls`]): the inbound listener accepts with
//! `identity.tls()?.server` and reads the caller with [`tls::peer`]; an
//! upstream connection connects with `identity.tls()?.client(h2)` and checks
//! the peer with [`tls::check_peer`]. Sources: the built-in CA ([`ca`]), the
//! SPIFFE Workload API ([`workload_api`]) and files ([`files`]).

pub mod ca;
mod creds;
pub mod files;
mod live;
mod spiffe;
pub mod tls;
pub mod workload_api;

pub use creds::{Credentials, CredentialsError, SvidError};
pub use live::Identity;
pub use spiffe::{SpiffeId, SpiffeIdError};

/// The trust domain when anymesh.yaml names none (Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
