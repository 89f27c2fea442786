//! [`KubernetesRegistry`]: watches Services, EndpointSlices, Pods and
//! Nodes with kube-runtime's [`watcher()`] and turns them into catalog
//! changes.
//!
//! ```text
//!   ┌──► client (in-cluster / kubeconfig / URL) ──err──────────────────────┐
//!   │       │                                                               │
//!   │       ▼  one watcher per resource and namespace scope                 │
//!   │    list ──► Init, InitApply…, InitDone ──► (all synced) Reset + status  │
//!   │       │                                                               │
//!   │       ▼  watch from the list's resourceVersion (bookmarks move it)    │
//!   │    Apply / Delete ──► the differences as upserts and removes          │
//!   │       │ 410 as an ERROR event: that watcher relists by itself ──► Reset │
//!   │       │ 410 as the watch request's status: quiet restart (relist all) │
//!   │       │ any other error                                               ▼
//!   └── backoff (capped, jittered) ◄─────── Error status (last good view stays)
//! ```
//!
//! Nothing reaches the catalog until every watcher has listed once, so the
//! first [`Reset`](Change::Reset) is whole; after an error every watcher is
//! restarted, so what changed during an outage arrives with the relist's
//! Reset rather than as a trickle of events.
//!
//! Nodes are optional: a `403` or `404` for them is logged once (with the
//! RBAC rule to grant), endpoints keep only their slice's zone, and the
//! nodes list is tried again every `backoff.max` without disturbing the
//! other watchers. Any other nodes error is handled like the others'.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anymesh_core::registry::CatalogClosed;
use anymesh_core::{Change, ChangeSink, Registry, SourceId, SourceStatus, SourceView, ViewMaps};
use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, metadata_watcher, watcher, Event};
use kube::{Api, Client, Resource};
use tracing::Instrument;

use crate::config::{Connection, KubernetesConfig};
use crate::error::KubernetesError;
use crate::mesh::PodInfo;
use crate::translate::{Derived, NodeTopology, Objects, Translator};
use anymesh_core::backoff::Backoff;

/// A registry reading Services and their endpoints from a Kubernetes
/// cluster (see the crate docs).
#[derive(Debug)]
pub struct KubernetesRegistry {
    source: SourceId,
    config: KubernetesConfig,
    translator: Translator,
}

/// One event from one of the watchers.
#[allow(clippy::large_enum_variant)] // Moved once per event; boxing buys nothing.
enum Ev {
    Service(Event<KService>),
    Slice(Event<EndpointSlice>),
    Pod(Event<Pod>),
    Node(Event<PartialObjectMeta<Node>>),
    /// The nodes list or watch was refused (`403`, `404`): go on without.
    NodesRefused {
        code: u16,
        message: String,
    },
}

type Item = (usize, Result<Ev, watcher::Error>);

/// Why a watch session ended.
enum Restart {
    /// A watch request answered 410 Gone: relist without reporting an error.
    Gone(String),
    Failed(String),
}

/// What an event did to a [`Mirror`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// An initial list is under way: nothing to send yet.
    Nothing,
    Changed,
    /// An initial list completed: its objects replaced the mirror's.
    Relisted,
}

/// What one watcher has seen: its objects by `namespace/name`.
pub(crate) struct Mirror<V> {
    pub(crate) live: BTreeMap<String, V>,
    pending: Option<BTreeMap<String, V>>,
    pub(crate) synced: bool,
}

impl<V: PartialEq> Mirror<V> {
    pub(crate) fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            pending: None,
            synced: false,
        }
    }

    pub(crate) fn apply<K: Resource>(&mut self, ev: Event<K>, value: impl Fn(K) -> V) -> Step {
        let key = |k: &K| {
            let m = k.meta();
            format!(
                "{}/{}",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default()
            )
        };
        match ev {
            Event::Init => {
                self.pending = Some(BTreeMap::new());
                Step::Nothing
            }
            Event::InitApply(k) => {
                let id = key(&k);
                self.pending
                    .get_or_insert_with(BTreeMap::new)
                    .insert(id, value(k));
                Step::Nothing
            }
            Event::InitDone => {
                self.live = self.pending.take().unwrap_or_default();
                self.synced = true;
                Step::Relisted
            }
            Event::Apply(k) => {
                let id = key(&k);
                let v = value(k);
                // A pod's status changes often; its labels and mesh proxy seldom.
                if self.live.get(&id) == Some(&v) {
                    return Step::Nothing;
                }
                self.live.insert(id, v);
                Step::Changed
            }
            Event::Delete(k) => {
                self.live.remove(&key(&k));
                Step::Changed
            }
        }
    }
}

