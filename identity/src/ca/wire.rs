//! The JSON bodies of the CA's HTTPS API (see the module docs of `ca`).

use serde::{Deserialize, Serialize};

/// `POST /v1/join`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub token: String,
    pub csr: String,
}

/// `POST /v1/renew`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RenewRequest {
    pub csr: String,
}

/// The answer to a join or a renewal.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Issued {
    /// The leaf, then any intermediates (PEM).
    pub chain: String,
    /// The roots to trust (PEM).
    pub bundle: String,
}

/// `GET /v1/bundle`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bundle {
    pub bundle: String,
}

/// Any refusal.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub error: String,
}
