//! [`EurekaError`]: why reading the Eureka servers failed.

use std::path::PathBuf;

/// One failed operation. Every one is reported to the catalog and retried
/// after a backoff; none ends the registry.
#[derive(Debug, thiserror::Error)]
pub enum EurekaError {
    /// The configuration is unusable.
    #[error("invalid eureka registry config: {message}")]
    Config { message: String },
    /// The password file could not be read.
    #[error("reading the eureka password file {}: {source}", .path.display())]
    ReadPassword {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The password's environment variable is not set (or not UTF-8).
    #[error("environment variable {name} (the eureka password) is not set")]
    PasswordEnv { name: String },
    /// Building the HTTP client failed.
    #[error("building the eureka HTTP client failed: {0}")]
    Client(#[source] reqwest::Error),
    /// The request could not be sent or its answer not read (refused,
    /// timed out, connection reset).
    #[error("GET {url} failed: {}", chain(.source))]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 401.
    #[error("GET {url}: the server rejected {} (401); check `auth` in the registry settings", if *.sent_credentials { "the credentials" } else { "the request: it requires authentication" })]
    Unauthorized { url: String, sent_credentials: bool },
    /// The server answered 403 to a full fetch.
    #[error("GET {url} answered HTTP 403: the server is not serving its registry yet, or the credentials lack access")]
    Forbidden { url: String },
    /// The server answered with another unexpected status.
    #[error("GET {url} answered HTTP {status}{}", body_suffix(.body))]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The body is not a registry document.
    #[error("GET {url}: {message}")]
    Decode { url: String, message: String },
    /// Every configured server failed; each failure in server order.
    #[error("every eureka server failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllServersFailed(Vec<EurekaError>),
}

fn body_suffix(body: &str) -> String {
    match body.trim() {
        "" => String::new(),
        b => format!(": {}", b.chars().take(200).collect::<String>()),
    }
}

/// The error with its causes (reqwest hides the interesting part, such as
/// "connection refused", in its sources).
fn chain(e: &reqwest::Error) -> String {
    anymesh_support::error_chain(e)
}
