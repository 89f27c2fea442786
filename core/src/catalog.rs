//! The aggregate catalog: every source's view, merged by mesh hostname.
//!
//! [`CatalogState`] is a plain value: [`CatalogState::apply`] folds one change
//! in, [`CatalogState::snapshot`] merges all sources into an immutable
//! [`Snapshot`]. [`run`] drives it from the adapters' channel and publishes a
//! new snapshot on a `watch` channel after each batch of changes.
//!
//! A source that reports an error keeps its last good view, marked stale; only
//! a `Reset` (a successful list) replaces it.
//!
//! A name belongs to one service. A service's hostname always wins over
//! another service's alias; an alias two services claim goes to the one from
//! the higher-precedence source, then to the alphabetically first hostname.
//! The losers are listed in [`Snapshot::alias_conflicts`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::model::{Endpoint, EndpointKey, Hostname, Service, ServicePort, SourceId};
use crate::registry::{Change, SourceStatus, SourceView, SourcedChange};

/// One source's view plus its bookkeeping.
#[derive(Debug, Clone)]
struct SourceState {
    services: BTreeMap<Hostname, Service>,
    /// What the registry lists now.
    /// Shared with the snapshots, which then copy pointers, not endpoints.
    endpoints: BTreeMap<Arc<str>, Arc<Endpoint>>,
    /// The ids in `endpoints` of each service, so a change to one service
    /// touches only that service's endpoints.
    by_service: HashMap<Hostname, BTreeSet<Arc<str>>>,
    /// Removed by the registry but still served (mass-deregistration guard).
    held: BTreeMap<Arc<str>, guard::Held>,
    guard: Option<GuardSettings>,
    info: SourceInfo,
}

mod guard;
mod merge;
pub use guard::GuardSettings;
pub use merge::{ChangeLog, Changed};

/// What the admin listener shows about a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    pub source: SourceId,
    /// Has this source ever delivered a full list?
    pub synced: bool,
    pub connected: bool,
    /// Set while the last good view is being served despite errors.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub stale_since: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub last_full_sync: Option<SystemTime>,
    pub change_count: u64,
    pub services: usize,
    pub endpoints: usize,
    /// Endpoints the registry removed that the guard still serves.
    #[serde(skip_serializing_if = "is_zero")]
    pub held_endpoints: usize,
    /// When the oldest current hold began.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub held_since: Option<SystemTime>,
    /// Set while the view is one saved before a restart (fail-static), not
    /// yet confirmed by the registry: when it was saved.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub restored_from: Option<SystemTime>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

mod opt_time {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

impl SourceState {
    /// Endpoints served: the registry's plus held ones.
    fn served(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints
            .values()
            .chain(self.held.values().map(|h| &h.endpoint))
    }

    /// Endpoints served for one service, in the order of [`served`](Self::served).
    fn served_of<'s>(&'s self, host: &Hostname) -> impl Iterator<Item = &'s Arc<Endpoint>> + 's {
        let registry = self
            .by_service
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|id| self.endpoints.get(id));
        let host = host.clone();
        registry.chain(
            self.held
                .values()
                .map(|h| &h.endpoint)
                .filter(move |e| e.service == host),
        )
    }

    /// Every hostname this source declares or serves endpoints for.
    fn hosts(&self) -> impl Iterator<Item = &Hostname> {
        self.services
            .keys()
            .chain(self.by_service.keys())
            .chain(self.held.values().map(|h| &h.endpoint.service))
    }

    /// Adds or replaces an endpoint, keeping `by_service` in step.
    fn put_endpoint(&mut self, id: Arc<str>, ep: Arc<Endpoint>) {
        self.by_service
            .entry(ep.service.clone())
            .or_default()
            .insert(id.clone());
        if let Some(old) = self.endpoints.insert(id.clone(), ep) {
            self.unindex(&old.service, &id);
        }
    }

    fn take_endpoint(&mut self, id: &str) -> Option<Arc<Endpoint>> {
        let (id, old) = self.endpoints.remove_entry(id)?;
        self.unindex(&old.service, &id);
        Some(old)
    }

    /// Drops `id` from `service`'s index unless the endpoint now lives there.
    fn unindex(&mut self, service: &Hostname, id: &Arc<str>) {
        if self
            .endpoints
            .get(id)
            .is_some_and(|e| &e.service == service)
        {
            return;
        }
        if let Some(ids) = self.by_service.get_mut(service) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_service.remove(service);
            }
        }
    }

    fn set_endpoints(&mut self, endpoints: BTreeMap<Arc<str>, Arc<Endpoint>>) {
        self.by_service.clear();
        for (id, e) in &endpoints {
            self.by_service
                .entry(e.service.clone())
                .or_default()
                .insert(id.clone());
        }
        self.endpoints = endpoints;
    }

    /// (id, service) of every held endpoint.
    fn held_ids(&self) -> Vec<(Arc<str>, Hostname)> {
        self.held
            .iter()
            .map(|(id, h)| (id.clone(), h.endpoint.service.clone()))
            .collect()
    }

    fn refresh_counts(&mut self) {
        self.info.services = self.services.len();
        self.info.endpoints = self.endpoints.len();
        self.info.held_endpoints = self.held.len();
        self.info.held_since = self.held.values().map(|h| h.since).min();
    }

    /// Services whose endpoints `change` may remove.
    fn affected_services(&self, change: &Change) -> Vec<Hostname> {
        let mut out: Vec<Hostname> = match change {
            Change::Reset(_) => self.served().map(|e| e.service.clone()).collect(),
            Change::RemoveService(h) => vec![h.clone()],
            Change::RemoveEndpoint(key) => self
                .endpoints
                .get(&key.native_id)
                .map(|e| e.service.clone())
                .into_iter()
                .collect(),
            // An upsert can move an endpoint to another service.
            Change::UpsertEndpoint(ep) => self
                .endpoints
                .get(ep.provenance.native_id.as_str())
                .filter(|old| old.service != ep.service)
                .map(|old| old.service.clone())
                .into_iter()
                .collect(),
            Change::UpsertService(_) | Change::Status(_) => Vec::new(),
        };
        out.sort();
        out.dedup();
        out
    }

    fn new(source: SourceId) -> Self {
        Self {
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            by_service: HashMap::new(),
            held: BTreeMap::new(),
            guard: None,
            info: SourceInfo {
                source,
                synced: false,
                connected: false,
                stale_since: None,
                last_error: None,
                last_full_sync: None,
                change_count: 0,
                services: 0,
                endpoints: 0,
                held_endpoints: 0,
                held_since: None,
                restored_from: None,
            },
        }
    }
}

