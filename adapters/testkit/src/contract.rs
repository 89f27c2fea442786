//! The adapter contract: what every registry adapter must do, checked the
//! same way for each.
//!
//! An adapter's test implements [`ContractHarness`] (how to start the adapter
//! and how to change, break and heal its registry) and calls [`run`]. The
//! contract:
//!
//! 1. The first change after start is a `Reset` with what the registry holds.
//! 2. Adds and removes arrive.
//! 3. Removing what was never there is harmless; the stream goes on.
//! 4. An outage produces an error `Status`, repeatedly while it lasts, and no
//!    `Reset`: the catalog keeps the last good view, marked stale.
//! 5. After recovery a `Reset` arrives that reflects the changes made during
//!    the outage (a relist), and changes flow again.
//! 6. Errors never end the stream: `run` is still running at the end.
//!
//! [`Observer`] runs a registry over a channel, folds what it sends into a
//! [`CatalogState`] and waits for conditions with deadlines; adapters use it in
//! their own tests too.

use std::sync::Arc;
use std::time::Duration;

use anymesh_core::{
    CatalogState, Change, ChangeSink, Hostname, Labels, Registry, SourceId, SourceStatus,
    SourcedChange,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long any one expected change may take to arrive.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How a contract test drives one adapter and its registry.
// Test-only trait used in one task; callers never need `Send` futures.
#[allow(async_fn_in_trait)]
pub trait ContractHarness {
    /// Starts the adapter under test (not its `run`): it must see everything
    /// added before.
    async fn start_registry(&self) -> Arc<dyn Registry>;
    /// Registers instance `id` of `service` at `address:port` with `labels`.
    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels);
    /// Deregisters instance `id` of `service` (which may not exist).
    async fn remove(&self, service: &str, id: &str);
    /// Cuts the adapter off from its registry. `add` and `remove` keep working
    /// (on the registry's side) until [`recover`](Self::recover).
    async fn outage(&self);
    /// Reconnects the adapter's registry.
    async fn recover(&self);
}

/// Runs the contract against one adapter; panics on the first violation.
pub async fn run<H: ContractHarness>(h: &H) {
    let v1 = Labels::from([("version".to_string(), "v1".to_string())]);
    let none = Labels::new();
    h.add("alpha", "a1", "127.0.0.1", 8001, &v1).await;
    h.add("alpha", "a2", "127.0.0.2", 8001, &v1).await;
    let mut obs = Observer::start(h.start_registry().await);

    // 1. The first change is a Reset with what the registry holds.
    match obs.next().await {
        Change::Reset(view) => {
            let mut got: Vec<_> = view
                .endpoints
                .iter()
                .map(|e| (e.service.to_string(), e.address.clone(), e.labels.clone()))
                .collect();
            got.sort();
            assert_eq!(
                got,
                vec![
                    ("alpha".into(), "127.0.0.1".into(), v1.clone()),
                    ("alpha".into(), "127.0.0.2".into(), v1.clone()),
                ],
                "the first Reset must hold what the registry held"
            );
        }
        other => panic!("the first change must be a Reset, got {other:?}"),
    }
    obs.until("a healthy status", |c, _| is_healthy(c)).await;

    // 2. Adds and removes arrive.
    h.add("beta", "b1", "127.0.0.3", 8002, &none).await;
    obs.until_endpoints("beta", &[("127.0.0.3", 8002)]).await;
    h.remove("alpha", "a2").await;
    obs.until_endpoints("alpha", &[("127.0.0.1", 8001)]).await;

    // 3. An unknown remove is harmless and the stream goes on.
    h.remove("alpha", "never-added").await;
    h.add("gamma", "g1", "127.0.0.4", 8003, &none).await;
    obs.until_endpoints("gamma", &[("127.0.0.4", 8003)]).await;
    assert_eq!(obs.endpoints("alpha"), vec![("127.0.0.1".into(), 8001)]);

    // 4. An outage: errors, no Reset, the last good view stays (stale).
    h.outage().await;
    let seen = obs.until("an error status", |c, _| is_error(c)).await;
    assert_no_reset(&seen, "an outage");
    h.add("alpha", "a3", "127.0.0.5", 8001, &v1).await;
    h.remove("beta", "b1").await;
    let seen = obs
        .until("a second error status (retries go on)", |c, _| is_error(c))
        .await;
    assert_no_reset(&seen, "an outage");
    assert_eq!(obs.endpoints("alpha"), vec![("127.0.0.1".into(), 8001)]);
    assert_eq!(obs.endpoints("beta"), vec![("127.0.0.3".into(), 8002)]);
    assert_eq!(obs.endpoints("gamma"), vec![("127.0.0.4".into(), 8003)]);
    let info = obs.source_info();
    assert!(
        !info.connected && info.stale_since.is_some(),
        "during an outage the source is stale: {info:?}"
    );
    assert!(obs.is_running(), "an error must not end the adapter");

    // 5. Recovery: a Reset with the changes made meanwhile, then changes flow.
    h.recover().await;
    let seen = obs
        .until("a Reset after recovery", |c, _| {
            matches!(c, Change::Reset(_))
        })
        .await;
    assert!(
        !seen.iter().any(|c| matches!(c, Change::UpsertEndpoint(_))),
        "changes made during the outage must come with the relist's Reset, got {seen:?}"
    );
    assert_eq!(
        obs.endpoints("alpha"),
        vec![("127.0.0.1".into(), 8001), ("127.0.0.5".into(), 8001)]
    );
    assert_eq!(obs.endpoints("beta"), vec![], "removed during the outage");
    assert_eq!(obs.endpoints("gamma"), vec![("127.0.0.4".into(), 8003)]);
    obs.until("a healthy status after recovery", |c, _| is_healthy(c))
        .await;
    h.add("beta", "b2", "127.0.0.6", 8002, &none).await;
    obs.until_endpoints("beta", &[("127.0.0.6", 8002)]).await;

    // 6. The stream never ended and never reset to nothing.
    assert!(obs.is_running(), "the adapter must still be running");
    assert!(
        !obs.log
            .iter()
            .any(|c| matches!(c, Change::Reset(v) if v.endpoints.is_empty())),
        "no Reset may empty the source"
    );
}

