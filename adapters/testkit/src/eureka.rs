//! [`FakeEureka`]: a Eureka server for tests, speaking Eureka's REST API over
//! real HTTP on a loopback port and keeping real state.
//!
//! What it implements, as Netflix's server does (`ApplicationsResource`,
//! `InstanceResource`, `AbstractInstanceRegistry`):
//!
//! - `GET {base}/apps`: the whole registry with `versions__delta` and the
//!   `apps__hashcode` of the whole registry.
//! - `GET {base}/apps/delta`: the recent-changes queue (instances with
//!   `actionType` `ADDED` / `MODIFIED` / `DELETED`, kept for
//!   [`RETENTION`], 3 minutes as Eureka's `retentionTimeInMSInDeltaQueue`),
//!   with the hashcode of the *whole* registry, so a client that missed a
//!   change notices.
//! - `GET {base}/apps/{APP}`: one application, or 404.
//! - `POST {base}/apps/{APP}` with `{"instance":{...}}`: register (`ADDED`), 204.
//! - `DELETE {base}/apps/{APP}/{ID}`: cancel (`DELETED`), 200 or 404.
//! - `PUT {base}/apps/{APP}/{ID}/status?value=S`: override the status
//!   (`overriddenStatus` and `status` become S, `MODIFIED`), 200 or 404;
//!   `DELETE` of the same path removes the override (`status` from
//!   `value`, default `UNKNOWN`).
//! - `PUT {base}/apps/{APP}/{ID}/metadata?k=v`: update metadata (`MODIFIED`).
//! - `PUT {base}/apps/{APP}/{ID}`: a heartbeat, 200 or 404 (not a change).
//!
//! Bodies follow the fixtures in `fixtures/eureka`: [`Shape::Modern`]
//! as a current Spring Cloud server writes them (arrays, `overriddenStatus`,
//! ports as numbers, empty metadata as `Collections$EmptyMap`), and
//! [`Shape::Legacy`] as Eureka 1.1 did (a lone application or instance as
//! an object, numbers as strings, `overriddenstatus`).
//!
//! Controls for tests: fail every request with a status, stall requests,
//! restart empty, serve a wrong hashcode, lose changes from the delta queue,
//! refuse deltas (403), require basic auth; request counters.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

mod render;

/// How long a change stays in the delta queue (Eureka's default).
pub const RETENTION: Duration = Duration::from_secs(180);

/// Which JSON dialect the server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// A current server (Spring Cloud Netflix, Eureka 1.10).
    #[default]
    Modern,
    /// Eureka 1.1 (XStream/Jettison): single items as objects, numbers as strings.
    Legacy,
}

/// What happened to an instance, as queued for deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionType {
    Added,
    Modified,
    Deleted,
}

impl ActionType {
    fn as_str(self) -> &'static str {
        match self {
            ActionType::Added => "ADDED",
            ActionType::Modified => "MODIFIED",
            ActionType::Deleted => "DELETED",
        }
    }
}

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeInstance {
    /// Upper-case application name, as Eureka keys applications.
    pub app: String,
    pub instance_id: String,
    pub host_name: String,
    pub ip_addr: String,
    pub status: String,
    pub overridden_status: String,
    pub port: u16,
    pub port_enabled: bool,
    pub secure_port: u16,
    pub secure_port_enabled: bool,
    pub vip_address: String,
    pub secure_vip_address: String,
    pub metadata: BTreeMap<String, String>,
    /// Epoch milliseconds of registration.
    pub registration_timestamp: u64,
}

impl FakeInstance {
    /// An `UP` instance of `app` at `ip:port` whose VIP is the lower-cased app name.
    pub fn new(app: &str, instance_id: &str, ip: &str, port: u16) -> Self {
        Self {
            app: app.to_ascii_uppercase(),
            instance_id: instance_id.into(),
            host_name: format!("{instance_id}.hosts.test"),
            ip_addr: ip.into(),
            status: "UP".into(),
            overridden_status: "UNKNOWN".into(),
            port,
            port_enabled: true,
            secure_port: 443,
            secure_port_enabled: false,
            vip_address: app.to_ascii_lowercase(),
            secure_vip_address: app.to_ascii_lowercase(),
            metadata: BTreeMap::new(),
            registration_timestamp: 1_700_000_000_000,
        }
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn with_vip(mut self, vip: &str) -> Self {
        self.vip_address = vip.into();
        self
    }
}

/// Requests the server has answered, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `GET /apps` answered 200.
    pub full: usize,
    /// `GET /apps/delta` answered 200.
    pub delta: usize,
    /// Requests refused for missing or wrong credentials.
    pub unauthorized: usize,
    /// Requests failed on purpose ([`FakeEureka::fail_with`]).
    pub failed: usize,
}

#[derive(Debug)]
struct Queued {
    at: Instant,
    action: ActionType,
    instance: FakeInstance,
}

