//! The proxy doing the explaining: the trust domain the identities of mesh
//! proxies are named in, its own identity, where its certificate comes from
//! and, when known, whether that certificate is valid now.

use std::time::SystemTime;

use serde::Serialize;

use super::live::unix_secs;

/// What the transports of an explanation depend on in the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalProxy {
    /// anymesh.yaml `mesh.trust_domain`.
    pub trust_domain: String,
    /// Its own SPIFFE ID (the first of anymesh.yaml `workloads`), when it
    /// fronts workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Where its certificate comes from (anymesh.yaml `identity`); `None`:
    /// no source is configured, so it cannot speak mesh mTLS.
    pub certificate_source: Option<String>,
    pub certificate: Certificate,
}

impl LocalProxy {
    /// A proxy in `trust_domain` with no identity source.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            identity: None,
            certificate_source: None,
            certificate: Certificate::Unknown,
        }
    }
}

impl Default for LocalProxy {
    fn default() -> Self {
        Self::new(crate::security::CLUSTER_LOCAL)
    }
}

/// The certificate the proxy holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Certificate {
    /// Not known here (offline, a source only the running proxy reads).
    Unknown,
    /// No identity source is configured.
    NotConfigured,
    /// Configured, but no certificate is held (yet).
    Missing {
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    Held {
        /// The SPIFFE ID its URI SAN names.
        identity: String,
        #[serde(with = "unix_secs")]
        not_before: SystemTime,
        #[serde(with = "unix_secs")]
        not_after: SystemTime,
        /// Valid at the time of the explanation.
        valid_now: bool,
        /// The last error the source met (a failed renewal), if any since.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    /// The source could not be read (offline: the files).
    Unreadable { error: String },
}
