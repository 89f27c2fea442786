//! [`ConsulRegistry`]: syncs, follows with blocking queries, and syncs again
//! when anything fails.
//!
//! ```text
//!   ┌──► sync: catalog (index 0) + every wanted service (index 0, ≤8 at once)
//!   │       │ ok: Reset + status                      │ err
//!   │       ▼                                         │
//!   │    follow: one long-poll on /v1/catalog/services│
//!   │            + one per wanted service             │
//!   │       │ catalog answer  → start/stop long-polls │
//!   │       │ service answer  → Upsert/Remove (diff)  │
//!   │       │ interest change → start/stop long-polls │
//!   │       │ catalog index went back ──► sync at once (no backoff)
//!   │       │ any query failed                        ▼
//!   └── backoff (capped, jittered) ◄──── Error status (last good view stays)
//! ```
//!
//! Each long-poll keeps its own index: an answer with the same index (the
//! `wait` ran out) sends nothing; an index that went backwards resets that
//! poll to index 0 (a non-blocking read of the whole list, diffed against
//! what was sent); an index of 0 is read as 1, so a poll never spins. Two
//! queries of one poll start at least `min_query_interval` apart, and every
//! query waits a random `0..=jitter` first.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::registry::CatalogClosed;
use anymesh_core::{Change, ChangeSink, Mapping, Registry, SourceId, SourceStatus};
use async_trait::async_trait;
use rand::Rng;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::api::{CatalogServices, ServiceEntry};
use crate::client::{Answer, Client};
use crate::config::ConsulConfig;
use crate::decode::Decoder;
use crate::error::ConsulError;
use crate::interest::{Interest, Selector};
use crate::state::{Followed, Synced};

/// How many services a sync reads at once.
const SYNC_CONCURRENCY: usize = 8;
/// Long-polls above which a warning is logged: each is one HTTP/1.1
/// connection, and a Consul agent accepts 200 from one client by default
/// (`limits.http_max_conns_per_client`), leaving some for other clients.
const CONNECTIONS_WARNING: usize = 180;

/// A registry reading one datacenter of Consul (see the crate docs).
#[derive(Debug, Clone)]
pub struct ConsulRegistry {
    source: SourceId,
    config: Arc<ConsulConfig>,
    datacenter: Option<String>,
    decoder: Decoder,
    selector: Selector,
    interest: Option<watch::Receiver<Interest>>,
}

/// What a long-poll reports.
enum Msg {
    Catalog(Answer<CatalogServices>),
    Health {
        name: String,
        answer: Answer<Vec<ServiceEntry>>,
    },
    CatalogIndexWentBack {
        from: u64,
        to: u64,
    },
    Failed(ConsulError),
}

/// How following ended.
enum End {
    Resync,
    Failed(ConsulError),
}

impl ConsulRegistry {
    /// A registry for `datacenter` (None: the agent's own) reporting as
    /// `source`. Fails only on a config that can never work. Without
    /// [`with_interest`](Self::with_interest) it follows the services listed
    /// in the config (or all with `watch_all`).
    pub fn new(
        source: SourceId,
        config: ConsulConfig,
        datacenter: Option<String>,
    ) -> Result<Self, ConsulError> {
        config.validate()?;
        let decoder = Decoder {
            source: source.clone(),
            include_warning: config.include_warning,
            address_from: config.address_from,
        };
        let selector = Selector {
            watch_all: config.watch_all,
            listed: config.services.iter().cloned().collect(),
            mapping: Arc::new(Mapping::default()),
        };
        Ok(Self {
            source,
            config: Arc::new(config),
            datacenter,
            decoder,
            selector,
            interest: None,
        })
    }

    /// Also follows every service whose mesh names (through `mapping`, the
    /// registry's own) match a host of the current interest.
    pub fn with_interest(
        mut self,
        interest: watch::Receiver<Interest>,
        mapping: Arc<Mapping>,
    ) -> Self {
        self.selector.mapping = mapping;
        self.interest = Some(interest);
        self
    }