#[derive(Debug, Default)]
struct State {
    /// APP → instance id → instance.
    apps: BTreeMap<String, BTreeMap<String, FakeInstance>>,
    queue: VecDeque<Queued>,
    /// How long changes stay in the queue; [`RETENTION`] unless set.
    retention: Option<Duration>,
    version: u64,
    shape: Shape,
    fail: Option<u16>,
    wrong_hashcode: bool,
    lose_changes: bool,
    delta_forbidden: bool,
    auth: Option<(String, String)>,
    counts: Counts,
}

impl State {
    fn record(&mut self, action: ActionType, instance: FakeInstance) {
        self.version += 1;
        if !self.lose_changes {
            self.queue.push_back(Queued {
                at: Instant::now(),
                action,
                instance,
            });
        }
    }

    fn get_mut(&mut self, app: &str, id: &str) -> Option<&mut FakeInstance> {
        self.apps.get_mut(&app.to_ascii_uppercase())?.get_mut(id)
    }

    fn register(&mut self, inst: FakeInstance) {
        self.apps
            .entry(inst.app.clone())
            .or_default()
            .insert(inst.instance_id.clone(), inst.clone());
        // Eureka queues every registration as ADDED, re-registrations too.
        self.record(ActionType::Added, inst);
    }

    fn cancel(&mut self, app: &str, id: &str) -> bool {
        let app = app.to_ascii_uppercase();
        let Some(instances) = self.apps.get_mut(&app) else {
            return false;
        };
        let Some(gone) = instances.remove(id) else {
            return false;
        };
        if instances.is_empty() {
            self.apps.remove(&app);
        }
        self.record(ActionType::Deleted, gone);
        true
    }

    fn modify(&mut self, app: &str, id: &str, f: impl FnOnce(&mut FakeInstance)) -> bool {
        let Some(inst) = self.get_mut(app, id) else {
            return false;
        };
        f(inst);
        let inst = inst.clone();
        self.record(ActionType::Modified, inst);
        true
    }

    fn instances(&self) -> impl Iterator<Item = &FakeInstance> {
        self.apps.values().flat_map(|a| a.values())
    }

    /// The reconcile hashcode of the whole registry (`DOWN_1_UP_3_`).
    fn hashcode(&self) -> String {
        if self.wrong_hashcode {
            return "WRONG_1_".into();
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in self.instances() {
            *counts.entry(i.status.as_str()).or_default() += 1;
        }
        counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
    }
}

/// A running fake Eureka server (stopped on drop).
#[derive(Debug)]
pub struct FakeEureka {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stall: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEureka {
    /// Starts an empty server on a free loopback port.
    pub async fn start() -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding the fake eureka: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the fake eureka's address: {e}"),
        };
        let state = Arc::new(Mutex::new(State::default()));
        let (stall, _) = watch::channel(false);
        let task = tokio::spawn(serve(listener, state.clone(), stall.clone()));
        Self {
            addr,
            state,
            stall,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service URL to configure (`http://127.0.0.1:<port>/eureka`).
    pub fn url(&self) -> String {
        format!("http://{}/eureka", self.addr)
    }

    pub fn register(&self, instance: FakeInstance) {
        self.state.lock().register(instance);
    }

    /// Cancels (deregisters) an instance; false when it was not registered.
    pub fn cancel(&self, app: &str, instance_id: &str) -> bool {
        self.state.lock().cancel(app, instance_id)
    }

    /// What `PUT /apps/{APP}/{ID}/status?value=` does: the status is
    /// overridden (both fields), a `MODIFIED` change.
    pub fn set_status(&self, app: &str, instance_id: &str, status: &str) -> bool {
        self.state.lock().modify(app, instance_id, |i| {
            i.status = status.into();
            i.overridden_status = status.into();
        })
    }

    /// What `DELETE /apps/{APP}/{ID}/status?value=` does: the override is
    /// removed and the status set to `status`, a `MODIFIED` change.
    pub fn clear_status_override(&self, app: &str, instance_id: &str, status: &str) -> bool {
        self.state.lock().modify(app, instance_id, |i| {
            i.status = status.into();
            i.overridden_status = "UNKNOWN".into();
        })
    }

    /// Changes the reported status only (as the instance's own health
    /// check would), a `MODIFIED` change.
    pub fn set_own_status(&self, app: &str, instance_id: &str, status: &str) -> bool {
        self.state
            .lock()
            .modify(app, instance_id, |i| i.status = status.into())
    }

    pub fn set_metadata(&self, app: &str, instance_id: &str, key: &str, value: &str) -> bool {
        self.state.lock().modify(app, instance_id, |i| {
            i.metadata.insert(key.into(), value.into());
        })
    }

    /// Answers every request with `status` (500, 503, ...) until `None`.
    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().fail = status;
    }

    /// Holds every request unanswered while `true`.
    pub fn stall(&self, on: bool) {
        self.stall.send_replace(on);
    }

    /// Forgets everything, as a restarted server with no peers does.
    pub fn restart_empty(&self) {
        let mut s = self.state.lock();
        s.apps.clear();
        s.queue.clear();
        s.version = 0;
    }

    /// Serves a hashcode that matches no registry while `true`.
    pub fn wrong_hashcode(&self, on: bool) {
        self.state.lock().wrong_hashcode = on;
    }

