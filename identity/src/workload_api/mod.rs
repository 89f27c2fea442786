//! Credentials from the SPIFFE Workload API (a SPIRE agent's Unix socket).
//!
//! The source calls `SpiffeWorkloadAPI/FetchX509SVID` (server-streaming,
//! with the `workload.spiffe.io: true` metadata the API requires) and
//! installs the SVID each response carries into the [`Identity`] handle:
//! the first SVID of the response, or the one with the configured SPIFFE ID
//! or hint. The client is the `spiffe` crate's (tonic 0.14 / prost 0.14,
//! messages generated ahead of time, so no `protoc`).
//!
//! ```text
//!             ┌──────────── stop ─────────────┐
//!             ▼                               │
//!   Connecting ──ok──▶ Streaming ──response──▶ install (or refuse: keep current)
//!       ▲   │              │
//!       │   └─err─┐        └─end / error─┐
//!       │         ▼                      ▼
//!       └──── Backoff (doubling, jittered; reset once a stream delivered)
//! ```
//!
//! The trust bundle installed is the SVID's own trust domain's. Federated
//! bundles are left out: peers are verified against one flat set of roots,
//! so a foreign trust domain's CA there could vouch for identities in ours.
//!
//! A response is refused (logged, the current credentials kept) when it is
//! malformed, its leaf is no X.509-SVID (the `spiffe` crate checks the
//! specification's rules), its key is not the certificate's, the chosen
//! SVID is missing, or its certificate has expired.
//!
//! Nothing the agent does removes credentials already in force: a lost
//! stream, an agent restart or a response the source refuses leaves the
//! current certificate serving until a good one arrives (or it expires).

#[cfg(feature = "fake-workload-api")]
pub mod fake;
mod svid;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use spiffe::transport::Endpoint;
use spiffe::WorkloadApiClient;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::creds::Credentials;
use crate::live::Identity;
use crate::spiffe::SpiffeId;

pub use svid::SvidError;

/// The environment variable naming the Workload API endpoint when
/// anymesh.yaml names none (SPIFFE Workload Endpoint specification).
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Why the Workload API gave no credentials.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadApiError {
    /// The configured socket (or `SPIFFE_ENDPOINT_SOCKET`) is unusable.
    #[error("workload api endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    /// Neither a socket in the configuration nor `SPIFFE_ENDPOINT_SOCKET`.
    #[error("workload api: no socket configured and {ENDPOINT_ENV} is not set")]
    NoEndpoint,
    /// The socket could not be reached.
    #[error("connecting to the workload api at {endpoint}: {source}")]
    ConnectFailed {
        endpoint: String,
        #[source]
        source: spiffe::WorkloadApiError,
    },
    /// `FetchX509SVID` was refused or its stream broke.
    #[error("FetchX509SVID at {endpoint}: {source}")]
    StreamFailed {
        endpoint: String,
        #[source]
        source: spiffe::WorkloadApiError,
    },
    /// The agent ended the stream (it does when it shuts down).
    #[error("FetchX509SVID at {endpoint}: the agent ended the stream")]
    StreamEnded { endpoint: String },
    /// The agent answered with an SVID the source refuses.
    #[error("X.509-SVID refused: {0}")]
    Refused(#[source] SvidError),
    /// The start timed out before any answer came.
    #[error("workload api at {endpoint}: no answer yet")]
    NothingYet { endpoint: String },
    /// No acceptable SVID arrived in time at start.
    #[error("no usable X.509-SVID from the workload api within {waited:?}: {last}")]
    Timeout {
        waited: Duration,
        #[source]
        last: Box<WorkloadApiError>,
    },
}

/// Which SVID of a response becomes the proxy's certificate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    /// The SVID with this SPIFFE ID.
    pub(crate) id: Option<SpiffeId>,
    /// The SVID with this hint (SPIRE's operator-set label).
    pub(crate) hint: Option<String>,
}

