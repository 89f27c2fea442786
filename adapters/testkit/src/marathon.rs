//! [`FakeMarathon`]: a Marathon server for tests, speaking Marathon's REST
//! API and its event bus over real HTTP on a loopback port, with real state.
//!
//! What it implements, as Marathon does:
//!
//! - `GET /v2/apps[?embed=apps.tasks]`: every app (`{"apps":[...]}`), with
//!   its tasks when embedded, in the shapes of the fixtures in
//!   `fixtures/marathon` ([`Shape::Modern`]: Marathon 1.5+ with
//!   `networks`, `container.portMappings` and task `state`;
//!   [`Shape::Legacy`]: `ports`, `container.docker.network`/`portMappings`
//!   and no task `state`).
//! - `GET /v2/apps/{id}[?embed=app.tasks]`: one app (`{"app":{...}}`) or 404.
//! - `GET /v2/tasks`: every task (`{"tasks":[...]}`, with `servicePorts`).
//! - `GET /v2/events`: the event bus as server-sent events
//!   (`Content-Type: text/event-stream`, `Connection: close`, frames
//!   `event: <type>\r\ndata: <json>\r\n\r\n` as Jetty writes them, a
//!   `: keep-alive` comment every [`FakeMarathon::set_heartbeat`]), starting
//!   with `event_stream_attached`, filtered by `?event_type=`. Without
//!   `Accept: text/event-stream` it answers 405 as the RAML says.
//! - `GET /ping`: `pong`.
//!
//! State changes made through the controls publish the events Marathon
//! publishes: adding an app gives `api_post_event` and the deployment
//! events; a launched task `status_update_event` `TASK_RUNNING`; a kill
//! `TASK_KILLING` then `TASK_KILLED`; a health change
//! `health_status_changed_event` (with `instanceId`); removing an app
//! `app_terminated_event`.
//!
//! Controls for tests: fail every request with a status, stall requests (and
//! silence open streams), drop every open event stream, change state without
//! publishing events (as if the events were lost), require a DC/OS token;
//! request counters.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

mod render;

/// Which Marathon the server imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Marathon 1.5 and later (`networks`, `container.portMappings`, task `state`).
    #[default]
    Modern,
    /// Marathon before 1.5 (`ports`, `container.docker.portMappings`, no task `state`).
    Legacy,
}

/// How an app's tasks are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeNetworking {
    /// `host`: tasks listen on host ports of the agent.
    #[default]
    Host,
    /// Docker bridge: host ports mapped to container ports.
    Bridge,
    /// IP-per-task (`container` network): the task's own IP, container ports.
    Container,
}

/// One port of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePort {
    pub name: Option<String>,
    /// The service port (`portDefinitions[].port`, `servicePort`).
    pub service_port: u16,
    /// The port inside the container (bridge and container networking).
    pub container_port: u16,
    /// The port's labels (`anymesh.skip`, `anymesh.proxy`, ...).
    pub labels: BTreeMap<String, String>,
}

/// One app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeApp {
    /// Absolute id (`/prod/shop/web`).
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub networking: FakeNetworking,
    pub ports: Vec<FakePort>,
    /// How many (HTTP) health checks the app defines.
    pub health_checks: usize,
    pub tasks: BTreeMap<String, FakeTask>,
    pub version: String,
}

impl FakeApp {
    /// A host-networked app with one unnamed port and no health checks.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            labels: BTreeMap::new(),
            networking: FakeNetworking::Host,
            ports: vec![FakePort {
                name: None,
                service_port: 10000,
                container_port: 0,
                labels: BTreeMap::new(),
            }],
            health_checks: 0,
            tasks: BTreeMap::new(),
            version: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn with_health_checks(mut self, n: usize) -> Self {
        self.health_checks = n;
        self
    }

    pub fn with_networking(mut self, n: FakeNetworking) -> Self {
        self.networking = n;
        self
    }

    /// Replaces the ports: `(name, service port, container port)`.
    pub fn with_ports(mut self, ports: &[(Option<&str>, u16, u16)]) -> Self {
        self.ports = ports
            .iter()
            .map(|(n, s, c)| FakePort {
                name: n.map(str::to_string),
                service_port: *s,
                container_port: *c,
                labels: BTreeMap::new(),
            })
            .collect();
        self
    }

    /// Sets a label on the port at `index` (which must exist).
    pub fn with_port_label(mut self, index: usize, key: &str, value: &str) -> Self {
        if let Some(p) = self.ports.get_mut(index) {
            p.labels.insert(key.into(), value.into());
        }
        self
    }
}

