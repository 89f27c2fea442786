//! [`MarathonError`]: why reading Marathon failed.

use std::path::PathBuf;

/// One failed operation. Every one is reported to the catalog and retried
/// after a backoff; none ends the registry.
#[derive(Debug, thiserror::Error)]
pub enum MarathonError {
    /// The configuration is unusable.
    #[error("invalid marathon registry config: {message}")]
    Config { message: String },
    /// The token file could not be read.
    #[error("reading the marathon token file {}: {source}", .path.display())]
    ReadToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token's environment variable is not set (or not UTF-8).
    #[error("environment variable {name} (the marathon token) is not set")]
    TokenEnv { name: String },
    /// Building the HTTP client failed.
    #[error("building the marathon HTTP client failed: {0}")]
    Client(#[source] reqwest::Error),
    /// The request could not be sent or its answer not read.
    #[error("GET {url} failed: {}", chain(.source))]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// No answer (or, for the event stream, no byte) in time.
    #[error("GET {url}: no answer within {secs:.1}s")]
    Timeout { url: String, secs: f64 },
    /// The server answered 401 or 403.
    #[error("GET {url}: Marathon rejected {} (HTTP {status}); check `auth` in the registry settings", if *.sent_token { "the token" } else { "the request: it requires a token" })]
    Unauthorized {
        url: String,
        status: u16,
        sent_token: bool,
    },
    /// Another unexpected status.
    #[error("GET {url} answered HTTP {status}{}", body_suffix(.body))]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The body is not an app list.
    #[error("GET {url}: {message}")]
    Decode { url: String, message: String },
    /// The event stream ended or broke.
    #[error("the event stream from {url} {message}")]
    StreamLost { url: String, message: String },
    /// Every configured URL failed; each failure in URL order.
    #[error("every marathon URL failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<MarathonError>),
}

fn body_suffix(body: &str) -> String {
    match body.trim() {
        "" => String::new(),
        b => format!(": {}", b.chars().take(200).collect::<String>()),
    }
}

/// The error with its causes (reqwest keeps "connection refused" in its sources).
pub(crate) fn chain(e: &reqwest::Error) -> String {
    anymesh_support::error_chain(e)
}
