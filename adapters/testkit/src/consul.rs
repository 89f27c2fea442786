//! [`FakeConsul`]: a Consul agent's HTTP API on a loopback port, with state.
//!
//! It keeps nodes, service instances and checks, and one raft-like index
//! that every write raises. It serves the shapes of the captured payloads
//! in `fixtures/consul`:
//!
//! - `GET /v1/catalog/services`: name → tags (the `consul` service included).
//! - `GET /v1/health/service/<name>`: `[{Node, Service, Checks}]`, node
//!   checks (`serfHealth`, `_node_maintenance`) included; `?passing` filters.
//! - `GET /v1/catalog/service/<name>`: the flat catalog form.
//!
//! Connect sidecar proxies are instances of `Kind: connect-proxy` with a
//! `Proxy` naming the instance they front ([`Instance::sidecar_for`] makes
//! the one `connect.sidecar_service` registers), served in the shape of
//! `fixtures/consul/agent_service_web_sidecar_proxy_docs.json`.
//!
//! **Blocking queries**: with `?index=N` (N > 0) an answer waits until the
//! index of what is asked (the catalog's, or the service's: the last write
//! that touched it) is above N, or until `wait` (default 5m, capped at 10m)
//! plus a random jitter of up to `wait/16` runs out; then it answers with the
//! current index in `X-Consul-Index`, changed or not. `dc` picks a
//! datacenter (unknown: 500 "No path to datacenter"); `stale`/`consistent`
//! show in `X-Consul-Effective-Consistency`. With a token required, a
//! request without `X-Consul-Token` or with another one gets 403.
//!
//! **Controls**: [`fail`](FakeConsul::fail) (every request answers 500),
//! [`stall`](FakeConsul::stall) (requests hang), [`stop`](FakeConsul::stop)
//! and [`start_again`](FakeConsul::start_again) (connection refused in
//! between), [`restart`](FakeConsul::restart) (connections dropped, the index
//! starts again at 1, the data kept as servers keep it), and
//! [`reset_index`](FakeConsul::reset_index) (the index goes back without a
//! restart, as after a snapshot restore). [`open_blocking`](FakeConsul::open_blocking)
//! counts the blocking queries waiting per service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::wait::Poll;

mod shapes;

use shapes::{catalog_service, catalog_services, health_service};

/// The key under which [`FakeConsul::open_blocking`] counts catalog polls.
pub const CATALOG: &str = "catalog/services";

/// One service instance to register.
#[derive(Debug, Clone)]
pub struct Instance {
    pub node: String,
    pub node_address: String,
    pub id: String,
    pub service: String,
    /// Empty: clients use the node's address.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// `lan`, `wan`, ... → (address, port).
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    /// The service check's status (`passing`, `warning`, `critical`); None: no check.
    pub check: Option<String>,
    /// `Kind`: empty for a typical service, `connect-proxy` for a proxy.
    pub kind: String,
    /// A Connect proxy's destination.
    pub proxy: Option<ProxyOf>,
}

/// What a Connect proxy fronts (`Proxy.DestinationServiceName`,
/// `DestinationServiceID`, `LocalServiceAddress`, `LocalServicePort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOf {
    pub service: String,
    pub id: String,
    pub local_address: String,
    pub local_port: u16,
}

impl Instance {
    /// An instance `id` of `service` at `address:port` on node `node-<address>`,
    /// with a passing service check.
    pub fn new(service: &str, id: &str, address: &str, port: u16) -> Self {
        Self {
            node: format!("node-{address}"),
            node_address: address.to_string(),
            id: id.to_string(),
            service: service.to_string(),
            address: address.to_string(),
            port,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            tagged_addresses: BTreeMap::new(),
            check: Some("passing".into()),
            kind: String::new(),
            proxy: None,
        }
    }

    /// The sidecar proxy `connect { sidecar_service { port = <port> } }`
    /// registers for `parent`, with Consul's defaults: id and name with
    /// `-sidecar-proxy` appended, the parent's node, tags and meta, no
    /// address of its own (the node's), `Kind: connect-proxy`, and a
    /// `Proxy` fronting the parent on loopback.
    pub fn sidecar_for(parent: &Instance, port: u16) -> Self {
        Self {
            node: parent.node.clone(),
            node_address: parent.node_address.clone(),
            id: format!("{}-sidecar-proxy", parent.id),
            service: format!("{}-sidecar-proxy", parent.service),
            address: String::new(),
            port,
            tags: parent.tags.clone(),
            meta: parent.meta.clone(),
            tagged_addresses: BTreeMap::new(),
            check: Some("passing".into()),
            kind: "connect-proxy".into(),
            proxy: Some(ProxyOf {
                service: parent.service.clone(),
                id: parent.id.clone(),
                local_address: "127.0.0.1".into(),
                local_port: parent.port,
            }),
        }
    }
    /// The instance's own address (empty: the node's).
    pub fn address(mut self, address: &str) -> Self {
        self.address = address.to_string();
        self
    }
    pub fn on_node(mut self, node: &str, node_address: &str) -> Self {
        self.node = node.to_string();
        self.node_address = node_address.to_string();
        self
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.insert(key.to_string(), value.to_string());
        self
    }
}