/// A service after merging every source that declares it or has endpoints for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedService {
    pub hostname: Hostname,
    /// The aliases this service answers to: those it declares, less any that
    /// another service has (see [`Snapshot::alias_conflicts`]).
    pub aliases: Vec<Hostname>,
    pub ports: Vec<ServicePort>,
    /// Sources that contributed, in precedence order.
    pub sources: Vec<SourceId>,
    /// The union of all sources' endpoints, duplicates removed.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Endpoints dropped because a higher-precedence source has the same address and port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<Shadowed>,
}

/// An endpoint hidden by a duplicate from a source of higher precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadowed {
    pub endpoint: EndpointKey,
    pub by: EndpointKey,
}

/// An alias a service declares but does not get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasConflict {
    pub alias: Hostname,
    /// The service that declares the alias and loses it.
    pub service: Hostname,
    /// The highest-precedence source that declares it for that service.
    pub source: SourceId,
    pub loss: AliasLoss,
}

/// Who has the name an [`AliasConflict`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasLoss {
    /// The alias is a service's hostname; that service keeps it.
    IsHostname,
    /// Another service claims it too and wins: its source has higher
    /// precedence, or the same source and its hostname sorts first.
    ClaimedBy(Hostname),
}

impl fmt::Display for AliasConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (alias, service) = (&self.alias, &self.service);
        match &self.loss {
            AliasLoss::IsHostname => write!(
                f,
                "alias '{alias}' of service '{service}' is ignored: '{alias}' is a service's hostname"
            ),
            AliasLoss::ClaimedBy(winner) => write!(
                f,
                "alias '{alias}' is claimed by services '{winner}' and '{service}'; '{winner}' wins"
            ),
        }
    }
}

/// An immutable, versioned view of the whole catalog.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub version: u64,
    /// A persistent map: snapshots share every service they did not change.
    pub services: imbl::OrdMap<Hostname, Arc<MergedService>>,
    /// Every alias, mapped to the hostname of its service. Never a name that
    /// is itself a service's hostname.
    #[serde(skip)]
    pub aliases: HashMap<Hostname, Hostname>,
    /// Aliases declared but not granted, in alias then service order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alias_conflicts: Vec<AliasConflict>,
    pub sources: Vec<SourceInfo>,
    /// Which services changed in the last few versions (see
    /// [`Snapshot::changed_since`]).
    #[serde(skip)]
    pub changes: ChangeLog,
}

impl Snapshot {
    /// Looks a service up by hostname or alias.
    pub fn service(&self, host: &Hostname) -> Option<&Arc<MergedService>> {
        self.services
            .get(host)
            .or_else(|| self.aliases.get(host).and_then(|h| self.services.get(h)))
    }

    /// Are all sources synced at least once (or serving a last good view)?
    pub fn all_synced(&self) -> bool {
        self.sources.iter().all(|s| s.synced)
    }
}