/// Every watcher's mirror, indexed like the watchers.
struct Mirrors {
    services: Vec<Mirror<KService>>,
    slices: Vec<Mirror<EndpointSlice>>,
    /// What is kept of each pod: labels and mesh proxy, not its status.
    pods: Vec<Mirror<PodInfo>>,
    /// Node topology by `/name` (cluster-scoped: no namespace).
    nodes: Mirror<NodeTopology>,
    /// The nodes watcher was refused and has not succeeded since: the
    /// view is whole without nodes, and they are not used.
    nodes_refused: bool,
}

impl Mirrors {
    /// Mirrors for `scopes` namespace scopes; without `read_nodes` the
    /// nodes mirror stays empty and counts as listed.
    fn new(scopes: usize, read_nodes: bool) -> Self {
        let mut nodes = Mirror::new();
        nodes.synced = !read_nodes;
        Self {
            services: (0..scopes).map(|_| Mirror::new()).collect(),
            slices: (0..scopes).map(|_| Mirror::new()).collect(),
            pods: (0..scopes).map(|_| Mirror::new()).collect(),
            nodes,
            nodes_refused: false,
        }
    }

    /// Watcher `i` is `services[i % n]`, `slices[..]`, `pods[..]` by `i / n`;
    /// the nodes watcher is the last.
    fn apply(&mut self, i: usize, ev: Ev) -> Step {
        let n = self.services.len();
        let scope = i % n;
        match ev {
            Ev::Service(e) => self.services[scope].apply(e, |s| s),
            Ev::Slice(e) => self.slices[scope].apply(e, |s| s),
            Ev::Pod(e) => self.pods[scope].apply(e, |p| PodInfo::from_pod(&p)),
            Ev::Node(e) => {
                let was_refused = std::mem::take(&mut self.nodes_refused);
                let step = self.nodes.apply(e, |n| {
                    NodeTopology::from_labels(&n.metadata.labels.unwrap_or_default())
                });
                // A watch that works again after a refusal brings the
                // nodes kept from before back into use.
                if was_refused && step == Step::Nothing && self.nodes.pending.is_none() {
                    Step::Changed
                } else {
                    step
                }
            }
            Ev::NodesRefused { .. } => {
                // The nodes drop out of use; a list cut short is dropped.
                // Changed (not Nothing) also sends what other watchers
                // changed while that list was pending.
                self.nodes_refused = true;
                self.nodes.pending = None;
                Step::Changed
            }
        }
    }

    /// Every watcher has listed, and none is listing again: only then is
    /// the view whole. A refused nodes watcher does not hold it back.
    fn synced(&self) -> bool {
        fn done<V>(m: &Mirror<V>) -> bool {
            m.synced && m.pending.is_none()
        }
        self.services.iter().all(done)
            && self.slices.iter().all(done)
            && self.pods.iter().all(done)
            && (self.nodes_refused || done(&self.nodes))
    }

    fn objects(&self) -> Objects<'_> {
        let mut pods = HashMap::new();
        for m in &self.pods {
            for (key, info) in &m.live {
                if let Some((ns, name)) = key.split_once('/') {
                    pods.insert((ns, name), info);
                }
            }
        }
        let nodes = if self.nodes_refused {
            HashMap::new()
        } else {
            self.nodes
                .live
                .iter()
                .map(|(key, t)| (key.split_once('/').map_or(key.as_str(), |(_, n)| n), t))
                .collect()
        };
        Objects {
            services: self.services.iter().flat_map(|m| m.live.values()).collect(),
            slices: self.slices.iter().flat_map(|m| m.live.values()).collect(),
            pods,
            nodes,
        }
    }
}

impl KubernetesRegistry {
    /// A registry reporting as `source`. Fails only on a config that can never work.
    pub fn new(source: SourceId, config: KubernetesConfig) -> Result<Self, KubernetesError> {
        config.validate()?;
        let translator = Translator::new(source.clone(), &config);
        Ok(Self {
            source,
            config,
            translator,
        })
    }

