//! [`EtcdRegistry`]: connects, lists the prefix, watches it, and starts over
//! when anything fails.
//!
//! ```text
//!   ┌──► connect ──err──────────────────────────────┐
//!   │       │ ok                                     │
//!   │       ▼                                        │
//!   │    list prefix ──err───────────────────────────┤
//!   │       │ ok: Reset + status          ▲          │
//!   │       ▼                             │ compacted│
//!   │    watch from revision+1 ───────────┘ (at once)│
//!   │       │ events: Upsert/Remove                  │
//!   │       │ err / stream end / canceled            ▼
//!   └── backoff (capped, jittered) ◄──── Error status (last good view stays)
//! ```
//!
//! What is sent at each step is decided by [`State::step`](crate::state);
//! this module only talks to etcd. Every unary call has a timeout (a dead
//! etcd can leave a request pending forever), and HTTP/2 keep-alive pings
//! notice a dead connection under an idle watch.

use std::time::Duration;

use anymesh_core::registry::CatalogClosed;
use anymesh_core::{Change, ChangeSink, Registry, SourceId, SourceStatus, SourceView};
use anymesh_support::{SecretError, SecretSource};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, GetResponse, Identity, TlsOptions,
    WatchOptions, WatchResponse,
};
use tracing::Instrument;

use crate::config::{AuthConfig, EtcdConfig, TlsConfig};
use crate::decode::{Decoder, Layout};
use crate::error::EtcdError;
use crate::state::{Event, Input, Kv, State};
use anymesh_core::backoff::Backoff;

/// A registry reading endpoints from an etcd v3 key prefix (see the crate docs).
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    source: SourceId,
    config: EtcdConfig,
    decoder: Decoder,
}

/// What one list of the prefix found (see [`EtcdRegistry::list_once`]).
#[derive(Debug, Clone)]
pub struct Listing {
    /// The etcd revision listed at.
    pub revision: i64,
    pub view: SourceView,
    /// Keys under the prefix that are not valid endpoints, as the running
    /// registry reports them (`None`: every key decoded).
    pub problem: Option<String>,
}

/// Keys per page when listing the prefix: far below the client's 4 MiB
/// message limit for values of a few KiB.
const LIST_PAGE: i64 = 500;

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix); `\0` (no end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    for (i, b) in prefix.iter().enumerate().rev() {
        if *b < 0xFF {
            let mut end = prefix[..=i].to_vec();
            end[i] = *b + 1;
            return end;
        }
    }
    vec![0]
}

/// How a watch ended.
enum WatchEnd {
    /// The history it needed is compacted: list again.
    Compacted,
    Failed(EtcdError),
}

impl EtcdRegistry {
    /// A registry reporting as `source`. Fails only on a config that can never work.
    pub fn new(source: SourceId, config: EtcdConfig) -> Result<Self, EtcdError> {
        config.validate()?;
        let decoder = Decoder::new(
            source.clone(),
            Layout::new(&config.prefix),
            config.default_port,
        );
        Ok(Self {
            source,
            config,
            decoder,
        })
    }

    /// The prefix read, normalised (ends with `/` unless empty).
    pub fn prefix(&self) -> &str {
        self.decoder.layout().prefix()
    }

    /// Connects, lists the prefix once and decodes it, as the first step of
    /// [`run`](Registry::run) does, then disconnects: for `anymesh check`.
    /// Bounded by the dial and request timeouts.
    pub async fn list_once(&self) -> Result<Listing, EtcdError> {
        let mut client = self.connect().await?;
        let listed = self.list(&mut client).await?;
        let revision = match &listed {
            Input::Listed { revision, .. } => *revision,
            _ => 0,
        };
        let (_, changes) = State::Empty.step(listed, &self.decoder);
        let mut listing = Listing {
            revision,
            view: SourceView::default(),
            problem: None,
        };
        for change in changes {
            match change {
                Change::Reset(view) => listing.view = view,
                Change::Status(
                    SourceStatus::Degraded { message } | SourceStatus::Error { message },
                ) => listing.problem = Some(message),
                _ => {}
            }
        }
        Ok(listing)
    }

    fn request_timeout(&self) -> Duration {
        self.config.request_timeout.0
    }