/// One task of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeTask {
    pub id: String,
    /// The agent.
    pub host: String,
    /// Host ports, one per app port.
    pub ports: Vec<u16>,
    /// The task's own IP (`ipAddresses`), if any.
    pub ip: Option<String>,
    /// `TASK_RUNNING`, `TASK_STAGING`, ...
    pub state: String,
    /// One result per health check of the app: alive and consecutive failures.
    pub health: Vec<(bool, u32)>,
}

impl FakeTask {
    /// A running task on `host` listening on `ports`.
    pub fn new(id: &str, host: &str, ports: &[u16]) -> Self {
        Self {
            id: id.into(),
            host: host.into(),
            ports: ports.to_vec(),
            ip: None,
            state: "TASK_RUNNING".into(),
            health: Vec::new(),
        }
    }

    pub fn with_ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.into());
        self
    }

    pub fn with_state(mut self, state: &str) -> Self {
        self.state = state.into();
        self
    }
}

/// Requests the server has answered, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `GET /v2/apps` answered 200.
    pub apps: usize,
    /// Event streams opened.
    pub streams: usize,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: usize,
    /// Requests failed on purpose ([`FakeMarathon::fail_with`]).
    pub failed: usize,
}

#[derive(Debug, Default)]
struct State {
    apps: BTreeMap<String, FakeApp>,
    shape: Shape,
    fail: Option<u16>,
    muted: bool,
    token: Option<String>,
    counts: Counts,
    open_streams: usize,
    /// Event sequence, for timestamps.
    seq: u64,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<(String, String)>,
    /// Bumped to close every open stream.
    drops: watch::Sender<u64>,
    stall: watch::Sender<bool>,
    heartbeat: watch::Sender<Duration>,
}

impl Shared {
    /// Publishes an event unless muted.
    fn publish(&self, kind: &str, mut body: Value) {
        let mut s = self.state.lock();
        if s.muted {
            return;
        }
        s.seq += 1;
        if let Value::Object(m) = &mut body {
            m.insert("eventType".into(), kind.into());
            m.insert("timestamp".into(), render::timestamp(s.seq).into());
        }
        drop(s);
        // No subscriber is fine.
        let _ = self.events.send((kind.to_string(), body.to_string()));
    }
}

/// A running fake Marathon (stopped on drop).
pub struct FakeMarathon {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeMarathon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMarathon")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeMarathon {
    /// Starts an empty server on a free loopback port.
    pub async fn start() -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding the fake marathon: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the fake marathon's address: {e}"),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            events: broadcast::channel(1024).0,
            drops: watch::channel(0).0,
            stall: watch::channel(false).0,
            heartbeat: watch::channel(Duration::from_secs(1)).0,
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_shape(&self, shape: Shape) {
        self.shared.state.lock().shape = shape;
    }

    /// Creates (or replaces) an app, with the tasks it holds, as
    /// `POST /v2/apps` and its deployment do.
    pub fn add_app(&self, app: FakeApp) {
        let def = {
            let mut s = self.shared.state.lock();
            let shape = s.shape;
            s.apps.insert(app.id.clone(), app.clone());
            render::app(&app, shape, false)
        };
        let id = app.id.clone();
        self.shared.publish(
            "api_post_event",
            json!({"clientIp": "127.0.0.1", "uri": format!("/v2/apps{id}"), "appDefinition": def}),
        );
        let plan = json!({"id": "fake-deployment", "steps": [{"action": "StartApplication", "app": id}], "version": app.version});
        let step = json!({"actions": [{"type": "StartApplication", "app": id}]});
        self.shared.publish(
            "deployment_info",
            json!({"plan": plan, "currentStep": step}),
        );
        for t in app.tasks.values() {
            self.publish_status(&id, t, &t.state);
        }
        self.shared.publish(
            "deployment_step_success",
            json!({"plan": plan, "currentStep": step}),
        );
        self.shared
            .publish("deployment_success", json!({"id": "fake-deployment"}));
    }

    /// Launches a task in an existing app (`status_update_event` with its
    /// state); a task of an app with health checks starts with all alive.
    pub fn launch(&self, app_id: &str, mut task: FakeTask) -> bool {
        {
            let mut s = self.shared.state.lock();
            let Some(app) = s.apps.get_mut(app_id) else {
                return false;
            };
            if task.health.is_empty() {
                task.health = vec![(true, 0); app.health_checks];
            }
            app.tasks.insert(task.id.clone(), task.clone());
        }
        self.publish_status(app_id, &task, &task.state);
        true
    }