/// All sources' views, in precedence order (first = highest).
#[derive(Debug, Clone, Default)]
pub struct CatalogState {
    sources: Vec<SourceState>,
    /// Hostnames whose merged service may differ from the last published one.
    dirty: BTreeSet<Hostname>,
    /// What [`publish`](Self::publish) built last, to build the next from.
    published: Option<merge::Published>,
}

impl CatalogState {
    /// Creates a catalog expecting these sources, highest precedence first.
    pub fn new(sources: impl IntoIterator<Item = SourceId>) -> Self {
        Self {
            sources: sources.into_iter().map(SourceState::new).collect(),
            dirty: BTreeSet::new(),
            published: None,
        }
    }

    /// Turns the mass-deregistration guard on for `source` (off by default).
    pub fn with_guard(mut self, source: &SourceId, guard: GuardSettings) -> Self {
        self.source_mut(source).guard = Some(guard);
        self
    }

    /// Seeds `source` with a view saved before a restart: served, but marked
    /// stale (`restored_from`) until the registry's own first list replaces it.
    pub fn restore(
        &mut self,
        source: &SourceId,
        view: SourceView,
        saved_at: SystemTime,
        now: SystemTime,
    ) {
        self.apply(SourcedChange {
            source: source.clone(),
            change: Change::Reset(view),
            at: now,
        });
        let src = self.source_mut(source);
        src.info.connected = false;
        src.info.stale_since = Some(now);
        src.info.last_full_sync = None;
        src.info.restored_from = Some(saved_at);
    }

    /// The sources, in precedence order.
    pub fn sources(&self) -> impl Iterator<Item = &SourceId> {
        self.sources.iter().map(|s| &s.info.source)
    }

    /// The view `source` serves now (its registry's, plus held endpoints).
    pub fn source_view(&self, source: &SourceId) -> Option<SourceView> {
        let src = self.sources.iter().find(|s| &s.info.source == source)?;
        Some(SourceView {
            services: src.services.values().cloned().collect(),
            endpoints: src.served().map(|e| (**e).clone()).collect(),
        })
    }

    /// What the catalog knows about `source`.
    pub fn source_info(&self, source: &SourceId) -> Option<&SourceInfo> {
        self.sources
            .iter()
            .find(|s| &s.info.source == source)
            .map(|s| &s.info)
    }

    /// When the earliest guard hold ends, if any.
    pub fn next_guard_expiry(&self) -> Option<SystemTime> {
        self.sources
            .iter()
            .filter_map(|s| guard::next_expiry(s.guard.as_ref(), &s.held))
            .min()
    }

    /// Ends guard holds whose grace period is over at `now`. Returns whether
    /// anything visible changed.
    pub fn expire_guard(&mut self, now: SystemTime) -> bool {
        let mut changed = false;
        for src in &mut self.sources {
            let before = src.held_ids();
            if guard::expire(src.guard.as_ref(), &src.info.source, &mut src.held, now) {
                self.dirty.extend(
                    before
                        .into_iter()
                        .filter(|(id, _)| !src.held.contains_key(id))
                        .map(|(_, host)| host),
                );
                src.refresh_counts();
                changed = true;
            }
        }
        changed
    }

    fn source_mut(&mut self, id: &SourceId) -> &mut SourceState {
        let idx = self.source_index(id);
        &mut self.sources[idx]
    }

    /// The index of `id`, added (lowest precedence) if unknown.
    fn source_index(&mut self, id: &SourceId) -> usize {
        match self.sources.iter().position(|s| &s.info.source == id) {
            Some(i) => i,
            None => {
                self.sources.push(SourceState::new(id.clone()));
                self.sources.len() - 1
            }
        }
    }