    /// A client for the configured connection (read again at every
    /// restart, so a rotated kubeconfig is picked up).
    async fn client(&self) -> Result<Client, KubernetesError> {
        connect(&self.config.connection).await
    }

    /// How long a refused nodes watcher waits before it lists again.
    fn nodes_retry(&self) -> Duration {
        self.config.backoff.max.0
    }

    /// The namespace scopes: each configured namespace, or all at once.
    fn scopes(&self) -> Vec<Option<String>> {
        if self.config.namespaces.is_empty() {
            vec![None]
        } else {
            self.config.namespaces.iter().cloned().map(Some).collect()
        }
    }

    /// The watchers (services, slices, pods for each scope, then nodes when
    /// read) and their names.
    fn watchers(&self, client: &Client) -> (Vec<BoxStream<'static, Item>>, Vec<String>) {
        let scopes = self.scopes();
        let n = scopes.len();
        let mut streams: Vec<BoxStream<'static, Item>> = Vec::new();
        let mut names = Vec::new();
        let where_ = |s: &Option<String>| match s {
            Some(ns) => format!("in namespace {ns}"),
            None => "in all namespaces".into(),
        };
        let cfg = watcher::Config::default;
        for (i, scope) in scopes.iter().enumerate() {
            let api: Api<KService> = api(client, scope);
            streams.push(
                watcher(api, cfg())
                    .map(move |r| (i, r.map(Ev::Service)))
                    .boxed(),
            );
            names.push(format!("services {}", where_(scope)));
        }
        for (i, scope) in scopes.iter().enumerate() {
            let api: Api<EndpointSlice> = api(client, scope);
            streams.push(
                watcher(api, cfg())
                    .map(move |r| (n + i, r.map(Ev::Slice)))
                    .boxed(),
            );
            names.push(format!("endpointslices {}", where_(scope)));
        }
        for (i, scope) in scopes.iter().enumerate() {
            // Whole pods: the service account is in the spec. Only the
            // labels and the mesh proxy are kept (PodInfo).
            let api: Api<Pod> = api(client, scope);
            streams.push(
                watcher(api, cfg())
                    .map(move |r| (2 * n + i, r.map(Ev::Pod)))
                    .boxed(),
            );
            names.push(format!("pods {}", where_(scope)));
        }
        if self.config.nodes {
            let api: Api<Node> = Api::all(client.clone());
            streams.push(nodes_stream(api, 3 * n, self.nodes_retry()));
            names.push("nodes".into());
        }
        (streams, names)
    }