    /// Kills a task: `TASK_KILLING`, then it is gone with `TASK_KILLED`.
    pub fn kill_task(&self, app_id: &str, task_id: &str) -> bool {
        let Some(task) = self.task(app_id, task_id) else {
            return false;
        };
        self.publish_status(app_id, &task, "TASK_KILLING");
        if let Some(app) = self.shared.state.lock().apps.get_mut(app_id) {
            app.tasks.remove(task_id);
        }
        self.publish_status(app_id, &task, "TASK_KILLED");
        true
    }

    /// Sets a task's state (`status_update_event`); a terminal state removes it.
    pub fn set_task_state(&self, app_id: &str, task_id: &str, state: &str) -> bool {
        let Some(mut task) = self.task(app_id, task_id) else {
            return false;
        };
        task.state = state.into();
        let terminal = [
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_KILLED",
            "TASK_LOST",
            "TASK_ERROR",
            "TASK_DROPPED",
            "TASK_GONE",
        ]
        .contains(&state);
        if let Some(app) = self.shared.state.lock().apps.get_mut(app_id) {
            if terminal {
                app.tasks.remove(task_id);
            } else {
                app.tasks.insert(task_id.into(), task.clone());
            }
        }
        self.publish_status(app_id, &task, state);
        true
    }

    /// Makes every health check of a task pass or fail
    /// (`health_status_changed_event`).
    pub fn set_health(&self, app_id: &str, task_id: &str, alive: bool) -> bool {
        let version = {
            let mut s = self.shared.state.lock();
            let Some(app) = s.apps.get_mut(app_id) else {
                return false;
            };
            let Some(task) = app.tasks.get_mut(task_id) else {
                return false;
            };
            for r in &mut task.health {
                *r = (alive, if alive { 0 } else { r.1 + 3 });
            }
            app.version.clone()
        };
        self.shared.publish(
            "health_status_changed_event",
            json!({"appId": app_id, "instanceId": render::instance_id(task_id), "version": version, "alive": alive}),
        );
        true
    }

    /// Deletes an app and its tasks (`app_terminated_event`).
    pub fn remove_app(&self, app_id: &str) -> bool {
        if self.shared.state.lock().apps.remove(app_id).is_none() {
            return false;
        }
        self.shared
            .publish("app_terminated_event", json!({"appId": app_id}));
        true
    }

    /// While `true`, state changes publish no event (as if lost).
    pub fn mute_events(&self, on: bool) {
        self.shared.state.lock().muted = on;
    }

    /// Closes every open event stream.
    pub fn drop_streams(&self) {
        self.shared.drops.send_modify(|g| *g += 1);
    }

    /// How often open streams get a keep-alive comment (1 s unless set).
    pub fn set_heartbeat(&self, every: Duration) {
        self.shared.heartbeat.send_replace(every);
    }

    /// Answers every request with `status` (500, 503, ...) until `None`.
    pub fn fail_with(&self, status: Option<u16>) {
        self.shared.state.lock().fail = status;
    }

    /// While `true`, holds every request unanswered and sends nothing on
    /// open streams (no event, no keep-alive).
    pub fn stall(&self, on: bool) {
        self.shared.stall.send_replace(on);
    }

    /// Requires `Authorization: token=<token>` (DC/OS style), or nothing.
    pub fn require_token(&self, token: Option<&str>) {
        self.shared.state.lock().token = token.map(str::to_string);
    }

    pub fn counts(&self) -> Counts {
        self.shared.state.lock().counts
    }

    /// Event streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared.state.lock().open_streams
    }

    /// A copy of an app.
    pub fn app(&self, app_id: &str) -> Option<FakeApp> {
        self.shared.state.lock().apps.get(app_id).cloned()
    }

    /// `GET /v2/apps?embed=apps.tasks` as the server renders it now.
    pub fn apps_json(&self) -> Value {
        let s = self.shared.state.lock();
        render::apps(&s.apps, s.shape, true)
    }

    fn task(&self, app_id: &str, task_id: &str) -> Option<FakeTask> {
        self.shared
            .state
            .lock()
            .apps
            .get(app_id)?
            .tasks
            .get(task_id)
            .cloned()
    }

    fn publish_status(&self, app_id: &str, task: &FakeTask, state: &str) {
        let version = self
            .app(app_id)
            .map(|a| a.version)
            .unwrap_or_else(|| "2026-01-01T00:00:00.000Z".into());
        let mut ev = json!({
            "slaveId": render::agent_id(&task.host),
            "taskId": task.id,
            "taskStatus": state,
            "message": "",
            "appId": app_id,
            "host": task.host,
            "ports": task.ports,
            "version": version,
        });
        if let (Some(ip), Value::Object(m)) = (&task.ip, &mut ev) {
            m.insert(
                "ipAddresses".into(),
                json!([{"ipAddress": ip, "protocol": "IPv4"}]),
            );
        }
        self.shared.publish("status_update_event", ev);
    }
}