#[derive(Debug, Clone)]
struct NodeRec {
    address: String,
    datacenter: String,
    meta: BTreeMap<String, String>,
    serf: String,
    maintenance: Option<String>,
    create: u64,
    modify: u64,
}

#[derive(Debug, Clone)]
struct ServiceRec {
    inst: Instance,
    maintenance: Option<String>,
    create: u64,
    modify: u64,
}

#[derive(Debug, Default)]
struct State {
    index: u64,
    datacenter: String,
    token: Option<String>,
    nodes: BTreeMap<String, NodeRec>,
    /// By (node, service id).
    services: BTreeMap<(String, String), ServiceRec>,
    /// The last index that touched each service name (kept after removal).
    service_index: BTreeMap<String, u64>,
    catalog_index: u64,
    fail: Option<u16>,
    open: HashMap<String, usize>,
    requests: Vec<Seen>,
}

/// One request the fake answered (or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub query: String,
    /// Whether an `X-Consul-Token` header came (its value is not kept).
    pub had_token: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The global index, so blocking queries wake on every write.
    index: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
}

/// A fake Consul agent on `127.0.0.1` (see the module docs).
pub struct FakeConsul {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinSet<()>>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl FakeConsul {
    /// Starts with datacenter `dc1` and the `consul` service on its server node.
    pub async fn start() -> FakeConsul {
        Self::start_with(None).await
    }