    /// While `true`, changes apply to the registry but never reach the
    /// delta queue (a client polling deltas misses them).
    pub fn lose_changes(&self, on: bool) {
        self.state.lock().lose_changes = on;
    }

    /// How long changes stay in the delta queue (Eureka's
    /// `retentionTimeInMSInDeltaQueue`); zero drops every change before any
    /// delta can carry it.
    pub fn set_retention(&self, retention: Duration) {
        self.state.lock().retention = Some(retention);
    }

    /// Answers `/apps/delta` with 403 while `true` (delta disabled).
    pub fn forbid_delta(&self, on: bool) {
        self.state.lock().delta_forbidden = on;
    }

    /// Requires basic authentication with these credentials.
    pub fn require_auth(&self, user: &str, password: &str) {
        self.state.lock().auth = Some((user.into(), password.into()));
    }

    pub fn set_shape(&self, shape: Shape) {
        self.state.lock().shape = shape;
    }

    /// The number of changes in the delta queue now.
    pub fn queued_changes(&self) -> usize {
        self.state.lock().queue.len()
    }

    pub fn counts(&self) -> Counts {
        self.state.lock().counts
    }

    /// The registry's hashcode as `/apps` reports it.
    pub fn hashcode(&self) -> String {
        self.state.lock().hashcode()
    }
}

impl Drop for FakeEureka {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, stall: watch::Sender<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, stall) = (state.clone(), stall.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (state, mut stall) = (state.clone(), stall.subscribe());
                async move {
                    // A stalled server holds requests until released.
                    let _ = stall.wait_for(|on| !*on).await;
                    Ok::<_, Infallible>(handle(req, &state).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn empty(status: StatusCode) -> Resp {
    reply(status, "text/plain", Bytes::new())
}

fn authorized(req: &Request<Incoming>, auth: &Option<(String, String)>) -> bool {
    let Some((user, password)) = auth else {
        return true;
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v.trim() == expected)
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

async fn handle(req: Request<Incoming>, shared: &Mutex<State>) -> Resp {
    {
        let mut s = shared.lock();
        if let Some(code) = s.fail {
            s.counts.failed += 1;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return reply(status, "text/plain", "fake eureka failing on purpose");
        }
        if !authorized(&req, &s.auth) {
            s.counts.unauthorized += 1;
            let mut r = empty(StatusCode::UNAUTHORIZED);
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"eureka\""),
            );
            return r;
        }
    }
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/eureka/apps") else {
        return empty(StatusCode::NOT_FOUND);
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    match (&method, parts.as_slice()) {
        (&Method::GET, []) => {
            let mut s = shared.lock();
            s.counts.full += 1;
            json_reply(render::full(&s))
        }
        (&Method::GET, ["delta"]) => {
            let mut s = shared.lock();
            if s.delta_forbidden {
                return empty(StatusCode::FORBIDDEN);
            }
            let now = Instant::now();
            let retention = s.retention.unwrap_or(RETENTION);
            while s.queue.front().is_some_and(|q| now - q.at >= retention) {
                s.queue.pop_front();
            }
            s.counts.delta += 1;
            json_reply(render::delta(&s))
        }
        (&Method::GET, [app]) => {
            let s = shared.lock();
            match render::one_app(&s, app) {
                Some(v) => json_reply(v),
                None => empty(StatusCode::NOT_FOUND),
            }
        }
        (&Method::POST, [app]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return empty(StatusCode::BAD_REQUEST),
            };
            match serde_json::from_slice::<Value>(&body)
                .map_err(|e| e.to_string())
                .and_then(|v| render::parse_instance(app, &v))
            {
                Ok(inst) => {
                    shared.lock().register(inst);
                    empty(StatusCode::NO_CONTENT)
                }
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", e),
            }
        }
        (&Method::DELETE, [app, id]) => found(shared.lock().cancel(app, id)),
        (&Method::PUT, [app, id]) => found(shared.lock().get_mut(app, id).is_some()),
        (&Method::PUT, [app, id, "status"]) => {
            let Some(value) = query(&req, "value") else {
                return empty(StatusCode::BAD_REQUEST);
            };
            found(shared.lock().modify(app, id, |i| {
                i.status = value.clone();
                i.overridden_status = value;
            }))
        }
        (&Method::DELETE, [app, id, "status"]) => {
            let value = query(&req, "value").unwrap_or_else(|| "UNKNOWN".into());
            found(shared.lock().modify(app, id, |i| {
                i.status = value;
                i.overridden_status = "UNKNOWN".into();
            }))
        }
        (&Method::PUT, [app, id, "metadata"]) => {
            let pairs: Vec<(String, String)> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            found(shared.lock().modify(app, id, |i| i.metadata.extend(pairs)))
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}

fn found(ok: bool) -> Resp {
    empty(if ok {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

fn json_reply(v: Value) -> Resp {
    reply(StatusCode::OK, "application/json", v.to_string())
}

/// A JSON object from pairs (keeps the render code short).
fn obj(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests;