impl Drop for FakeMarathon {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_streams();
    }
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
                async move {
                    let mut stall = shared.stall.subscribe();
                    let _ = stall.wait_for(|on| !*on).await;
                    Ok::<_, Infallible>(handle(req, &shared))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn message(status: StatusCode, text: &str) -> Resp {
    reply(
        status,
        "application/json",
        json!({ "message": text }).to_string(),
    )
}

fn query_all(req: &Request<Incoming>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .collect()
}

fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Resp {
    {
        let mut s = shared.state.lock();
        if let Some(code) = s.fail {
            s.counts.failed += 1;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return message(status, "fake marathon failing on purpose");
        }
        if let Some(token) = &s.token {
            let expected = format!("token={token}");
            let sent = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if sent != Some(expected.as_str()) {
                s.counts.unauthorized += 1;
                let mut r = message(
                    StatusCode::UNAUTHORIZED,
                    "Authentication is required, or the token is invalid",
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("acsjwt"),
                );
                return r;
            }
        }
    }
    if req.method() != Method::GET {
        return message(StatusCode::METHOD_NOT_ALLOWED, "only GET is implemented");
    }
    let path = req.uri().path().to_string();
    let embed = query_all(&req, "embed");
    let with_tasks = embed.iter().any(|e| e == "apps.tasks" || e == "app.tasks");
    match path.as_str() {
        "/ping" => reply(StatusCode::OK, "text/plain", "pong"),
        "/v2/apps" | "/v2/apps/" => {
            let mut s = shared.state.lock();
            s.counts.apps += 1;
            json_reply(render::apps(&s.apps, s.shape, with_tasks))
        }
        "/v2/tasks" => {
            let s = shared.state.lock();
            json_reply(render::tasks(&s.apps, s.shape))
        }
        "/v2/events" => events(&req, shared),
        p => match p.strip_prefix("/v2/apps") {
            Some(id) => {
                let s = shared.state.lock();
                match s.apps.get(id.trim_end_matches('/')) {
                    Some(app) => {
                        json_reply(json!({ "app": render::app(app, s.shape, with_tasks) }))
                    }
                    None => message(StatusCode::NOT_FOUND, &format!("App '{id}' does not exist")),
                }
            }
            None => message(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

fn json_reply(v: Value) -> Resp {
    reply(StatusCode::OK, "application/json", v.to_string())
}

/// `GET /v2/events`: an SSE stream fed by the event bus until dropped.
fn events(req: &Request<Incoming>, shared: &Arc<Shared>) -> Resp {
    let accepts = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !accepts {
        return message(
            StatusCode::METHOD_NOT_ALLOWED,
            "the event stream needs Accept: text/event-stream",
        );
    }
    let filter = query_all(req, "event_type");
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut bus = shared.events.subscribe();
    let mut drops = shared.drops.subscribe();
    drops.borrow_and_update();
    let mut stall = shared.stall.subscribe();
    let heartbeat = *shared.heartbeat.borrow();
    {
        let mut s = shared.state.lock();
        s.counts.streams += 1;
        s.open_streams += 1;
    }
    let shared2 = shared.clone();
    tokio::spawn(async move {
        let attached = json!({"remoteAddress": "127.0.0.1", "eventType": "event_stream_attached", "timestamp": render::timestamp(0)});
        let mut ok = tx
            .send(frame("event_stream_attached", &attached.to_string()))
            .await
            .is_ok();
        let mut beat = tokio::time::interval(heartbeat);
        beat.tick().await;
        while ok {
            tokio::select! {
                ev = bus.recv() => match ev {
                    Ok((kind, data)) => {
                        if !filter.is_empty() && !filter.contains(&kind) {
                            continue;
                        }
                        tokio::select! {
                            _ = stall.wait_for(|on| !*on) => {}
                            _ = drops.changed() => break,
                        }
                        ok = tx.send(frame(&kind, &data)).await.is_ok();
                    }
                    // A consumer too slow for the bus is disconnected, as Marathon does.
                    Err(_) => break,
                },
                _ = beat.tick() => {
                    if !*stall.borrow() {
                        ok = tx.send(Bytes::from_static(b": keep-alive\r\n")).await.is_ok();
                    }
                }
                _ = drops.changed() => break,
                () = tx.closed() => break,
            }
        }
        shared2.state.lock().open_streams -= 1;
    });
    let mut r = Response::new(ChannelBody { rx }.boxed());
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream;charset=utf-8"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// One SSE frame with Jetty's CRLF line ends.
fn frame(kind: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {kind}\r\ndata: {data}\r\n\r\n"))
}

/// A response body fed by a channel; ends when the sender is dropped.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests;
