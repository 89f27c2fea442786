//! [`FakeKube`]: a Kubernetes API server for tests, speaking the list and
//! watch protocol over real HTTP on a loopback port and keeping real state.
//!
//! Resources: `v1` Services and Pods (`/api/v1[/namespaces/{ns}]/{services,pods}`),
//! cluster-scoped `v1` Nodes (`/api/v1/nodes`; no namespace)
//! and `discovery.k8s.io/v1` EndpointSlices
//! (`/apis/discovery.k8s.io/v1[/namespaces/{ns}]/endpointslices`), and the
//! Istio custom resources `networking.istio.io/v1` VirtualServices and
//! DestinationRules (`/apis/networking.istio.io/v1[/namespaces/{ns}]/{virtualservices,destinationrules}`,
//! stored as given, `spec` unchecked as a CRD without a schema would). What it
//! implements, as kube-apiserver does (semantics in `fixtures/README.md`):
//!
//! - **List**: `{kind}List` with `metadata.resourceVersion`; items without
//!   `kind`/`apiVersion`. `limit` pages with an opaque `continue` token; a
//!   token older than the compaction point answers `410 Expired` with a
//!   fresh `continue`, as `list_continue_expired_410_status.json` shows.
//! - **Watch** (`watch=true`): a chunked stream of newline-delimited JSON
//!   frames `{"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object":…}`
//!   replaying every change after `resourceVersion`, then live ones, ended
//!   after `timeoutSeconds`. `BOOKMARK` frames (only `metadata.resourceVersion`,
//!   as `watch_bookmark_docs.ndjson`) go to watches that sent
//!   `allowWatchBookmarks=true`, when the test calls [`FakeKube::bookmark`].
//! - **410 Gone**: a watch from a version older than the compaction point
//!   ([`FakeKube::compact`]) is refused either as an `ERROR` frame with a
//!   `Status` `code: 410, reason: Expired` inside a `200` stream (the default,
//!   as `watch_error_410_expired.ndjson`) or as an HTTP `410` status
//!   ([`GoneForm`]). [`FakeKube::expire_watches`] sends the `ERROR` frame
//!   into every open stream.
//! - **Metadata only**: `Accept: application/json;as=PartialObjectMetadata…`
//!   answers `PartialObjectMetadata(List)` objects (what kube's
//!   `metadata_watcher` asks for).
//! - Resource versions are one counter across all resources, written as
//!   strings; clients must treat them as opaque.
//!
//! The EndpointSlice controller is not simulated: tests write slices
//! (their conditions included) as the controller would.
//!
//! Controls for tests: fail every request with a status (open streams end),
//! refuse one resource with a status (`403` as for missing RBAC, `404`),
//! hold live events back from open watches, end open watches, compact the
//! history, counters of lists and watches.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

/// A resource the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
    /// `networking.istio.io/v1` VirtualService.
    VirtualService,
    /// `networking.istio.io/v1` DestinationRule.
    DestinationRule,
    /// `v1` Node (cluster-scoped).
    Node,
}

impl Kind {
    fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Node => "Node",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::VirtualService | Kind::DestinationRule => "networking.istio.io/v1",
            _ => "v1",
        }
    }
    /// The plural of its path (in messages).
    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::VirtualService => "virtualservices",
            Kind::DestinationRule => "destinationrules",
            Kind::Node => "nodes",
        }
    }
    /// Whether objects of this kind have no namespace.
    fn cluster_scoped(self) -> bool {
        self == Kind::Node
    }
    fn from_path(group: &str, plural: &str) -> Option<Self> {
        match (group, plural) {
            ("v1", "services") => Some(Kind::Service),
            ("v1", "pods") => Some(Kind::Pod),
            ("v1", "nodes") => Some(Kind::Node),
            ("discovery.k8s.io/v1", "endpointslices") => Some(Kind::EndpointSlice),
            ("networking.istio.io/v1", "virtualservices") => Some(Kind::VirtualService),
            ("networking.istio.io/v1", "destinationrules") => Some(Kind::DestinationRule),
            _ => None,
        }
    }
}

