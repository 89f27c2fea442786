//! [`MarathonRegistry`]: opens the event stream, reads the apps in full,
//! then follows the stream; starts over when anything fails.
//!
//! ```text
//!   ┌──► open GET /v2/events (failover across URLs) ──err──────────────────┐
//!   │       │ 200                                                         │
//!   │       ▼                                                             │
//!   │    GET /v2/apps?embed=apps.tasks ──err─────────────────────────────┤
//!   │       │ ok: Reset + Healthy/Degraded                                │
//!   │       ▼                                                             ▼
//!   │    read events ◄─────────────┐                     Error status (the last
//!   │       │ relevant event:       │ ok: the differences  good view stays, stale)
//!   │       │ (terminal task, app   │ as upserts/removes            │
//!   │       │ gone: applied at once)│                               │
//!   │       ▼                       │                               │
//!   │    GET /v2/apps again ────────┘                               │
//!   │       │ stream ended / silent / broken                        │
//!   └── backoff (capped, jittered) ◄────────────────────────────────┘
//! ```
//!
//! The stream is opened before the apps are read, so no change between the
//! read and the subscription is missed. Marathon does not order its events,
//! so an event only says "re-read": the apps list is the truth (terminal task
//! states and `app_terminated_event` are final, so they are applied before
//! the re-read).

use anymesh_core::registry::CatalogClosed;
use anymesh_core::{Change, ChangeSink, Registry, SourceId, SourceStatus};
use async_trait::async_trait;
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::Client;
use crate::config::MarathonConfig;
use crate::decode::{decode_event, Event, TERMINAL_STATES};
use crate::error::{chain, MarathonError};
use crate::sse::SseParser;
use crate::state::View;
use crate::translate::Translator;
use anymesh_core::backoff::Backoff;

/// How long after a relevant event the apps are read again, so a burst of
/// events (a deployment) gives one read.
const REREAD_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// A registry reading apps and tasks from Marathon (see the crate docs).
#[derive(Debug)]
pub struct MarathonRegistry {
    source: SourceId,
    config: MarathonConfig,
    client: Client,
    translator: Translator,
}