    async fn follow(&self, sink: &ChangeSink) -> Result<(), CatalogClosed> {
        let mut backoff = self.config.backoff.start();
        // Whether the nodes refusal was logged (once, until nodes list again).
        let mut nodes_warned = false;
        loop {
            match self.session(sink, &mut backoff, &mut nodes_warned).await? {
                Restart::Gone(reason) => {
                    tracing::info!(%reason, "kubernetes watch expired; listing again");
                }
                Restart::Failed(message) => {
                    tracing::warn!(error = %message, "kubernetes API unavailable; keeping the last good view");
                    sink.error(message).await?;
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Lists and watches until something needs a restart.
    async fn session(
        &self,
        sink: &ChangeSink,
        backoff: &mut Backoff,
        nodes_warned: &mut bool,
    ) -> Result<Restart, CatalogClosed> {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Restart::Failed(e.to_string())),
        };
        let (streams, names) = self.watchers(&client);
        let mut events = stream::select_all(streams);
        let mut mirrors = Mirrors::new(self.scopes().len(), self.config.nodes);
        let mut sent: Option<Derived> = None;
        while let Some((i, item)) = events.next().await {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    let what = names.get(i).cloned().unwrap_or_default();
                    match gone(&e) {
                        // kube's watcher relists this resource by itself.
                        Gone::InStream => {
                            tracing::info!(watch = %what, "kubernetes watch expired (410); relisting");
                            continue;
                        }
                        Gone::Status => return Ok(Restart::Gone(format!("{what}: {e}"))),
                        Gone::No => {
                            let err = KubernetesError::Watch {
                                resource: what,
                                message: chain(&e),
                            };
                            return Ok(Restart::Failed(err.to_string()));
                        }
                    }
                }
            };
            match &ev {
                Ev::NodesRefused { code, message } => {
                    self.nodes_refused(*code, message, nodes_warned);
                }
                // Anything but the start of a list means nodes are read again.
                Ev::Node(e) if *nodes_warned && !matches!(e, Event::Init) => {
                    *nodes_warned = false;
                    tracing::info!(
                        "kubernetes nodes readable again; endpoints get their nodes' region and zone"
                    );
                }
                _ => {}
            }
            let step = mirrors.apply(i, ev);
            if step == Step::Nothing || !mirrors.synced() {
                continue;
            }
            let derived = self.translator.derive(&mirrors.objects());
            let changes = match (&sent, step) {
                (Some(old), Step::Changed) => {
                    let mut out = diff(old, &derived);
                    if old.invalid != derived.invalid {
                        out.push(status(&derived));
                    }
                    out
                }
                _ => {
                    backoff.reset();
                    tracing::debug!(
                        services = derived.services.len(),
                        endpoints = derived.endpoints.len(),
                        "kubernetes objects listed"
                    );
                    let view = SourceView {
                        services: derived.services.values().cloned().collect(),
                        endpoints: derived.endpoints.values().cloned().collect(),
                    };
                    vec![Change::Reset(view), status(&derived)]
                }
            };
            sent = Some(derived);
            for change in changes {
                if let Change::Status(SourceStatus::Degraded { message }) = &change {
                    tracing::warn!(problem = %message, "kubernetes objects skipped");
                }
                sink.send(change).await?;
            }
        }
        Ok(Restart::Failed("every kubernetes watch ended".into()))
    }
}

impl KubernetesRegistry {
    /// Logs a nodes refusal: at warn with the rule to grant the first
    /// time, at debug while it lasts.
    fn nodes_refused(&self, code: u16, message: &str, warned: &mut bool) {
        let retry = self.nodes_retry();
        if std::mem::replace(warned, true) {
            tracing::debug!(status = code, error = %message, "kubernetes nodes still not readable");
            return;
        }
        tracing::warn!(
            status = code,
            error = %message,
            retry = ?retry,
            "cannot read kubernetes nodes: endpoints get their EndpointSlice zone only, no region. \
             Grant the registry's service account a ClusterRole rule \
             `apiGroups: [\"\"], resources: [\"nodes\"], verbs: [\"list\", \"watch\"]`, \
             or set `nodes: false`; listing nodes again every `backoff.max`"
        );
    }
}

/// The nodes watcher (metadata only: labels are all it needs), as item
/// `index`. A `403` or `404` comes out as [`Ev::NodesRefused`], after which
/// the watcher waits `retry` before it lists again; every other item passes.
fn nodes_stream(api: Api<Node>, index: usize, retry: Duration) -> BoxStream<'static, Item> {
    let inner = metadata_watcher(api, watcher::Config::default()).boxed();
    stream::unfold((inner, false), move |(mut inner, pause)| async move {
        if pause {
            tokio::time::sleep(retry).await;
        }
        let item = inner.next().await?;
        if let Err(e) = &item {
            if let Some(code) = refused(e) {
                let ev = Ev::NodesRefused {
                    code,
                    message: chain(e),
                };
                return Some(((index, Ok(ev)), (inner, true)));
            }
        }
        Some(((index, item.map(Ev::Node)), (inner, false)))
    })
    .boxed()
}

/// The status code of a `403 Forbidden` or `404 Not Found` answer.
pub(crate) fn refused(e: &watcher::Error) -> Option<u16> {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return None,
    };
    matches!(code, 403 | 404).then_some(code)
}

#[async_trait]
impl Registry for KubernetesRegistry {
    fn source(&self) -> &SourceId {
        &self.source
    }

    /// Lists and watches until the task is cancelled or the catalog closes.
    /// Never returns on an API error: see the module docs.
    async fn run(&self, sink: ChangeSink) {
        let span = tracing::info_span!("registry", source = %self.source);
        async {
            tracing::info!(namespaces = ?self.config.namespaces, "kubernetes registry started");
            tokio::select! {
                _ = self.follow(&sink) => {}
                () = sink.closed() => {}
            }
            tracing::info!("catalog closed; kubernetes registry stopping");
        }
        .instrument(span)
        .await
    }
}