    async fn follow(&self, sink: &ChangeSink) -> Result<(), CatalogClosed> {
        let mut backoff = self.config.backoff.start();
        let mut state = State::Empty;
        loop {
            let failure = match self.connect().await {
                Ok(mut client) => {
                    self.session(&mut client, &mut state, &mut backoff, sink)
                        .await?
                }
                Err(e) => e,
            };
            let message = failure.chain();
            tracing::warn!(error = %message, "etcd registry unavailable; keeping the last good view");
            feed(&mut state, Input::Failed(message), &self.decoder, sink).await?;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Lists and watches until something fails; returns the failure.
    async fn session(
        &self,
        client: &mut Client,
        state: &mut State,
        backoff: &mut Backoff,
        sink: &ChangeSink,
    ) -> Result<EtcdError, CatalogClosed> {
        let mut compactions_in_a_row = 0;
        loop {
            let listed = match self.list(client).await {
                Ok(listed) => listed,
                // A list at the latest revision is never compacted; if etcd
                // says so anyway, relist once, then back off like any error.
                Err(e) if e.is_compacted() && compactions_in_a_row == 0 => {
                    compactions_in_a_row += 1;
                    continue;
                }
                Err(e) => return Ok(e),
            };
            let relist = matches!(state, State::Relist);
            feed(state, listed, &self.decoder, sink).await?;
            backoff.reset();
            compactions_in_a_row = 0;
            if relist {
                tracing::info!("etcd registry relisted after a compaction");
            }
            let Some(from) = state.watch_from() else {
                // Unreachable: a list always leads to `Watching`.
                continue;
            };
            match self.watch(client, from, state, sink).await? {
                WatchEnd::Compacted => continue,
                WatchEnd::Failed(e) => return Ok(e),
            }
        }
    }

    async fn connect(&self) -> Result<Client, EtcdError> {
        let c = &self.config;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(c.dial_timeout.0)
            .with_keep_alive(c.keepalive.0, c.request_timeout.0)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &c.tls {
            options = options.with_tls(tls_options(tls).await?);
        }
        if let Some(auth) = &c.auth {
            options = options.with_user(auth.user.clone(), password(auth).await?);
        }
        let connect = Client::connect(&c.endpoints, Some(options));
        match tokio::time::timeout(c.dial_timeout.0 + c.request_timeout.0, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(EtcdError::ConnectFailed {
                endpoints: c.endpoints.join(","),
                source,
            }),
            Err(_) => Err(EtcdError::Timeout {
                operation: "connecting to etcd",
                after: c.dial_timeout.0 + c.request_timeout.0,
            }),
        }
    }

    /// Lists the prefix in pages of [`LIST_PAGE`] keys, every page at the
    /// revision of the first, so a large prefix never exceeds the client's
    /// message size limit (4 MiB) and the result is one consistent view.
    async fn list(&self, client: &mut Client) -> Result<Input, EtcdError> {
        let prefix = self.prefix().as_bytes();
        let (mut from, end) = match prefix {
            // The whole keyspace: from "\0", and an end of "\0" means "no end".
            [] => (vec![0], vec![0]),
            p => (p.to_vec(), prefix_end(p)),
        };
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let get = client.get(from.clone(), Some(options));
            let resp = match tokio::time::timeout(self.request_timeout(), get).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(source)) => {
                    return Err(EtcdError::ListFailed {
                        prefix: self.prefix().to_string(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(EtcdError::Timeout {
                        operation: "listing the etcd prefix",
                        after: self.request_timeout(),
                    })
                }
            };
            let (at, page) = page(&resp);
            if revision == 0 {
                revision = at;
            }
            let more = resp.more() && !page.is_empty();
            if let Some(last) = page.last() {
                from = last.key.clone();
                from.push(0);
            }
            kvs.extend(page);
            if !more {
                break;
            }
        }
        tracing::debug!(revision, keys = kvs.len(), "etcd prefix listed");
        Ok(Input::Listed { revision, kvs })
    }

    async fn watch(
        &self,
        client: &mut Client,
        from: i64,
        state: &mut State,
        sink: &ChangeSink,
    ) -> Result<WatchEnd, CatalogClosed> {
        let prefix = self.prefix().to_string();
        let failed = |source| {
            WatchEnd::Failed(EtcdError::WatchFailed {
                prefix: prefix.clone(),
                source,
            })
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let create = client.watch(self.prefix(), Some(options));
        let mut stream = match tokio::time::timeout(self.request_timeout(), create).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Ok(failed(e)),
            Err(_) => {
                return Ok(WatchEnd::Failed(EtcdError::Timeout {
                    operation: "creating the etcd watch",
                    after: self.request_timeout(),
                }))
            }
        };
        tracing::debug!(from, "etcd watch started");
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return Ok(WatchEnd::Failed(EtcdError::WatchEnded {
                        prefix,
                        reason: String::new(),
                    }))
                }
                Err(source) => {
                    let e = EtcdError::WatchFailed { prefix, source };
                    if e.is_compacted() {
                        feed(state, compacted(0), &self.decoder, sink).await?;
                        return Ok(WatchEnd::Compacted);
                    }
                    return Ok(WatchEnd::Failed(e));
                }
            };
            match watch_input(&resp) {
                WatchMsg::Nothing => {}
                WatchMsg::Input(input) => {
                    let is_compacted = matches!(input, Input::Compacted { .. });
                    if let Input::Compacted { compact_revision } = input {
                        tracing::info!(
                            compact_revision,
                            from,
                            "etcd compacted the watch window; relisting"
                        );
                    }
                    feed(state, input, &self.decoder, sink).await?;
                    if is_compacted {
                        return Ok(WatchEnd::Compacted);
                    }
                }
                WatchMsg::Canceled(reason) => {
                    return Ok(WatchEnd::Failed(EtcdError::WatchEnded { prefix, reason }))
                }
            }
        }
    }
}

