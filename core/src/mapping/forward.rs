//! Putting a [`Mapping`] between an adapter and the catalog.
//!
//! ```text
//!   adapter ──ChangeSink──▶ channel ──▶ Forwarder::step ──ChangeSink──▶ catalog
//!                                       (map, track problems, status)
//! ```
//!
//! The forwarder remembers which items failed to map, so the source shows as
//! `Degraded` (naming them) while any fail and goes back to the adapter's own
//! status once they map again. An adapter `Error` is passed on unchanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};

use super::{endpoint_item, merge_aliases, Mapping, MappingError};
use crate::model::{Hostname, Service, SourceId};
use crate::registry::{CatalogClosed, Change, ChangeSink, Registry, SourceStatus};

/// How many failing items a degraded status names before "and N more".
const NAMED_PROBLEMS: usize = 3;

/// The mapping state between one adapter and the catalog.
pub(super) struct Forwarder {
    mapping: Arc<Mapping>,
    /// The adapter's own last status (a Reset counts as reachable).
    upstream: SourceStatus,
    /// The last status sent on, if any.
    reported: Option<SourceStatus>,
    /// Items that currently fail to map, with why.
    problems: BTreeMap<String, String>,
    /// Service declarations sent on (declared or carrying aliases only).
    services: HashMap<Hostname, Service>,
}

impl Forwarder {
    pub(super) fn new(mapping: Arc<Mapping>) -> Self {
        Self {
            mapping,
            upstream: SourceStatus::Healthy,
            reported: None,
            problems: BTreeMap::new(),
            services: HashMap::new(),
        }
    }

    fn note(&mut self, problems: Vec<MappingError>) {
        for p in problems {
            let item = p.item().unwrap_or("mapping").to_string();
            let msg = p.to_string();
            self.problems
                .entry(item)
                .and_modify(|m| {
                    m.push_str("; ");
                    m.push_str(&msg)
                })
                .or_insert(msg);
        }
    }

    /// Maps one change from the adapter into the changes to send on.
    pub(super) fn step(&mut self, change: Change) -> Vec<Change> {
        let mut out = Vec::new();
        let is_status = matches!(change, Change::Status(_));
        match change {
            Change::Reset(view) => {
                let (mapped, problems) = self.mapping.apply(Change::Reset(view));
                self.problems.clear();
                self.note(problems);
                if let Some(Change::Reset(v)) = &mapped {
                    self.services = v
                        .services
                        .iter()
                        .map(|s| (s.hostname.clone(), s.clone()))
                        .collect();
                }
                if matches!(self.upstream, SourceStatus::Error { .. }) {
                    self.upstream = SourceStatus::Healthy;
                }
                out.extend(mapped);
            }
            Change::UpsertEndpoint(ep) if !self.mapping.is_identity() => {
                let item = endpoint_item(&ep);
                let key = ep.key();
                self.problems.remove(&item);
                match self.mapping.map_endpoint(ep) {
                    Ok(m) => {
                        self.note(m.problems);
                        let host = m.endpoint.service.clone();
                        if !m.aliases.is_empty() {
                            let svc =
                                self.services
                                    .entry(host.clone())
                                    .or_insert_with(|| Service {
                                        hostname: host.clone(),
                                        aliases: Vec::new(),
                                        ports: Vec::new(),
                                    });
                            if merge_aliases(&mut svc.aliases, m.aliases, &host) {
                                out.push(Change::UpsertService(svc.clone()));
                            }
                        }
                        out.push(Change::UpsertEndpoint(m.endpoint));
                    }
                    Err(e) => {
                        self.note(vec![e]);
                        out.push(Change::RemoveEndpoint(key));
                    }
                }
            }
            Change::RemoveEndpoint(key) => {
                self.problems.remove(&format!("endpoint {key}"));
                out.push(Change::RemoveEndpoint(key));
            }
            Change::UpsertService(svc) => {
                self.problems.remove(&format!("service {}", svc.hostname));
                let (mapped, problems) = self.mapping.apply(Change::UpsertService(svc));
                self.note(problems);
                if let Some(Change::UpsertService(mut svc)) = mapped {
                    if let Some(had) = self.services.get(&svc.hostname) {
                        // Keep aliases that endpoint labels gave it.
                        let host = svc.hostname.clone();
                        merge_aliases(&mut svc.aliases, had.aliases.iter().cloned(), &host);
                    }
                    self.services.insert(svc.hostname.clone(), svc.clone());
                    out.push(Change::UpsertService(svc));
                }
            }
            Change::RemoveService(name) => {
                self.problems.remove(&format!("service {name}"));
                let (mapped, problems) = self.mapping.apply(Change::RemoveService(name));
                self.note(problems);
                if let Some(Change::RemoveService(host)) = &mapped {
                    self.services.remove(host);
                }
                out.extend(mapped);
            }
            Change::Status(status) => self.upstream = status,
            other => out.push(other),
        }
        let status = self.status();
        let unreported_clean = self.reported.is_none() && self.problems.is_empty();
        if is_status || (self.reported.as_ref() != Some(&status) && !unreported_clean) {
            self.reported = Some(status.clone());
            out.push(Change::Status(status));
        }
        out
    }