/// A client for `connection` (in-cluster, kubeconfig or URL).
pub(crate) async fn connect(connection: &Connection) -> Result<Client, KubernetesError> {
    let fail = |what: &str, e: &dyn std::error::Error| KubernetesError::Client {
        what: what.into(),
        message: chain(e),
    };
    let config = match connection {
        Connection::Infer => kube::Config::infer()
            .await
            .map_err(|e| fail("in-cluster service account or kubeconfig", &e))?,
        Connection::InCluster => {
            kube::Config::incluster().map_err(|e| fail("in-cluster service account", &e))?
        }
        Connection::Kubeconfig { path, context } => {
            let what = format!("kubeconfig {}", path.display());
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(&what, &e))?;
            let options = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| fail(&what, &e))?
        }
        Connection::Url { url } => {
            let uri: http::Uri = url.parse().map_err(|e| fail("connection.url", &e))?;
            kube::Config::new(uri)
        }
    };
    Client::try_from(config).map_err(|e| fail("client", &e))
}

fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub(crate) enum Gone {
    /// An `ERROR` event with code 410 inside a watch stream.
    InStream,
    /// A watch request answered with HTTP status 410.
    Status,
    No,
}

pub(crate) fn gone(e: &watcher::Error) -> Gone {
    match e {
        watcher::Error::WatchError(s) if s.code == 410 => Gone::InStream,
        // An expired `continue` token: the watcher lists again from the start.
        watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 410 => Gone::InStream,
        // kube's client reads a watch's HTTP 410 `Status` body as a stream
        // item; its watcher would retry from the same expired version.
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
            if s.code == 410 =>
        {
            Gone::Status
        }
        _ => Gone::No,
    }
}

pub(crate) use anymesh_support::error_chain as chain;

/// How many skipped objects a status message names.
const NAMED_INVALID: usize = 3;

/// `Healthy`, or `Degraded` naming the first few objects skipped.
fn status(d: &Derived) -> Change {
    let all: Vec<&str> = d.invalid.values().map(String::as_str).collect();
    if all.is_empty() {
        return Change::Status(SourceStatus::Healthy);
    }
    let n = all.len();
    let more = match n.saturating_sub(NAMED_INVALID) {
        0 => String::new(),
        rest => format!("; and {rest} more"),
    };
    let plural = if n == 1 { "" } else { "s" };
    let named = all[..n.min(NAMED_INVALID)].join("; ");
    Change::Status(SourceStatus::Degraded {
        message: format!("{n} kubernetes object{plural} skipped: {named}{more}"),
    })
}

/// The changes that turn `old` into `new` ([`ViewMaps::diff`]).
fn diff(old: &Derived, new: &Derived) -> Vec<Change> {
    fn maps(d: &Derived) -> ViewMaps<'_> {
        ViewMaps {
            services: &d.services,
            endpoints: &d.endpoints,
        }
    }
    maps(old).diff(&maps(new))
}

#[cfg(test)]
mod tests {
    use anymesh_core::Labels;

    use super::*;

    fn pod(name: &str, version: &str) -> PartialObjectMeta<Pod> {
        let mut p: PartialObjectMeta<Pod> = kube::core::PartialObjectMeta::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.labels = Some(Labels::from([("version".to_string(), version.to_string())]));
        p
    }

    fn labels(p: PartialObjectMeta<Pod>) -> Labels {
        p.metadata.labels.unwrap_or_default()
    }

    #[test]
    fn a_relist_replaces_the_mirror_only_when_done() {
        let mut m: Mirror<Labels> = Mirror::new();
        assert_eq!(m.apply(Event::Init, labels), Step::Nothing);
        assert_eq!(
            m.apply(Event::InitApply(pod("a", "v1")), labels),
            Step::Nothing
        );
        assert_eq!(
            m.apply(Event::InitApply(pod("b", "v1")), labels),
            Step::Nothing
        );
        assert!(!m.synced);
        assert_eq!(m.apply(Event::InitDone, labels), Step::Relisted);
        assert_eq!(m.live.len(), 2);
        // A relist that no longer holds `b`: `b` stays until the list is done.
        assert_eq!(m.apply(Event::Init, labels), Step::Nothing);
        assert_eq!(
            m.apply(Event::InitApply(pod("a", "v1")), labels),
            Step::Nothing
        );
        assert!(m.live.contains_key("default/b") && m.pending.is_some());
        assert_eq!(m.apply(Event::InitDone, labels), Step::Relisted);
        assert_eq!(m.live.keys().collect::<Vec<_>>(), vec!["default/a"]);
    }

