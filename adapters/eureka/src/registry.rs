//! [`EurekaRegistry`]: fetches the registry in full, then by delta, and
//! starts over when anything fails.
//!
//! ```text
//!   ┌──► full fetch (GET /apps, failover across servers) ──err──────────┐
//!   │       │ ok: Reset + status                     ▲                   │
//!   │       ▼                                        │ hashcode mismatch,│
//!   │    wait refresh_interval                       │ HTTP error, empty │
//!   │       │                                        │ local registry    │
//!   │       ▼                                        │                   │
//!   │    delta (GET /apps/delta) ────────────────────┘                   │
//!   │       │ ok, hashcode matches: upserts/removes, wait again          │
//!   │       │ err                                                        ▼
//!   └── backoff (capped, jittered) ◄──────────── Error status (last good view stays)
//! ```
//!
//! What is sent at each step is decided by [`State::step`](crate::state);
//! this module only talks to the servers.

use anymesh_core::registry::CatalogClosed;
use anymesh_core::{Change, ChangeSink, Registry, SourceId, SourceStatus};
use async_trait::async_trait;
use tracing::Instrument;

use crate::client::{Answer, Client};
use crate::config::EurekaConfig;
use crate::error::EurekaError;
use crate::state::{Input, Next, State};
use crate::translate::Translator;

/// A registry reading applications from Eureka servers (see the crate docs).
#[derive(Debug)]
pub struct EurekaRegistry {
    source: SourceId,
    config: EurekaConfig,
    client: Client,
    translator: Translator,
}

impl EurekaRegistry {
    /// A registry reporting as `source`. Fails only on a config that can never work.
    pub fn new(source: SourceId, config: EurekaConfig) -> Result<Self, EurekaError> {
        config.validate()?;
        let client = Client::new(&config)?;
        let translator = Translator::new(source.clone(), &config);
        Ok(Self {
            source,
            config,
            client,
            translator,
        })
    }

    async fn follow(&self, sink: &ChangeSink) -> Result<(), CatalogClosed> {
        let mut backoff = self.config.backoff.start();
        let mut state = State::Empty;
        let mut next = Next::Refetch("start".into());
        loop {
            let input = match next {
                Next::Poll if state.wants_delta() => {
                    tokio::time::sleep(self.config.refresh_interval.0).await;
                    match self.client.delta().await {
                        Ok(Answer::Apps { apps, .. }) => Input::Delta(apps),
                        Ok(Answer::DeltaUnavailable { status }) => {
                            tracing::debug!(status, "eureka delta unavailable; fetching in full");
                            self.full().await
                        }
                        Err(e) => Input::Failed(e.to_string()),
                    }
                }
                Next::Poll => {
                    // Netflix's client fetches in full while its copy is empty.
                    tokio::time::sleep(self.config.refresh_interval.0).await;
                    self.full().await
                }
                Next::Refetch(reason) => {
                    tracing::debug!(%reason, "eureka full fetch");
                    self.full().await
                }
                Next::Backoff => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    self.full().await
                }
            };
            let full = matches!(input, Input::Full(_));
            if let Input::Failed(message) = &input {
                tracing::warn!(error = %message, "eureka registry unavailable; keeping the last good view");
            }
            let (s, changes, n) = std::mem::take(&mut state).step(input, &self.translator);
            state = s;
            if full {
                backoff.reset();
            }
            if let Next::Refetch(reason) = &n {
                tracing::info!(%reason, "eureka delta not applied; fetching the full registry");
            }
            next = n;
            for change in changes {
                if let Change::Status(SourceStatus::Degraded { message }) = &change {
                    tracing::warn!(problem = %message, "eureka registry: instances skipped");
                }
                sink.send(change).await?;
            }
        }
    }

    async fn full(&self) -> Input {
        match self.client.full().await {
            Ok(Answer::Apps { apps, server }) => {
                tracing::debug!(
                    server = %self.client.server(server),
                    instances = apps.instances.len(),
                    hashcode = apps.hashcode.as_deref().unwrap_or_default(),
                    "eureka registry fetched"
                );
                Input::Full(apps)
            }
            // Only deltas answer this.
            Ok(Answer::DeltaUnavailable { status }) => {
                Input::Failed(format!("unexpected {status} to /apps"))
            }
            Err(e) => Input::Failed(e.to_string()),
        }
    }
}

#[async_trait]
impl Registry for EurekaRegistry {
    fn source(&self) -> &SourceId {
        &self.source
    }

    /// Fetches and polls until the task is cancelled or the catalog closes.
    /// Never returns on a server error: see the module docs.
    async fn run(&self, sink: ChangeSink) {
        let span = tracing::info_span!("registry", source = %self.source);
        async {
            tracing::info!(servers = ?self.config.servers, "eureka registry started");
            tokio::select! {
                _ = self.follow(&sink) => {}
                () = sink.closed() => {}
            }
            tracing::info!("catalog closed; eureka registry stopping");
        }
        .instrument(span)
        .await
    }
}