/// How a watch from a compacted version is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GoneForm {
    /// `200 OK` whose stream holds one `ERROR` frame (`code: 410`).
    #[default]
    Event,
    /// HTTP status `410 Gone` with a `Status` body.
    Status,
}

/// Requests served, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// List requests answered `200` (each page counts).
    pub lists: usize,
    /// Watch requests that opened a stream.
    pub watches: usize,
    /// Requests refused with 410 (status or `ERROR` frame).
    pub gone: usize,
    /// Requests failed on purpose ([`FakeKube::fail_with`]).
    pub failed: usize,
}

/// One change in the history.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    namespace: String,
    kind_word: &'static str,
    object: Value,
}

/// What open watch streams are told.
#[derive(Debug, Clone)]
enum Note {
    Change(Change),
    Bookmark(u64),
    /// Send a 410 `ERROR` frame and end.
    Expire,
    /// End the stream (as a timeout does).
    End,
    /// End the streams of one kind.
    EndKind(Kind),
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// (kind, namespace, name) → object (with `metadata.resourceVersion`).
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Change>,
    /// Watches and continue tokens from versions below this are gone.
    oldest: u64,
    fail: Option<u16>,
    /// Kinds refused with a status ([`FakeKube::refuse`]).
    refused: BTreeMap<Kind, u16>,
    hold: bool,
    gone_form: GoneForm,
    counts: Counts,
}

/// A running fake Kubernetes API server (stopped on drop).
#[derive(Debug)]
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notes: broadcast::Sender<Note>,
}

impl Shared {
    fn notify(&self, note: Note) {
        // No receiver is fine: nobody is watching.
        let _ = self.notes.send(note);
    }
}