    fn node(name: &str, zone: &str) -> PartialObjectMeta<Node> {
        let mut n: PartialObjectMeta<Node> = kube::core::PartialObjectMeta::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(Labels::from([(
            crate::translate::ZONE_LABEL.to_string(),
            zone.to_string(),
        )]));
        n
    }

    /// Mirrors with services, slices and pods listed (empty).
    fn listed() -> Mirrors {
        let mut m = Mirrors::new(1, true);
        for i in 0..3 {
            let ev = match i {
                0 => Ev::Service(Event::InitDone),
                1 => Ev::Slice(Event::InitDone),
                _ => Ev::Pod(Event::InitDone),
            };
            m.apply(i, ev);
        }
        m
    }

    fn refusal() -> Ev {
        Ev::NodesRefused {
            code: 403,
            message: "forbidden".into(),
        }
    }

    #[test]
    fn nodes_hold_back_the_first_view_until_listed_or_refused() {
        let mut m = listed();
        assert!(!m.synced(), "nodes not listed yet");
        m.apply(3, Ev::Node(Event::Init));
        m.apply(3, Ev::Node(Event::InitApply(node("n1", "a"))));
        assert!(!m.synced());
        assert_eq!(m.apply(3, Ev::Node(Event::InitDone)), Step::Relisted);
        assert!(m.synced());
        assert_eq!(m.objects().nodes["n1"].zone.as_deref(), Some("a"));
        // Without nodes, nothing waits for them.
        assert!(Mirrors::new(1, false).nodes.synced);
    }

    #[test]
    fn a_refusal_drops_the_nodes_from_use_and_a_working_watch_brings_them_back() {
        let mut m = listed();
        assert_eq!(m.apply(3, refusal()), Step::Changed);
        assert!(
            m.synced(),
            "a refused nodes list does not hold the view back"
        );
        assert!(m.objects().nodes.is_empty());
        // The retry starts a list and is refused again: still whole.
        m.apply(3, Ev::Node(Event::Init));
        assert!(!m.synced(), "a list under way");
        m.apply(3, refusal());
        assert!(m.synced() && m.nodes.pending.is_none());
        // Listed at last.
        m.apply(3, Ev::Node(Event::Init));
        m.apply(3, Ev::Node(Event::InitApply(node("n1", "a"))));
        assert_eq!(m.apply(3, Ev::Node(Event::InitDone)), Step::Relisted);
        assert_eq!(m.objects().nodes.len(), 1);
        // A watch refused, then working again with an unchanged node: the
        // kept nodes come back into use.
        m.apply(3, refusal());
        assert!(m.objects().nodes.is_empty());
        assert_eq!(
            m.apply(3, Ev::Node(Event::Apply(node("n1", "a")))),
            Step::Changed
        );
        assert_eq!(m.objects().nodes["n1"].zone.as_deref(), Some("a"));
        assert_eq!(
            m.apply(3, Ev::Node(Event::Apply(node("n1", "a")))),
            Step::Nothing
        );
    }

    #[test]
    fn an_unchanged_value_is_no_change() {
        let mut m: Mirror<Labels> = Mirror::new();
        m.apply(Event::Init, labels);
        m.apply(Event::InitDone, labels);
        assert_eq!(m.apply(Event::Apply(pod("a", "v1")), labels), Step::Changed);
        assert_eq!(m.apply(Event::Apply(pod("a", "v1")), labels), Step::Nothing);
        assert_eq!(m.apply(Event::Apply(pod("a", "v2")), labels), Step::Changed);
        assert_eq!(
            m.apply(Event::Delete(pod("a", "v2")), labels),
            Step::Changed
        );
        assert!(m.live.is_empty());
    }
}