    /// Folds one change in. Returns whether anything visible changed.
    pub fn apply(&mut self, change: SourcedChange) -> bool {
        let idx = self.source_index(&change.source);
        let src = &mut self.sources[idx];
        let dirty = &mut self.dirty;
        let before_info = src.info.clone();
        let affected = src.affected_services(&change.change);
        let before =
            guard::served_by_service(&src.endpoints, &src.by_service, &src.held, &affected);
        let held_before = src.held_ids();
        match &change.change {
            Change::Reset(view) => {
                dirty.extend(src.hosts().cloned());
                dirty.extend(view.services.iter().map(|s| s.hostname.clone()));
                dirty.extend(view.endpoints.iter().map(|e| e.service.clone()));
            }
            Change::UpsertService(svc) => {
                dirty.insert(svc.hostname.clone());
            }
            Change::RemoveService(host) => {
                dirty.insert(host.clone());
            }
            Change::UpsertEndpoint(ep) => {
                dirty.insert(ep.service.clone());
                let old = src.endpoints.get(ep.provenance.native_id.as_str());
                dirty.extend(old.map(|e| e.service.clone()));
            }
            Change::RemoveEndpoint(key) => {
                let old = src.endpoints.get(&key.native_id);
                dirty.extend(old.map(|e| e.service.clone()));
            }
            Change::Status(_) => {}
        }
        let mut data_changed = false;
        match change.change {
            Change::Reset(SourceView {
                services,
                endpoints,
            }) => {
                let services: BTreeMap<_, _> = services
                    .into_iter()
                    .map(|s| (s.hostname.clone(), s))
                    .collect();
                let endpoints: BTreeMap<_, _> = endpoints
                    .into_iter()
                    .map(|e| (Arc::from(e.provenance.native_id.as_str()), Arc::new(e)))
                    .collect();
                data_changed = services != src.services || endpoints != src.endpoints;
                src.services = services;
                src.set_endpoints(endpoints);
                src.info.synced = true;
                src.info.connected = true;
                src.info.stale_since = None;
                src.info.last_error = None;
                src.info.last_full_sync = Some(change.at);
                src.info.restored_from = None;
            }
            Change::UpsertService(svc) => {
                let prev = src.services.insert(svc.hostname.clone(), svc.clone());
                data_changed = prev.as_ref() != Some(&svc);
            }
            Change::RemoveService(host) => {
                let had = src.services.remove(&host).is_some();
                let ids = src.by_service.remove(&host).unwrap_or_default();
                for id in &ids {
                    src.endpoints.remove(id);
                }
                data_changed = had || !ids.is_empty();
            }
            Change::UpsertEndpoint(ep) => {
                let key: Arc<str> = Arc::from(ep.provenance.native_id.as_str());
                data_changed = src.endpoints.get(&key).is_none_or(|old| **old != ep);
                if data_changed {
                    src.put_endpoint(key, Arc::new(ep));
                }
            }
            Change::RemoveEndpoint(key) => {
                data_changed = src.take_endpoint(&key.native_id).is_some();
            }
            Change::Status(SourceStatus::Healthy) => {
                src.info.connected = true;
                src.info.stale_since = None;
                src.info.last_error = None;
            }
            Change::Status(SourceStatus::Degraded { message }) => {
                src.info.connected = true;
                src.info.stale_since = None;
                src.info.last_error = Some(message);
            }
            Change::Status(SourceStatus::Error { message }) => {
                src.info.connected = false;
                src.info.stale_since.get_or_insert(change.at);
                src.info.last_error = Some(message);
            }
        }
        if !affected.is_empty() {
            data_changed |= guard::reconcile(
                src.guard.as_ref(),
                &src.info.source,
                before,
                &src.endpoints,
                &src.by_service,
                &mut src.held,
                change.at,
            );
        }
        // Holds that began or ended change their services too.
        if held_before.len() != src.held.len()
            || held_before.iter().any(|(id, _)| !src.held.contains_key(id))
        {
            dirty.extend(held_before.into_iter().map(|(_, h)| h));
            dirty.extend(src.held.values().map(|h| h.endpoint.service.clone()));
        }
        if data_changed {
            src.info.change_count += 1;
        }
        src.refresh_counts();
        data_changed || src.info != before_info
    }
}

/// Applies changes from `rx` and publishes a snapshot after each batch.
/// Returns when every sender is gone.
pub async fn run(
    state: CatalogState,
    rx: mpsc::Receiver<SourcedChange>,
    tx: watch::Sender<Arc<Snapshot>>,
) {
    run_with(state, rx, tx, |_| {}).await
}

/// [`run`], calling `after_publish` with the state after each published
/// snapshot (e.g. to persist each source's view).
pub async fn run_with(
    mut state: CatalogState,
    mut rx: mpsc::Receiver<SourcedChange>,
    tx: watch::Sender<Arc<Snapshot>>,
    mut after_publish: impl FnMut(&CatalogState) + Send,
) {
    let mut version = tx.borrow().version;
    loop {
        let expiry = state.next_guard_expiry();
        let hold_ends = async {
            match expiry {
                Some(at) => {
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending().await,
            }
        };
        let changed = tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { return };
                let mut changed = state.apply(first);
                // Fold whatever else is already queued into the same snapshot.
                while let Ok(next) = rx.try_recv() {
                    changed |= state.apply(next);
                }
                changed
            }
            () = hold_ends => state.expire_guard(SystemTime::now()),
        };
        if changed {
            version += 1;
            let snap = state.publish(version);
            tracing::debug!(
                version,
                services = snap.services.len(),
                "catalog snapshot published"
            );
            tx.send_replace(Arc::new(snap));
            after_publish(&state);
        }
    }
}

#[cfg(test)]
mod tests;
