//! The contract between registry adapters and the catalog.
//!
//! An adapter implements [`Registry`]; its `run` loop lists the registry, sends
//! [`Change::Reset`] with everything it saw, then streams incremental changes.
//! Errors are reported with [`Change::Status`] and never end the loop: the
//! catalog keeps the source's last good view (marked stale) until the next
//! successful list.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::model::{Endpoint, EndpointKey, Hostname, Service, SourceId};

/// Everything one source knows at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceView {
    pub services: Vec<Service>,
    pub endpoints: Vec<Endpoint>,
}

/// What an adapter reports about its connection to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SourceStatus {
    /// Connected and in sync.
    Healthy,
    /// The registry could not be read; the last good view stays in force.
    Error { message: String },
    /// Connected and in sync, but some of the registry's entries were
    /// skipped as invalid (`message` names them). The view is current, not stale.
    Degraded { message: String },
}

/// One change from one source.
// An endpoint upsert is the common change and the largest variant; boxing
// it would allocate once more per change for a channel that holds few.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Replace this source's whole view (after a (re)list).
    Reset(SourceView),
    UpsertService(Service),
    /// Removes the service declaration and this source's endpoints of it.
    RemoveService(Hostname),
    UpsertEndpoint(Endpoint),
    /// Removing an endpoint the catalog does not know is harmless.
    RemoveEndpoint(EndpointKey),
    Status(SourceStatus),
}

/// A source's whole view as adapters keep it: services by hostname,
/// endpoints by native id.
#[derive(Debug, Clone, Copy)]
pub struct ViewMaps<'a> {
    pub services: &'a BTreeMap<Hostname, Service>,
    pub endpoints: &'a BTreeMap<String, Endpoint>,
}

impl ViewMaps<'_> {
    /// The changes that turn `self` into `new`: services declared first,
    /// removed last, so no endpoint is ever without its service.
    pub fn diff(&self, new: &ViewMaps<'_>) -> Vec<Change> {
        let mut out = Vec::new();
        for (host, svc) in new.services {
            if self.services.get(host) != Some(svc) {
                out.push(Change::UpsertService(svc.clone()));
            }
        }
        for (key, ep) in self.endpoints {
            if !new.endpoints.contains_key(key) {
                out.push(Change::RemoveEndpoint(EndpointKey {
                    source: ep.provenance.source.clone(),
                    native_id: key.as_str().into(),
                }));
            }
        }
        for (key, ep) in new.endpoints {
            if self.endpoints.get(key) != Some(ep) {
                out.push(Change::UpsertEndpoint(ep.clone()));
            }
        }
        for host in self.services.keys() {
            if !new.services.contains_key(host) {
                out.push(Change::RemoveService(host.clone()));
            }
        }
        out
    }
}

/// A change tagged with the source that sent it.
#[derive(Debug, Clone)]
pub struct SourcedChange {
    pub source: SourceId,
    pub change: Change,
    pub at: SystemTime,
}

/// The catalog has stopped; the adapter should stop too.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("catalog closed")]
pub struct CatalogClosed;

/// Where an adapter sends its changes. Cheap to clone; tagged with the source.
#[derive(Debug, Clone)]
pub struct ChangeSink {
    source: SourceId,
    tx: mpsc::Sender<SourcedChange>,
}

impl ChangeSink {
    pub fn new(source: SourceId, tx: mpsc::Sender<SourcedChange>) -> Self {
        Self { source, tx }
    }

    pub fn source(&self) -> &SourceId {
        &self.source
    }

    /// Sends a change, waiting if the catalog is behind (back-pressure).
    pub async fn send(&self, change: Change) -> Result<(), CatalogClosed> {
        self.tx
            .send(SourcedChange {
                source: self.source.clone(),
                change,
                at: SystemTime::now(),
            })
            .await
            .map_err(|_| CatalogClosed)
    }

    /// Resolves when the catalog has stopped; adapters idle in a watch can
    /// `select!` on it to stop promptly.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Reports an error: the source's last good view stays, marked stale.
    pub async fn error(&self, message: impl Into<String>) -> Result<(), CatalogClosed> {
        self.send(Change::Status(SourceStatus::Error {
            message: message.into(),
        }))
        .await
    }
}

/// A registry adapter.
#[async_trait]
pub trait Registry: Send + Sync {
    fn source(&self) -> &SourceId;

    /// Runs until the task is cancelled or the sink closes. Errors are reported
    /// through the sink, never final: the adapter backs off and resumes. After
    /// every (re)list it sends [`Change::Reset`].
    async fn run(&self, sink: ChangeSink);
}