/// The proxy's certificate from the SPIFFE Workload API, followed as it
/// rotates. Build with [`WorkloadApiSource::new`], await
/// [`WorkloadApiSource::first`] at start, then spawn
/// [`WorkloadApiSource::run`].
#[derive(Debug, Clone)]
pub struct WorkloadApiSource {
    endpoint: Endpoint,
    /// The endpoint as configured, for logs and errors.
    shown: String,
    select: Selector,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl WorkloadApiSource {
    /// A source for `socket`: `unix:///path`, `unix:/path`, an absolute
    /// path, or `tcp://<ip>:<port>`; `None` reads `SPIFFE_ENDPOINT_SOCKET`.
    /// The endpoint is checked here, so a bad one fails the start.
    pub fn new(socket: Option<&str>) -> Result<Self, WorkloadApiError> {
        let raw = match socket {
            Some(s) => s.to_string(),
            None => std::env::var(ENDPOINT_ENV).map_err(|e| match e {
                std::env::VarError::NotPresent => WorkloadApiError::NoEndpoint,
                std::env::VarError::NotUnicode(v) => WorkloadApiError::BadEndpoint {
                    endpoint: v.to_string_lossy().into_owned(),
                    reason: format!("{ENDPOINT_ENV} is not UTF-8"),
                },
            })?,
        };
        let bad = |reason: String| WorkloadApiError::BadEndpoint {
            endpoint: raw.clone(),
            reason,
        };
        let uri = if raw.starts_with('/') {
            format!("unix://{raw}")
        } else if raw.contains(':') {
            raw.clone()
        } else {
            return Err(bad(
                "a Unix socket path must be absolute (or write unix:///path)".into(),
            ));
        };
        let endpoint = Endpoint::parse(&uri).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            endpoint,
            shown: raw,
            select: Selector::default(),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        })
    }

    /// Takes the SVID with this SPIFFE ID instead of the response's first.
    pub fn with_spiffe_id(mut self, id: SpiffeId) -> Self {
        self.select.id = Some(id);
        self
    }

    /// Takes the SVID with this hint instead of the response's first.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.select.hint = Some(hint.into());
        self
    }

    /// The reconnection delays: `initial`, doubling up to `max` (each
    /// jittered by ±20 %). Defaults: 1 s and 30 s.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Waits up to `timeout` for the first usable SVID (connecting again
    /// with backoff while the agent is not there yet), installs it and
    /// returns it. The proxy awaits this before it serves mesh traffic.
    pub async fn first(
        &self,
        identity: &Identity,
        timeout: Duration,
    ) -> Result<Arc<Credentials>, WorkloadApiError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        let mut last = None;
        let mut refused = None;
        loop {
            let attempt = self.follow(identity, true, &mut refused);
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(StreamEnd::First(creds)) => return Ok(creds),
                Ok(StreamEnd::Closed { error, .. }) => {
                    tracing::warn!(error = %error, "workload api: no SVID yet, trying again");
                    last = Some(error);
                }
                Err(_) => break,
            }
            let pause = tokio::time::timeout_at(deadline, tokio::time::sleep(backoff.next()));
            if pause.await.is_err() {
                break;
            }
        }
        Err(WorkloadApiError::Timeout {
            waited: timeout,
            last: Box::new(match (refused, last) {
                (Some(svid), _) => WorkloadApiError::Refused(svid),
                (None, Some(error)) => error,
                (None, None) => WorkloadApiError::NothingYet {
                    endpoint: self.shown.clone(),
                },
            }),
        })
    }

    /// Follows the agent until `stop` turns true (or its sender is gone):
    /// every new SVID is installed into `identity`; a lost stream is opened
    /// again with backoff, keeping the credentials in force.
    pub async fn run(self, identity: Arc<Identity>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        tracing::info!(endpoint = %self.shown, "workload api: following X.509-SVIDs");
        let mut refused = None;
        loop {
            let end = tokio::select! {
                end = self.follow(&identity, false, &mut refused) => end,
                _ = stop.wait_for(|s| *s) => return,
            };
            let StreamEnd::Closed { delivered, error } = end else {
                // Only `first_only` streams end with `First`.
                continue;
            };
            if delivered {
                backoff.reset();
            }
            let delay = backoff.next();
            tracing::warn!(
                error = %error,
                retry_in = ?delay,
                "workload api: stream lost, keeping the current certificate"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One connection: installs each acceptable SVID the stream carries,
    /// until it ends (or, with `first_only`, until one is installed). The
    /// last refusal is left in `refused`.
    async fn follow(
        &self,
        identity: &Identity,
        first_only: bool,
        refused: &mut Option<SvidError>,
    ) -> StreamEnd {
        let closed = |delivered, error| StreamEnd::Closed { delivered, error };
        let client = match WorkloadApiClient::connect(self.endpoint.clone()).await {
            Ok(client) => client,
            Err(source) => {
                let endpoint = self.shown.clone();
                return closed(false, WorkloadApiError::ConnectFailed { endpoint, source });
            }
        };
        let mut stream = match client.stream_x509_contexts().await {
            Ok(stream) => stream,
            Err(source) => {
                let endpoint = self.shown.clone();
                return closed(false, WorkloadApiError::StreamFailed { endpoint, source });
            }
        };
        let mut delivered = false;
        let mut error = None;
        while let Some(item) = stream.next().await {
            let outcome = match item {
                Ok(context) => svid::credentials(&context, &self.select),
                Err(source) if is_content_error(&source) => Err(SvidError::Response(source)),
                Err(source) => {
                    // A status ends the stream: the next item is its end.
                    let endpoint = self.shown.clone();
                    error = Some(WorkloadApiError::StreamFailed { endpoint, source });
                    continue;
                }
            };
            delivered = true;
            match outcome {
                Ok(creds) => {
                    if let Some(installed) = install_if_new(identity, creds) {
                        if first_only {
                            return StreamEnd::First(installed);
                        }
                    }
                }
                // Keep what is in force; the stream goes on.
                Err(reason) => {
                    tracing::warn!(
                        reason = %reason,
                        "workload api: X.509-SVID refused, keeping the current certificate"
                    );
                    *refused = Some(reason);
                }
            }
        }
        let error = error.unwrap_or_else(|| WorkloadApiError::StreamEnded {
            endpoint: self.shown.clone(),
        });
        closed(delivered, error)
    }
}

/// How one Workload API stream ended.
enum StreamEnd {
    /// The first SVID installed (`first_only`).
    First(Arc<Credentials>),
    /// The connection failed, the call was refused or the stream ended;
    /// `delivered` when it had carried at least one response.
    Closed {
        delivered: bool,
        error: WorkloadApiError,
    },
}

/// Whether a stream item's error is about the response's content (the
/// stream itself goes on) rather than a status that ends the call.
fn is_content_error(e: &spiffe::WorkloadApiError) -> bool {
    !matches!(
        e,
        spiffe::WorkloadApiError::Transport(_)
            | spiffe::WorkloadApiError::PermissionDenied(_)
            | spiffe::WorkloadApiError::NoIdentityIssued
    )
}

/// Installs `creds` unless the very same certificate, key and bundle are
/// in force already (a reconnect resends them); returns what is in force.
fn install_if_new(identity: &Identity, creds: Credentials) -> Option<Arc<Credentials>> {
    if let Some(current) = identity.current() {
        if current.chain == creds.chain
            && current.key.secret_der() == creds.key.secret_der()
            && current.bundle == creds.bundle
        {
            return Some(current);
        }
    }
    // A certificate rustls cannot use keeps the one in force (logged and
    // kept as the identity's last error by `install`).
    if identity.install(creds).is_err() {
        return None;
    }
    identity.current()
}

/// Reconnection delays: doubling from `initial` up to `max`, ±20 % jitter.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.8..1.2))
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}
