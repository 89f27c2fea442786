//! [`ConsulError`]: why reading Consul failed.

use std::path::PathBuf;

/// One failed operation. Every one is reported to the catalog and followed
/// by a resync after a backoff; none ends the registry.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The configuration is unusable.
    #[error("invalid consul registry config: {message}")]
    Config { message: String },
    /// A TLS or token file could not be read, or is not usable.
    #[error("reading {what} {}: {message}", .path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The token's environment variable is not set (or not UTF-8).
    #[error("environment variable {name} (the consul ACL token) is not set")]
    TokenEnv { name: String },
    /// The request could not be sent or its answer not read.
    #[error("{what} at {url}: request failed: {source}")]
    Request {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error status.
    #[error("{what} at {url}: consul answered {status}: {body}")]
    Status {
        what: String,
        url: String,
        status: u16,
        body: String,
    },
    /// The answer is not the documented shape.
    #[error("{what} at {url}: unexpected answer: {message}")]
    Decode {
        what: String,
        url: String,
        message: String,
    },
}

impl ConsulError {
    /// The message with every cause, for the catalog's status.
    pub fn chain(&self) -> String {
        anymesh_support::error_chain(self)
    }
}