fn is_healthy(c: &Change) -> bool {
    matches!(c, Change::Status(SourceStatus::Healthy))
}

fn is_error(c: &Change) -> bool {
    matches!(c, Change::Status(SourceStatus::Error { .. }))
}

fn assert_no_reset(seen: &[Change], during: &str) {
    if let Some(reset) = seen.iter().find(|c| matches!(c, Change::Reset(_))) {
        panic!("no Reset may arrive during {during}, got {reset:?}");
    }
}

/// Runs a registry with a channel sink and folds its changes into a catalog.
pub struct Observer {
    source: SourceId,
    rx: mpsc::Receiver<SourcedChange>,
    catalog: CatalogState,
    /// Every change received, in order.
    pub log: Vec<Change>,
    task: JoinHandle<()>,
}

impl Observer {
    /// Spawns `registry.run` with a sink feeding this observer.
    pub fn start(registry: Arc<dyn Registry>) -> Self {
        let source = registry.source().clone();
        let (tx, rx) = mpsc::channel(256);
        let sink = ChangeSink::new(source.clone(), tx);
        let task = tokio::spawn(async move { registry.run(sink).await });
        Self {
            catalog: CatalogState::new([source.clone()]),
            source,
            rx,
            log: Vec::new(),
            task,
        }
    }

    /// The next change, within [`DEADLINE`].
    pub async fn next(&mut self) -> Change {
        match tokio::time::timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(sc)) => {
                let change = sc.change.clone();
                self.catalog.apply(sc);
                self.log.push(change.clone());
                change
            }
            Ok(None) => panic!("the adapter stopped sending; log: {:#?}", self.log),
            Err(_) => panic!("no change within {DEADLINE:?}; log so far: {:#?}", self.log),
        }
    }

    /// Receives changes until `done(change, catalog)` holds (checked after the
    /// change is applied); returns them. Panics after [`DEADLINE`] naming `what`.
    pub async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Change, &CatalogState) -> bool,
    ) -> Vec<Change> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let recv = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let sc = match recv {
                Ok(Some(sc)) => sc,
                Ok(None) => panic!("the adapter stopped before {what}; saw {seen:#?}"),
                Err(_) => panic!("waited {DEADLINE:?} for {what}; saw {seen:#?}"),
            };
            let change = sc.change.clone();
            self.catalog.apply(sc);
            self.log.push(change.clone());
            seen.push(change);
            if let Some(last) = seen.last() {
                if done(last, &self.catalog) {
                    return seen;
                }
            }
        }
    }

    /// Waits until `service` has exactly `expected` endpoints (address, port);
    /// returns the changes received meanwhile.
    pub async fn until_endpoints(
        &mut self,
        service: &str,
        expected: &[(&str, u16)],
    ) -> Vec<Change> {
        let mut want: Vec<(String, u16)> =
            expected.iter().map(|(a, p)| (a.to_string(), *p)).collect();
        want.sort();
        if self.endpoints(service) == want {
            return Vec::new();
        }
        let what = format!("{service} to have endpoints {want:?}");
        let host = hostname(service);
        self.until(&what, |_, catalog| endpoints_of(catalog, &host) == want)
            .await
    }

    /// The endpoints of `service` in the folded catalog, as sorted (address, port).
    pub fn endpoints(&self, service: &str) -> Vec<(String, u16)> {
        endpoints_of(&self.catalog, &hostname(service))
    }

    /// The folded catalog.
    pub fn catalog(&self) -> &CatalogState {
        &self.catalog
    }

    /// What the catalog says about the observed source.
    pub fn source_info(&self) -> anymesh_core::catalog::SourceInfo {
        let snap = self.catalog.snapshot(0);
        match snap.sources.into_iter().find(|s| s.source == self.source) {
            Some(info) => info,
            None => panic!("the catalog does not know source {}", self.source),
        }
    }

    /// Whether the adapter's `run` is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hostname(service: &str) -> Hostname {
    match Hostname::new(service) {
        Ok(h) => h,
        Err(e) => panic!("test service name: {e}"),
    }
}

fn endpoints_of(catalog: &CatalogState, host: &Hostname) -> Vec<(String, u16)> {
    let snap = catalog.snapshot(0);
    let mut out: Vec<(String, u16)> = snap
        .services
        .get(host)
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.ports.first().map_or(0, |p| p.number)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