    /// The adapter's status with mapping problems folded in.
    fn status(&self) -> SourceStatus {
        if self.problems.is_empty() {
            return self.upstream.clone();
        }
        let mut msg = format!("mapping skipped parts of {} item(s): ", self.problems.len());
        let named: Vec<&str> = self
            .problems
            .values()
            .take(NAMED_PROBLEMS)
            .map(String::as_str)
            .collect();
        msg.push_str(&named.join("; "));
        if self.problems.len() > NAMED_PROBLEMS {
            msg.push_str(&format!(
                "; and {} more",
                self.problems.len() - NAMED_PROBLEMS
            ));
        }
        match &self.upstream {
            SourceStatus::Error { .. } => self.upstream.clone(),
            SourceStatus::Healthy => SourceStatus::Degraded { message: msg },
            SourceStatus::Degraded { message } => SourceStatus::Degraded {
                message: format!("{message}; {msg}"),
            },
        }
    }
}

/// A [`ChangeSink`] that maps every change before it reaches the catalog.
pub struct MappedSink {
    inner: ChangeSink,
    state: Mutex<Forwarder>,
}

impl MappedSink {
    pub fn new(inner: ChangeSink, mapping: Arc<Mapping>) -> Self {
        Self {
            inner,
            state: Mutex::new(Forwarder::new(mapping)),
        }
    }

    pub fn source(&self) -> &SourceId {
        self.inner.source()
    }

    /// Maps and sends a change (plus any status it implies), in order.
    pub async fn send(&self, change: Change) -> Result<(), CatalogClosed> {
        // The lock is held across the sends so concurrent callers keep order.
        let mut state = self.state.lock().await;
        for c in state.step(change) {
            self.inner.send(c).await?;
        }
        Ok(())
    }

    /// Resolves when the catalog has stopped.
    pub async fn closed(&self) {
        self.inner.closed().await
    }
}

/// A [`Registry`] whose changes pass through a [`Mapping`]: the binary wraps
/// each adapter once, adapters stay unaware of mapping.
pub struct MappedRegistry {
    inner: Arc<dyn Registry>,
    mapping: Arc<Mapping>,
}

impl MappedRegistry {
    pub fn new(inner: Arc<dyn Registry>, mapping: Arc<Mapping>) -> Self {
        Self { inner, mapping }
    }

    /// Wraps `inner` unless the mapping changes nothing.
    pub fn wrap(inner: Arc<dyn Registry>, mapping: Arc<Mapping>) -> Arc<dyn Registry> {
        if mapping.is_identity() {
            inner
        } else {
            Arc::new(Self::new(inner, mapping))
        }
    }
}

/// Changes buffered between the adapter and the mapping step.
const CHANNEL: usize = 64;

#[async_trait]
impl Registry for MappedRegistry {
    fn source(&self) -> &SourceId {
        self.inner.source()
    }

    /// Runs the adapter into a private channel and forwards each mapped
    /// change; stops when the adapter stops (after forwarding what it sent)
    /// or the catalog closes (which drops the adapter's run).
    async fn run(&self, sink: ChangeSink) {
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let inner_sink = ChangeSink::new(sink.source().clone(), tx);
        let mapped = MappedSink::new(sink, self.mapping.clone());
        let forward = async {
            loop {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(sc) => if mapped.send(sc.change).await.is_err() { break },
                        None => break,
                    },
                    _ = mapped.closed() => break,
                }
            }
        };
        let run = self.inner.run(inner_sink);
        tokio::pin!(forward, run);
        tokio::select! {
            _ = &mut forward => {}
            _ = &mut run => forward.await,
        }
    }
}