impl MarathonRegistry {
    /// A registry reporting as `source`. Fails only on a config that can never work.
    pub fn new(source: SourceId, config: MarathonConfig) -> Result<Self, MarathonError> {
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
        let mut view = View::default();
        loop {
            match self.session(sink, &mut view, &mut backoff).await? {
                Ended::Failed(e) => {
                    tracing::warn!(error = %e, "marathon unavailable; keeping the last good view");
                    sink.send(Change::Status(SourceStatus::Error {
                        message: e.to_string(),
                    }))
                    .await?;
                }
                Ended::StreamLost(e) => {
                    tracing::warn!(error = %e, "marathon event stream lost; reconnecting and resyncing");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One connection: subscribe, read in full, follow. Returns how it ended.
    async fn session(
        &self,
        sink: &ChangeSink,
        view: &mut View,
        backoff: &mut Backoff,
    ) -> Result<Ended, CatalogClosed> {
        let (server, mut stream) = match self.client.events().await {
            Ok(s) => s,
            Err(e) => return Ok(Ended::Failed(e)),
        };
        let url = self.client.url(server).to_string();
        let list = match self.client.apps().await {
            Ok((_, list)) => list,
            Err(e) => return Ok(Ended::Failed(e)),
        };
        *view = View::new(list, &self.translator);
        tracing::debug!(url = %url, apps = view.apps.len(), tasks = view.endpoint_count(), "marathon apps read");
        sink.send(Change::Reset(view.source_view())).await?;
        let status = view.status();
        if let Change::Status(SourceStatus::Degraded { message }) = &status {
            tracing::warn!(problem = %message, "marathon registry: entries skipped");
        }
        sink.send(status).await?;
        backoff.reset();

        let idle = self.config.stream_idle_timeout.0;
        let mut parser = SseParser::default();
        let mut last_byte = Instant::now();
        // When the apps are to be read again: events come in bursts (a
        // deployment), so one re-read follows the burst.
        let mut reread_at: Option<Instant> = None;
        loop {
            let lost = |message: String| {
                Ok(Ended::StreamLost(MarathonError::StreamLost {
                    url: url.clone(),
                    message,
                }))
            };
            let silent_at = last_byte + idle;
            let until = reread_at.map_or(silent_at, |r| r.min(silent_at));
            let chunk = match tokio::time::timeout_at(until, stream.chunk()).await {
                Ok(Ok(Some(c))) => Some(c),
                Ok(Ok(None)) => return lost("ended".into()),
                Ok(Err(e)) => return lost(format!("broke: {}", chain(&e.without_url()))),
                Err(_) if reread_at.is_some_and(|r| Instant::now() >= r) => None,
                Err(_) => {
                    return lost(format!(
                        "was silent for {:.1}s (no event, no heartbeat)",
                        idle.as_secs_f64()
                    ))
                }
            };
            let Some(chunk) = chunk else {
                reread_at = None;
                match self.reread(sink, view).await? {
                    Some(e) => return Ok(Ended::Failed(e)),
                    None => continue,
                }
            };
            last_byte = Instant::now();
            let events = match parser.feed(&chunk) {
                Ok(e) => e,
                Err(message) => return lost(message),
            };
            let mut reread = false;
            for ev in events {
                let event = match decode_event(ev.name.as_deref(), &ev.data) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "marathon event ignored");
                        continue;
                    }
                };
                tracing::debug!(?event, "marathon event");
                let next = match &event {
                    Event::StatusUpdate {
                        app_id,
                        task_id,
                        status,
                    } => {
                        reread = true;
                        if TERMINAL_STATES.contains(&status.as_str()) {
                            view.without_task(app_id, task_id, &self.translator)
                        } else {
                            None
                        }
                    }
                    Event::AppTerminated { app_id } => {
                        reread = true;
                        view.without_app(app_id, &self.translator)
                    }
                    Event::HealthChanged { .. } | Event::AppsChanged { .. } => {
                        reread = true;
                        None
                    }
                    Event::Attached | Event::Other { .. } => None,
                };
                if let Some(next) = next {
                    for change in view.diff(&next) {
                        sink.send(change).await?;
                    }
                    *view = next;
                }
            }
            if reread && reread_at.is_none() {
                reread_at = Some(Instant::now() + REREAD_DELAY);
            }
        }
    }

    /// Reads the apps again and sends the differences; the error if the
    /// read failed.
    async fn reread(
        &self,
        sink: &ChangeSink,
        view: &mut View,
    ) -> Result<Option<MarathonError>, CatalogClosed> {
        let list = match self.client.apps().await {
            Ok((_, list)) => list,
            Err(e) => return Ok(Some(e)),
        };
        let next = View::new(list, &self.translator);
        for change in view.diff(&next) {
            sink.send(change).await?;
        }
        *view = next;
        Ok(None)
    }
}

/// How a session ended.
enum Ended {
    /// Marathon could not be read: reported as an error.
    Failed(MarathonError),
    /// The stream went away after a good sync: reconnect and resync quietly.
    StreamLost(MarathonError),
}

#[async_trait]
impl Registry for MarathonRegistry {
    fn source(&self) -> &SourceId {
        &self.source
    }

    /// Follows Marathon until the task is cancelled or the catalog closes.
    /// Never returns on a server error: see the module docs.
    async fn run(&self, sink: ChangeSink) {
        let span = tracing::info_span!("registry", source = %self.source);
        async {
            tracing::info!(urls = ?self.config.urls, "marathon registry started");
            tokio::select! {
                _ = self.follow(&sink) => {}
                () = sink.closed() => {}
            }
            tracing::info!("catalog closed; marathon registry stopping");
        }
        .instrument(span)
        .await
    }
}