impl FakeKube {
    /// Starts an empty server on a free loopback port.
    pub async fn start() -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding the fake kubernetes API: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the fake kubernetes API's address: {e}"),
        };
        let (notes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1000,
                ..State::default()
            }),
            notes,
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API server URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); returns its
    /// new resource version. `metadata.name` is required; a missing
    /// `metadata.namespace` is `default` (a Node has none: it is removed).
    pub fn apply(&self, kind: Kind, mut object: Value) -> String {
        let name = match object.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => panic!("fake kubernetes: object without metadata.name: {object}"),
        };
        let namespace = if kind.cluster_scoped() {
            String::new()
        } else {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        };
        let mut s = self.shared.state.lock();
        s.rv += 1;
        let rv = s.rv;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            if kind.cluster_scoped() {
                meta.remove("namespace");
            } else {
                meta.insert("namespace".into(), json!(namespace));
            }
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        if let Some(o) = object.as_object_mut() {
            o.insert("kind".into(), json!(kind.kind()));
            o.insert("apiVersion".into(), json!(kind.api_version()));
        }
        let key = (kind, namespace.clone(), name);
        let word = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects.insert(key, object.clone());
        self.record(&mut s, kind, namespace, word, object);
        rv.to_string()
    }

    /// Deletes an object (`DELETED`); false when there was none. A Node's
    /// namespace is `""`.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut s = self.shared.state.lock();
        let Some(mut object) = s
            .objects
            .remove(&(kind, namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        s.rv += 1;
        let rv = s.rv;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.record(&mut s, kind, namespace.to_string(), "DELETED", object);
        true
    }

    fn record(
        &self,
        s: &mut State,
        kind: Kind,
        namespace: String,
        word: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv: s.rv,
            kind,
            namespace,
            kind_word: word,
            object,
        };
        s.history.push(change.clone());
        if !s.hold {
            self.shared.notify(Note::Change(change));
        }
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let s = self.shared.state.lock();
        s.objects
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// A Service with TCP ports `(name, port)` (an empty name leaves the
    /// port unnamed), selecting pods labelled `app: <name>`.
    pub fn put_service(&self, namespace: &str, name: &str, ports: &[(&str, u16)]) -> String {
        self.apply(Kind::Service, service(namespace, name, ports))
    }

    /// A Pod with `labels`, at `ip`.
    pub fn put_pod(
        &self,
        namespace: &str,
        name: &str,
        ip: &str,
        labels: &[(&str, &str)],
    ) -> String {
        self.apply(Kind::Pod, pod(namespace, name, ip, labels))
    }

    /// An EndpointSlice of `service` with ports `(name, port)` and `endpoints`.
    pub fn put_slice(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        ports: &[(&str, u16)],
        endpoints: &[SliceEndpoint],
    ) -> String {
        self.apply(
            Kind::EndpointSlice,
            slice(namespace, name, service, ports, endpoints),
        )
    }

    /// A Node `name` with `labels` (e.g. `topology.kubernetes.io/zone`).
    pub fn put_node(&self, name: &str, labels: &[(&str, &str)]) -> String {
        self.apply(Kind::Node, node(name, labels))
    }

    /// Requests for `kind` answer `status` as kube-apiserver words it
    /// (`403 Forbidden` as for a service account without RBAC for the
    /// resource, `404 NotFound` as for a resource the server does not serve)
    /// and open watches of it end, until `None`.
    pub fn refuse(&self, kind: Kind, status: Option<u16>) {
        let mut s = self.shared.state.lock();
        match status {
            Some(code) => {
                s.refused.insert(kind, code);
                drop(s);
                self.shared.notify(Note::EndKind(kind));
            }
            None => {
                s.refused.remove(&kind);
            }
        }
    }

    /// Every request answers `status` (with a `Status` body) and open
    /// watch streams end, until `None`.
    pub fn fail_with(&self, status: Option<u16>) {
        self.shared.state.lock().fail = status;
        if status.is_some() {
            self.shared.notify(Note::End);
        }
    }

    /// While on, changes are stored (and replayed to new watches) but not
    /// sent to open watches.
    pub fn hold_events(&self, on: bool) {
        self.shared.state.lock().hold = on;
    }

    /// Forgets the history: watches from any version before now are gone.
    pub fn compact(&self) {
        let mut s = self.shared.state.lock();
        s.oldest = s.rv;
        s.history.clear();
    }

    /// Compacts, then sends every open watch a 410 `ERROR` frame and ends it.
    pub fn expire_watches(&self) {
        self.compact();
        self.shared.notify(Note::Expire);
    }

    /// Ends every open watch stream cleanly (as `timeoutSeconds` does).
    pub fn end_watches(&self) {
        self.shared.notify(Note::End);
    }

    /// Sends a `BOOKMARK` at the current version to watches that allow them.
    pub fn bookmark(&self) {
        let rv = self.shared.state.lock().rv;
        self.shared.notify(Note::Bookmark(rv));
    }

    /// How watches from compacted versions are refused.
    pub fn set_gone_form(&self, form: GoneForm) {
        self.shared.state.lock().gone_form = form;
    }

    /// The current resource version.
    pub fn resource_version(&self) -> String {
        self.shared.state.lock().rv.to_string()
    }

    pub fn counts(&self) -> Counts {
        self.shared.state.lock().counts
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One endpoint of a slice; conditions left `None` are omitted (nil).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub address: String,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    /// The Pod of `targetRef` (same namespace).
    pub pod: Option<String>,
    pub zone: Option<String>,
    /// `nodeName`: the Node the endpoint runs on.
    pub node: Option<String>,
}

impl SliceEndpoint {
    /// A ready endpoint of pod `pod`.
    pub fn ready(address: &str, pod: &str) -> Self {
        Self {
            address: address.into(),
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            pod: Some(pod.into()),
            zone: None,
            node: None,
        }
    }

    /// The same endpoint on node `node`.
    pub fn on_node(self, node: &str) -> Self {
        Self {
            node: Some(node.into()),
            ..self
        }
    }

    /// The same endpoint with its own `zone`.
    pub fn in_zone(self, zone: &str) -> Self {
        Self {
            zone: Some(zone.into()),
            ..self
        }
    }

    /// A running pod whose readiness probe fails.
    pub fn not_ready(address: &str, pod: &str) -> Self {
        Self {
            ready: Some(false),
            serving: Some(false),
            ..Self::ready(address, pod)
        }
    }

    /// A pod being deleted that still passes its readiness probe.
    pub fn terminating(address: &str, pod: &str) -> Self {
        Self {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
            ..Self::ready(address, pod)
        }
    }
}

/// A Service object (see [`FakeKube::put_service`]).
pub fn service(namespace: &str, name: &str, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| {
            let mut v = json!({"protocol": "TCP", "port": p, "targetPort": p});
            if !n.is_empty() {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": {"app": name}, "ports": ports},
    })
}

/// A Pod object (see [`FakeKube::put_pod`]).
pub fn pod(namespace: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> Value {
    pod_with(namespace, name, ip, labels, &[], None)
}

/// A Pod object with annotations and, when given, `spec.serviceAccountName`
/// (what the ServiceAccount admission controller fills in, `default` when
/// the manifest names none; left out here when `None`, as in a manifest).
/// A sidecar injector marks its pods with labels and annotations such as
/// Istio's `security.istio.io/tlsMode: istio`.
pub fn pod_with(
    namespace: &str,
    name: &str,
    ip: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    service_account: Option<&str>,
) -> Value {
    let map = |pairs: &[(&str, &str)]| -> serde_json::Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    };
    let mut metadata = json!({"name": name, "namespace": namespace, "labels": map(labels)});
    if !annotations.is_empty() {
        metadata["annotations"] = json!(map(annotations));
    }
    let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
    if let Some(sa) = service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    json!({
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// A Node object (see [`FakeKube::put_node`]): metadata with `labels`, a
/// `spec.podCIDR` and a `Ready` condition, as `kubectl get node -o json` shows.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut all = serde_json::Map::new();
    all.insert("kubernetes.io/hostname".into(), json!(name));
    all.insert("kubernetes.io/os".into(), json!("linux"));
    for (k, v) in labels {
        all.insert(k.to_string(), json!(v));
    }
    json!({
        "metadata": {"name": name, "labels": all},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// An EndpointSlice object (see [`FakeKube::put_slice`]).
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[SliceEndpoint],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let mut conditions = serde_json::Map::new();
            for (k, v) in [
                ("ready", e.ready),
                ("serving", e.serving),
                ("terminating", e.terminating),
            ] {
                if let Some(v) = v {
                    conditions.insert(k.into(), json!(v));
                }
            }
            let mut v = json!({"addresses": [e.address], "conditions": conditions});
            if let Some(p) = &e.pod {
                v["targetRef"] = json!({"kind": "Pod", "namespace": namespace, "name": p});
            }
            if let Some(z) = &e.zone {
                v["zone"] = json!(z);
            }
            if let Some(n) = &e.node {
                v["nodeName"] = json!(n);
            }
            v
        })
        .collect();
    json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

type Body = BoxBody<Bytes, Infallible>;
type Resp = Response<Body>;

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A `Status` object as the API server writes it.
fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status_reply(code: u16, reason: &str, message: &str) -> Resp {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    full(status, status_object(code, reason, message))
}

/// A refusal of `kind` in kube-apiserver's words.
fn refusal(code: u16, kind: Kind, q: &BTreeMap<String, String>) -> Resp {
    let verb = if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        "watch"
    } else {
        "list"
    };
    let plural = kind.plural();
    let group = kind.api_version().rsplit_once('/').map_or("", |(g, _)| g);
    match code {
        403 => status_reply(
            403,
            "Forbidden",
            &format!("{plural} is forbidden: User \"system:serviceaccount:anymesh-system:anymesh\" cannot {verb} resource \"{plural}\" in API group \"{group}\" at the cluster scope"),
        ),
        404 => status_reply(404, "NotFound", "the server could not find the requested resource"),
        _ => status_reply(code, "InternalError", "fake kubernetes API refusing on purpose"),
    }
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` and `%XX`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The resource and namespace of a path, if it is one of ours.
fn route(path: &str) -> Option<(Kind, Option<String>)> {
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/networking.istio.io/v1/") {
        ("networking.istio.io/v1", rest)
    } else {
        (
            "discovery.k8s.io/v1",
            path.strip_prefix("/apis/discovery.k8s.io/v1/")?,
        )
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [plural] => Some((Kind::from_path(group, plural)?, None)),
        ["namespaces", ns, plural] => {
            let kind = Kind::from_path(group, plural)?;
            (!kind.cluster_scoped()).then(|| (kind, Some(ns.to_string())))
        }
        _ => None,
    }
}

fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Resp {
    if let Some(code) = {
        let mut s = shared.state.lock();
        if s.fail.is_some() {
            s.counts.failed += 1;
        }
        s.fail
    } {
        return status_reply(
            code,
            "InternalError",
            "fake kubernetes API failing on purpose",
        );
    }
    if req.method() != hyper::Method::GET {
        return status_reply(405, "MethodNotAllowed", "the fake serves only GET");
    }
    let Some((kind, namespace)) = route(req.uri().path()) else {
        return status_reply(
            404,
            "NotFound",
            &format!(
                "the server could not find the requested resource ({})",
                req.uri().path()
            ),
        );
    };
    let q = query(&req);
    let refused = shared.state.lock().refused.get(&kind).copied();
    if let Some(code) = refused {
        shared.state.lock().counts.failed += 1;
        return refusal(code, kind, &q);
    }
    let meta_only = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    let view = View {
        kind,
        namespace,
        meta_only,
    };
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        watch(shared, &view, &q)
    } else {
        list(shared, &view, &q)
    }
}

/// What a request reads, and how it wants objects written.
struct View {
    kind: Kind,
    namespace: Option<String>,
    meta_only: bool,
}

impl View {
    fn matches(&self, kind: Kind, namespace: &str) -> bool {
        kind == self.kind && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// The object as this request sees it; list items carry no kind.
    fn render(&self, object: &Value, in_list: bool) -> Value {
        let mut o = if self.meta_only {
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        } else {
            object.clone()
        };
        if in_list {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
        }
        o
    }
}

fn list(shared: &Shared, view: &View, q: &BTreeMap<String, String>) -> Resp {
    let mut s = shared.state.lock();
    // A continue token is `<list version>:<index of the next item>`.
    let (rv, start) = match q.get("continue").filter(|c| !c.is_empty()) {
        None => (s.rv, 0),
        Some(token) => {
            let parsed = token
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            let Some((rv, start)) = parsed else {
                return status_reply(
                    400,
                    "BadRequest",
                    &format!("continue key is not valid: {token}"),
                );
            };
            if rv < s.oldest {
                s.counts.gone += 1;
                let fresh = format!("{}:{start}", s.rv);
                let mut body = status_object(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                );
                body["metadata"] = json!({"continue": fresh});
                return full(StatusCode::GONE, body);
            }
            (rv, start)
        }
    };
    let all: Vec<Value> = s
        .objects
        .iter()
        .filter(|((k, ns, _), _)| view.matches(*k, ns))
        .map(|(_, o)| view.render(o, true))
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(all.len());
    let items: Vec<Value> = all
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < all.len() {
        metadata["continue"] = json!(format!("{rv}:{end}"));
        metadata["remainingItemCount"] = json!(all.len() - end);
    }
    s.counts.lists += 1;
    let (kind, api_version) = if view.meta_only {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1")
    } else {
        (format!("{}List", view.kind.kind()), view.kind.api_version())
    };
    full(
        StatusCode::OK,
        json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items}),
    )
}

fn frame(kind_word: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind_word, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn expired_frame(from: &str) -> Bytes {
    frame(
        "ERROR",
        status_object(410, "Expired", &format!("too old resource version: {from}")),
    )
}

fn watch(shared: &Shared, view: &View, q: &BTreeMap<String, String>) -> Resp {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from_text = q.get("resourceVersion").cloned().unwrap_or_default();
    let mut s = shared.state.lock();
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut backlog = Vec::new();
    if from_text.is_empty() || from_text == "0" {
        // "Any version": the current objects as ADDED, then changes.
        for ((k, ns, _), o) in &s.objects {
            if view.matches(*k, ns) {
                backlog.push(frame("ADDED", view.render(o, false)));
            }
        }
    } else {
        let Ok(from) = from_text.parse::<u64>() else {
            return status_reply(
                400,
                "BadRequest",
                &format!("invalid resource version {from_text:?}"),
            );
        };
        if from < s.oldest {
            s.counts.gone += 1;
            let message = format!("too old resource version: {from} ({})", s.oldest);
            return match s.gone_form {
                GoneForm::Status => status_reply(410, "Expired", &message),
                GoneForm::Event => {
                    let body = Full::new(expired_frame(&format!("{from} ({})", s.oldest))).boxed();
                    let mut r = Response::new(body);
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    r
                }
            };
        }
        for c in s.history.iter().filter(|c| c.rv > from) {
            if view.matches(c.kind, &c.namespace) {
                backlog.push(frame(c.kind_word, view.render(&c.object, false)));
            }
        }
    }
    s.counts.watches += 1;
    // Subscribed under the lock: no change falls between backlog and live.
    let mut notes = shared.notes.subscribe();
    drop(s);
    let view = View {
        kind: view.kind,
        namespace: view.namespace.clone(),
        meta_only: view.meta_only,
    };
    let kind = view.kind;
    tokio::spawn(async move {
        for b in backlog {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let note = tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                n = notes.recv() => n,
            };
            let out = match note {
                Ok(Note::Change(c)) if view.matches(c.kind, &c.namespace) => {
                    frame(c.kind_word, view.render(&c.object, false))
                }
                Ok(Note::Change(_)) => continue,
                Ok(Note::Bookmark(rv)) if bookmarks => frame(
                    "BOOKMARK",
                    json!({"kind": kind.kind(), "apiVersion": kind.api_version(),
                           "metadata": {"resourceVersion": rv.to_string()}}),
                ),
                Ok(Note::Bookmark(_)) => continue,
                Ok(Note::Expire) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(expired_frame("expired")).await;
                    return;
                }
                Ok(Note::EndKind(k)) if k == view.kind => return,
                Ok(Note::EndKind(_)) => continue,
                Ok(Note::End) | Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    }));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    //! Nodes: cluster-scoped list and watch, and refusals.

    use super::*;

    async fn get(url: &str) -> (u16, Value) {
        let uri: hyper::Uri = url.parse().unwrap();
        let host = uri.authority().unwrap().to_string();
        let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn nodes_are_cluster_scoped_and_can_be_refused() {
        let k = FakeKube::start().await;
        k.put_node("n1", &[("topology.kubernetes.io/zone", "eu-west-1a")]);
        let n1 = k.get(Kind::Node, "", "n1").unwrap();
        assert!(n1.pointer("/metadata/namespace").is_none(), "{n1}");
        let (status, list) = get(&format!("{}/api/v1/nodes", k.url())).await;
        assert_eq!(status, 200);
        assert_eq!(list["kind"], "NodeList");
        assert_eq!(
            list["items"][0]["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "eu-west-1a"
        );
        let (status, _) = get(&format!("{}/api/v1/namespaces/default/nodes", k.url())).await;
        assert_eq!(status, 404, "nodes have no namespace");
        k.refuse(Kind::Node, Some(403));
        let (status, body) = get(&format!("{}/api/v1/nodes", k.url())).await;
        assert_eq!((status, body["reason"].as_str()), (403, Some("Forbidden")));
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("cannot list resource \"nodes\" in API group \"\""),
            "{body}"
        );
        let (status, _) = get(&format!("{}/api/v1/services", k.url())).await;
        assert_eq!(status, 200, "only nodes are refused");
        k.refuse(Kind::Node, None);
        assert!(k.delete(Kind::Node, "", "n1"));
        let (status, list) = get(&format!("{}/api/v1/nodes", k.url())).await;
        assert_eq!(
            (status, list["items"].as_array().map(Vec::len)),
            (200, Some(0))
        );
    }
}