/// Translates a prefix get (see the fixture `range_prefix_with_slash.json`).
#[cfg(test)]
pub(crate) fn listed(resp: &GetResponse) -> Input {
    let (revision, kvs) = page(resp);
    Input::Listed { revision, kvs }
}

/// The revision and the key-values of one get response.
fn page(resp: &GetResponse) -> (i64, Vec<Kv>) {
    let kvs = resp
        .kvs()
        .iter()
        .map(|kv| Kv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
        })
        .collect();
    (resp.header().map_or(0, |h| h.revision()), kvs)
}

fn compacted(compact_revision: i64) -> Input {
    Input::Compacted { compact_revision }
}

/// What one watch response means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WatchMsg {
    /// `created`, or a progress notification: nothing changed.
    Nothing,
    Input(Input),
    /// Canceled for a reason other than compaction.
    Canceled(String),
}

/// Translates a watch response (see the fixture `watch_stream.ndjson`).
pub(crate) fn watch_input(resp: &WatchResponse) -> WatchMsg {
    if resp.canceled() {
        return match resp.compact_revision() {
            0 => WatchMsg::Canceled(resp.cancel_reason().to_string()),
            rev => WatchMsg::Input(compacted(rev)),
        };
    }
    if resp.events().is_empty() {
        return WatchMsg::Nothing;
    }
    let events = resp
        .events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            Some(match e.event_type() {
                EventType::Put => Event::Put(Kv {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                }),
                EventType::Delete => Event::Delete {
                    key: kv.key().to_vec(),
                },
            })
        })
        .collect();
    WatchMsg::Input(Input::Events {
        revision: resp.header().map_or(0, |h| h.revision()),
        events,
    })
}

/// Steps the state and sends what it says.
async fn feed(
    state: &mut State,
    input: Input,
    decoder: &Decoder,
    sink: &ChangeSink,
) -> Result<(), CatalogClosed> {
    let (next, changes) = std::mem::take(state).step(input, decoder);
    *state = next;
    for change in changes {
        match &change {
            anymesh_core::Change::Status(SourceStatus::Error { message }) => {
                tracing::debug!(error = %message, "etcd registry status");
            }
            anymesh_core::Change::Status(SourceStatus::Degraded { message }) => {
                tracing::warn!(problem = %message, "etcd registry: entries skipped");
            }
            _ => {}
        }
        sink.send(change).await?;
    }
    Ok(())
}

async fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| EtcdError::ReadFile {
            what,
            path: path.to_path_buf(),
            source,
        })
}

async fn tls_options(tls: &TlsConfig) -> Result<TlsOptions, EtcdError> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        options =
            options.ca_certificate(Certificate::from_pem(read("the etcd CA file", ca).await?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let cert = read("the etcd client certificate", cert).await?;
        let key = read("the etcd client key", key).await?;
        options = options.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = &tls.server_name {
        options = options.domain_name(name.clone());
    }
    Ok(options)
}

/// The password, from its file or environment variable (trimmed by
/// [`anymesh_support::trim_secret`]; never logged).
async fn password(auth: &AuthConfig) -> Result<String, EtcdError> {
    // `validate` makes sure exactly one of the two is set.
    let source =
        SecretSource::from_options(auth.password_file.as_deref(), auth.password_env.as_deref())
            .unwrap_or(SecretSource::Env(""));
    source.read().map_err(|e| match e {
        SecretError::ReadFile { path, source } => EtcdError::ReadFile {
            what: "the etcd password file",
            path,
            source,
        },
        SecretError::EnvNotSet { name } => EtcdError::PasswordEnv { name },
    })
}

#[async_trait]
impl Registry for EtcdRegistry {
    fn source(&self) -> &SourceId {
        &self.source
    }

    /// Lists and watches until the task is cancelled or the catalog closes.
    /// Never returns on an etcd error: see the module docs.
    async fn run(&self, sink: ChangeSink) {
        let span = tracing::info_span!("registry", source = %self.source, prefix = %self.prefix());
        async {
            tracing::info!(endpoints = ?self.config.endpoints, "etcd registry started");
            tokio::select! {
                _ = self.follow(&sink) => {}
                () = sink.closed() => {}
            }
            tracing::info!("catalog closed; etcd registry stopping");
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests;