    fn pace(&self) -> Pace {
        Pace {
            min: self.config.min_query_interval.0,
            jitter: self.config.jitter.0,
            last: None,
        }
    }

    async fn follow(&self, sink: &ChangeSink) -> Result<(), CatalogClosed> {
        let mut backoff = self.config.backoff.start();
        let mut interest = InterestFeed(self.interest.clone());
        loop {
            let failure = match Client::build(&self.config, self.datacenter.clone()).await {
                Err(e) => e,
                Ok(client) => {
                    let current = interest.current();
                    match self.sync(&client, &current).await {
                        Err(e) => e,
                        Ok(synced) => {
                            tracing::debug!(
                                catalog = synced.catalog.len(),
                                followed = synced.services.len(),
                                index = synced.catalog_index,
                                "consul synced"
                            );
                            sink.send(Change::Reset(synced.view())).await?;
                            let status = synced.status();
                            log_status(&status);
                            sink.send(Change::Status(status.clone())).await?;
                            backoff.reset();
                            match self
                                .watch(&client, synced, status, &mut interest, sink)
                                .await?
                            {
                                End::Resync => continue,
                                End::Failed(e) => e,
                            }
                        }
                    }
                }
            };
            let message = failure.chain();
            tracing::warn!(error = %message, "consul registry unavailable; keeping the last good view");
            sink.error(message).await?;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Reads the catalog and every wanted service once.
    async fn sync(&self, client: &Client, interest: &Interest) -> Result<Synced, ConsulError> {
        let catalog = client.catalog_services(0).await?;
        let mut synced = Synced {
            catalog_index: catalog.index,
            catalog: catalog.body.keys().cloned().collect(),
            ..Synced::default()
        };
        let limit = Arc::new(Semaphore::new(SYNC_CONCURRENCY));
        let mut reads = JoinSet::new();
        for name in synced
            .catalog
            .iter()
            .filter(|n| self.selector.wants(interest, n))
        {
            let (client, limit, name) = (client.clone(), limit.clone(), name.clone());
            reads.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let answer = client.health_service(&name, 0).await;
                (name, answer)
            });
        }
        while let Some(joined) = reads.join_next().await {
            let (name, answer) = joined.map_err(|e| ConsulError::Decode {
                what: "reading the followed services".into(),
                url: self.config.address.clone(),
                message: format!("a read task ended: {e}"),
            })?;
            let answer = answer?;
            let followed = Followed::decode(&self.decoder, &name, answer.index, &answer.body);
            synced.services.insert(name, followed);
        }
        synced.join_all();
        Ok(synced)
    }