    /// Like [`start`](Self::start), serving HTTPS with `config` (see
    /// [`TestPki::server_config`](crate::TestPki::server_config)).
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> FakeConsul {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> FakeConsul {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                datacenter: "dc1".into(),
                ..State::default()
            }),
            index: watch::channel(0).0,
            stalled: watch::channel(false).0,
        });
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("fake consul: cannot bind a loopback port: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("fake consul: no local address: {e}"),
        };
        let fake = FakeConsul {
            addr,
            shared,
            server: Mutex::new(None),
            tls,
        };
        let mut server = Instance::new("consul", "consul", "127.0.0.1", 8300)
            .on_node("consul-server", "127.0.0.1");
        server.address.clear();
        server.check = None;
        fake.register(server);
        fake.serve(listener);
        fake
    }

    /// `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The current global index.
    pub fn index(&self) -> u64 {
        self.shared.state.lock().index
    }

    /// Requires `X-Consul-Token: <token>` on every request (None: no ACLs).
    pub fn require_token(&self, token: Option<&str>) {
        self.shared.state.lock().token = token.map(str::to_string);
    }

    /// Registers (or replaces) an instance in the default datacenter.
    pub fn register(&self, inst: Instance) {
        let dc = self.shared.state.lock().datacenter.clone();
        self.register_in(&dc, inst);
    }

    /// Registers (or replaces) an instance on a node of datacenter `dc`.
    pub fn register_in(&self, dc: &str, inst: Instance) {
        self.write(|s, idx| {
            let node = s.nodes.entry(inst.node.clone()).or_insert(NodeRec {
                address: inst.node_address.clone(),
                datacenter: dc.to_string(),
                meta: BTreeMap::new(),
                serf: "passing".into(),
                maintenance: None,
                create: idx,
                modify: idx,
            });
            node.address = inst.node_address.clone();
            node.modify = idx;
            let key = (inst.node.clone(), inst.id.clone());
            let create = s.services.get(&key).map_or(idx, |r| r.create);
            if let Some(old) = s.services.get(&key) {
                let name = old.inst.service.clone();
                s.service_index.insert(name, idx);
            }
            s.service_index.insert(inst.service.clone(), idx);
            s.services.insert(
                key,
                ServiceRec {
                    inst,
                    maintenance: None,
                    create,
                    modify: idx,
                },
            );
            s.catalog_index = idx;
        });
    }

    /// Deregisters an instance by node and id; unknown ones change nothing.
    pub fn deregister(&self, node: &str, id: &str) {
        self.write(|s, idx| {
            if let Some(rec) = s.services.remove(&(node.to_string(), id.to_string())) {
                s.service_index.insert(rec.inst.service, idx);
                s.catalog_index = idx;
            }
        });
    }

    /// Sets the status of an instance's service check.
    pub fn set_check(&self, node: &str, id: &str, status: &str) {
        self.write(|s, idx| {
            if let Some(rec) = s.services.get_mut(&(node.to_string(), id.to_string())) {
                rec.inst.check = Some(status.to_string());
                rec.modify = idx;
                let name = rec.inst.service.clone();
                s.service_index.insert(name, idx);
            }
        });
    }

    /// Sets a node's meta (shown on every instance of the node).
    pub fn set_node_meta(&self, node: &str, key: &str, value: &str) {
        self.touch_node(node, |n| {
            n.meta.insert(key.to_string(), value.to_string());
        });
    }

    /// Sets the status of a node's `serfHealth` check.
    pub fn set_node_health(&self, node: &str, status: &str) {
        self.touch_node(node, |n| n.serf = status.to_string());
    }

    /// Puts a node in maintenance (`Some(reason)`) or takes it out.
    pub fn node_maintenance(&self, node: &str, reason: Option<&str>) {
        self.touch_node(node, |n| n.maintenance = reason.map(str::to_string));
    }

    /// Puts an instance in maintenance (`Some(reason)`) or takes it out.
    pub fn service_maintenance(&self, node: &str, id: &str, reason: Option<&str>) {
        self.write(|s, idx| {
            if let Some(rec) = s.services.get_mut(&(node.to_string(), id.to_string())) {
                rec.maintenance = reason.map(str::to_string);
                rec.modify = idx;
                let name = rec.inst.service.clone();
                s.service_index.insert(name, idx);
            }
        });
    }

    fn touch_node(&self, node: &str, f: impl FnOnce(&mut NodeRec)) {
        self.write(|s, idx| {
            if let Some(n) = s.nodes.get_mut(node) {
                f(n);
                n.modify = idx;
                let names: BTreeSet<String> = s
                    .services
                    .values()
                    .filter(|r| r.inst.node == node)
                    .map(|r| r.inst.service.clone())
                    .collect();
                for name in names {
                    s.service_index.insert(name, idx);
                }
            }
        });
    }

    /// Makes every request answer `status` (None: back to normal).
    pub fn fail(&self, status: Option<u16>) {
        self.shared.state.lock().fail = status;
    }

    /// Makes requests hang without answering (true) until released (false).
    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.send_replace(stalled);
    }

    /// How many blocking queries are waiting on `service` ([`CATALOG`] for the catalog).
    pub fn open_blocking(&self, service: &str) -> usize {
        self.shared
            .state
            .lock()
            .open
            .get(service)
            .copied()
            .unwrap_or(0)
    }

    /// Every service with a blocking query waiting.
    pub fn blocked_services(&self) -> BTreeSet<String> {
        let s = self.shared.state.lock();
        s.open
            .iter()
            .filter(|(k, n)| **n > 0 && k.as_str() != CATALOG)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.state.lock().requests.clone()
    }

    /// Closes the listener and every connection: connection refused until
    /// [`start_again`](Self::start_again).
    pub fn stop(&self) {
        if let Some(mut set) = self.server.lock().take() {
            set.abort_all();
        }
        self.shared.state.lock().open.clear();
    }

    /// Listens again on the same port, with the state kept.
    pub async fn start_again(&self) {
        let what = format!("fake consul to bind {} again", self.addr);
        let listener = Poll::new()
            .deadline(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .until_async(&what, || TcpListener::bind(self.addr))
            .await;
        self.serve(listener);
    }

    /// An agent restart: connections drop, the index starts again at 1,
    /// the data is kept.
    pub async fn restart(&self) {
        self.stop();
        self.reset_index();
        self.start_again().await;
    }

    /// The index goes back to 1 (every item's indexes too) without dropping
    /// connections. Waiting blocking queries keep waiting for an index above
    /// theirs, as on a real server.
    pub fn reset_index(&self) {
        let mut s = self.shared.state.lock();
        for n in s.nodes.values_mut() {
            (n.create, n.modify) = (1, 1);
        }
        for r in s.services.values_mut() {
            (r.create, r.modify) = (1, 1);
        }
        for v in s.service_index.values_mut() {
            *v = 1;
        }
        s.catalog_index = 1;
        s.index = 1;
        drop(s);
        self.shared.index.send_replace(1);
    }

    fn write(&self, f: impl FnOnce(&mut State, u64)) {
        let mut s = self.shared.state.lock();
        s.index += 1;
        let idx = s.index;
        f(&mut s, idx);
        drop(s);
        self.shared.index.send_replace(idx);
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (no or a bad client certificate) just closes.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.server.lock() = Some(set);
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts a waiting blocking query while it lives.
struct OpenGuard<'a> {
    shared: &'a Shared,
    key: String,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock();
        if let Some(n) = s.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// Parses a Go duration as Consul's `wait` takes it (`30s`, `500ms`, `5m`).
fn parse_wait(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

enum Route {
    Catalog,
    Health(String),
    CatalogService(String),
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let token = req
        .headers()
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    {
        let mut s = shared.state.lock();
        s.requests.push(Seen {
            path: path.clone(),
            query: req.uri().query().unwrap_or("").to_string(),
            had_token: token.is_some(),
        });
    }
    let mut stalled = shared.stalled.subscribe();
    let _ = stalled.wait_for(|s| !*s).await;
    let route = if path == "/v1/catalog/services" {
        Route::Catalog
    } else if let Some(name) = path.strip_prefix("/v1/health/service/") {
        Route::Health(percent_decode(name))
    } else if let Some(name) = path.strip_prefix("/v1/catalog/service/") {
        Route::CatalogService(percent_decode(name))
    } else {
        return reply(StatusCode::NOT_FOUND, format!("no handler for {path}"));
    };
    let dc = {
        let s = shared.state.lock();
        if let Some(code) = s.fail {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return reply(
                status,
                "rpc error making call: fake consul told to fail".into(),
            );
        }
        if let Some(want) = &s.token {
            match &token {
                None => {
                    return reply(
                        StatusCode::FORBIDDEN,
                        "Permission denied: anonymous token lacks permission".into(),
                    )
                }
                Some(t) if t != want => {
                    return reply(StatusCode::FORBIDDEN, "ACL not found".into())
                }
                Some(_) => {}
            }
        }
        let dc = param("dc").unwrap_or(&s.datacenter).to_string();
        if dc != s.datacenter && !s.nodes.values().any(|n| n.datacenter == dc) {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No path to datacenter".into(),
            );
        }
        dc
    };
    let key = match &route {
        Route::Catalog => CATALOG.to_string(),
        Route::Health(n) | Route::CatalogService(n) => n.clone(),
    };
    let relevant = |s: &State| match &route {
        Route::Catalog => s.catalog_index.max(1),
        Route::Health(n) | Route::CatalogService(n) => s
            .service_index
            .get(n)
            .copied()
            .unwrap_or(s.catalog_index)
            .max(1),
    };
    let client_index: u64 = param("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    if client_index > 0 {
        let wait = param("wait")
            .and_then(parse_wait)
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(600));
        let jitter = wait / 16;
        let jitter = if jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=jitter)
        };
        let deadline = tokio::time::Instant::now() + wait + jitter;
        let mut changed = shared.index.subscribe();
        let guard = {
            let mut s = shared.state.lock();
            if relevant(&s) <= client_index {
                *s.open.entry(key.clone()).or_default() += 1;
                Some(OpenGuard {
                    shared,
                    key: key.clone(),
                })
            } else {
                None
            }
        };
        if guard.is_some() {
            loop {
                if relevant(&shared.state.lock()) > client_index {
                    break;
                }
                match tokio::time::timeout_at(deadline, changed.changed()).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        }
    }
    let s = shared.state.lock();
    let index = relevant(&s);
    let body = match &route {
        Route::Catalog => catalog_services(&s, &dc),
        Route::Health(name) => health_service(&s, &dc, name, param("passing").is_some()),
        Route::CatalogService(name) => catalog_service(&s, &dc, name),
    };
    let consistency = if param("stale").is_some() {
        "stale"
    } else if param("consistent").is_some() {
        "consistent"
    } else {
        "leader"
    };
    let mut r = reply(StatusCode::OK, body.to_string());
    let h = r.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = index.to_string().parse() {
        h.insert("x-consul-index", v);
    }
    h.insert(
        "x-consul-knownleader",
        hyper::header::HeaderValue::from_static("true"),
    );
    h.insert(
        "x-consul-lastcontact",
        hyper::header::HeaderValue::from_static("0"),
    );
    h.insert(
        "x-consul-effective-consistency",
        hyper::header::HeaderValue::from_static(consistency),
    );
    r
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