    /// Runs the long-polls until one fails or the catalog index goes back.
    async fn watch(
        &self,
        client: &Client,
        mut synced: Synced,
        mut status: SourceStatus,
        interest: &mut InterestFeed,
        sink: &ChangeSink,
    ) -> Result<End, CatalogClosed> {
        let (tx, mut rx) = mpsc::channel::<Msg>(64);
        let mut polls = Polls {
            set: JoinSet::new(),
            by_name: HashMap::new(),
            client: client.clone(),
            tx,
        };
        polls.set.spawn(poll_catalog(
            client.clone(),
            synced.catalog_index,
            self.pace(),
            polls.tx.clone(),
        ));
        for (name, f) in &synced.services {
            polls.start(name, f.index, self.pace());
        }
        let mut warned = false;
        loop {
            if !warned && synced.services.len() + 1 > CONNECTIONS_WARNING {
                warned = true;
                tracing::warn!(
                    long_polls = synced.services.len() + 1,
                    "consul registry holds more long-polls than a Consul agent allows one client \
                     by default (limits.http_max_conns_per_client = 200); raise that limit or \
                     follow fewer services (see docs/consul-registry.md)"
                );
            }
            let mut changes = Vec::new();
            tokio::select! {
                msg = rx.recv() => match msg {
                    // Unreachable while `polls` holds a sender.
                    None => return Ok(End::Resync),
                    Some(Msg::Failed(e)) => return Ok(End::Failed(e)),
                    Some(Msg::CatalogIndexWentBack { from, to }) => {
                        tracing::info!(from, to, "consul catalog index went back; resyncing");
                        return Ok(End::Resync);
                    }
                    Some(Msg::Catalog(answer)) => {
                        synced.catalog_index = answer.index;
                        let names: Vec<String> = answer.body.into_keys().collect();
                        // Most catalog answers (a new instance, a tag) keep
                        // the names; only a new or gone name needs a look.
                        if names != synced.catalog {
                            synced.catalog = names;
                            changes = self.reconcile(&mut synced, &interest.current(), &mut polls);
                        }
                    }
                    Some(Msg::Health { name, answer }) => {
                        if synced.services.contains_key(&name) {
                            let next = Followed::decode(&self.decoder, &name, answer.index, &answer.body);
                            changes = synced.apply(&name, next);
                            if !changes.is_empty() {
                                tracing::debug!(service = %name, index = answer.index, changes = changes.len(), "consul service changed");
                            }
                        }
                    }
                },
                () = interest.changed() => {
                    changes = self.reconcile(&mut synced, &interest.current(), &mut polls);
                }
            }
            for c in changes {
                sink.send(c).await?;
            }
            let now = synced.status();
            if now != status {
                log_status(&now);
                sink.send(Change::Status(now.clone())).await?;
                status = now;
            }
        }
    }

    /// Starts long-polls for newly wanted services and stops those of
    /// services no longer wanted (or gone), whose endpoints leave.
    fn reconcile(
        &self,
        synced: &mut Synced,
        interest: &Interest,
        polls: &mut Polls,
    ) -> Vec<Change> {
        let wanted: BTreeSet<String> = synced
            .catalog
            .iter()
            .filter(|n| self.selector.wants(interest, n))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        let gone: Vec<String> = synced
            .services
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            polls.stop(&name);
            tracing::debug!(service = %name, "consul service no longer followed");
            changes.extend(synced.remove(&name));
        }
        for name in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = synced.services.entry(name) {
                tracing::debug!(service = %slot.key(), "consul service followed");
                polls.start(slot.key(), 0, self.pace());
                slot.insert(Followed::default());
            }
        }
        changes
    }
}

/// The running long-polls of one follow.
struct Polls {
    set: JoinSet<()>,
    by_name: HashMap<String, AbortHandle>,
    client: Client,
    tx: mpsc::Sender<Msg>,
}

impl Polls {
    fn start(&mut self, name: &str, index: u64, pace: Pace) {
        let handle = self.set.spawn(poll_service(
            self.client.clone(),
            name.to_string(),
            index,
            pace,
            self.tx.clone(),
        ));
        if let Some(old) = self.by_name.insert(name.to_string(), handle) {
            old.abort();
        }
    }

    fn stop(&mut self, name: &str) {
        if let Some(h) = self.by_name.remove(name) {
            h.abort();
        }
    }
}

/// The next index to block on after an answer at `got` when blocking on
/// `index`; `None` when the answer is news to send.
fn next_index(index: u64, got: u64) -> (u64, bool) {
    if index > 0 && got < index {
        // Went backwards (a restarted or restored server): start over.
        return (0, false);
    }
    let news = index == 0 || got > index;
    (got.max(1), news)
}

async fn poll_catalog(client: Client, mut index: u64, mut pace: Pace, tx: mpsc::Sender<Msg>) {
    loop {
        pace.ready().await;
        let msg = match client.catalog_services(index).await {
            Err(e) => Msg::Failed(e),
            Ok(answer) => match next_index(index, answer.index) {
                (0, _) => Msg::CatalogIndexWentBack {
                    from: index,
                    to: answer.index,
                },
                (next, news) => {
                    index = next;
                    if !news {
                        continue;
                    }
                    Msg::Catalog(answer)
                }
            },
        };
        let stop = matches!(msg, Msg::Failed(_) | Msg::CatalogIndexWentBack { .. });
        if tx.send(msg).await.is_err() || stop {
            return;
        }
    }
}

async fn poll_service(
    client: Client,
    name: String,
    mut index: u64,
    mut pace: Pace,
    tx: mpsc::Sender<Msg>,
) {
    loop {
        pace.ready().await;
        match client.health_service(&name, index).await {
            Err(e) => {
                let _ = tx.send(Msg::Failed(e)).await;
                return;
            }
            Ok(answer) => {
                let (next, news) = next_index(index, answer.index);
                if next == 0 {
                    tracing::debug!(service = %name, from = index, to = answer.index, "consul index went back; rereading");
                }
                index = next;
                if news {
                    let name = name.clone();
                    if tx.send(Msg::Health { name, answer }).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Spaces the queries of one long-poll: at least `min` between starts, plus
/// a random `0..=jitter`.
#[derive(Debug, Clone)]
struct Pace {
    min: Duration,
    jitter: Duration,
    last: Option<Instant>,
}

impl Pace {
    async fn ready(&mut self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + self.min).await;
        }
        if !self.jitter.is_zero() {
            let j = rand::rng().random_range(Duration::ZERO..=self.jitter);
            tokio::time::sleep(j).await;
        }
        self.last = Some(Instant::now());
    }
}

/// The interest channel, if any; without one the interest stays empty.
struct InterestFeed(Option<watch::Receiver<Interest>>);

impl InterestFeed {
    fn current(&mut self) -> Interest {
        match &mut self.0 {
            Some(rx) => rx.borrow_and_update().clone(),
            None => Interest::default(),
        }
    }

    /// Resolves when the interest changes; never once the sender is gone.
    async fn changed(&mut self) {
        match &mut self.0 {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    self.0 = None;
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

fn log_status(status: &SourceStatus) {
    if let SourceStatus::Degraded { message } = status {
        tracing::warn!(problem = %message, "consul registry: instances skipped");
    }
}

#[async_trait]
impl Registry for ConsulRegistry {
    fn source(&self) -> &SourceId {
        &self.source
    }

    /// Syncs and follows until the task is cancelled or the catalog closes.
    /// Never returns on a Consul error: see the module docs.
    async fn run(&self, sink: ChangeSink) {
        let dc = self.datacenter.as_deref().unwrap_or("(agent's)");
        let span = tracing::info_span!("registry", source = %self.source, datacenter = dc);
        async {
            tracing::info!(address = %self.config.address, "consul registry started");
            tokio::select! {
                _ = self.follow(&sink) => {}
                () = sink.closed() => {}
            }
            tracing::info!("catalog closed; consul registry stopping");
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn indexes_move_forward_reset_when_going_back_and_never_rest_at_zero() {
        assert_eq!(next_index(0, 12), (12, true), "a first read is news");
        assert_eq!(next_index(12, 12), (12, false), "wait ran out: no churn");
        assert_eq!(next_index(12, 15), (15, true));
        assert_eq!(next_index(15, 3), (0, false), "backwards: start over");
        assert_eq!(next_index(0, 0), (1, true), "zero is read as one");
    }

    #[tokio::test(start_paused = true)]
    async fn pace_keeps_queries_apart() {
        let mut p = Pace {
            min: Duration::from_millis(500),
            jitter: Duration::ZERO,
            last: None,
        };
        let t0 = Instant::now();
        p.ready().await;
        assert_eq!(Instant::now(), t0, "the first query goes at once");
        p.ready().await;
        assert!(Instant::now() - t0 >= Duration::from_millis(500));
    }
}
