//! Three services and two real anymesh proxies carrying traffic between
//! them, for a real Prometheus to scrape and Istio's dashboards to read.
//!
//! ```text
//!   outside client ──plain──▶ ┐
//!   frontend ─[P1]──mTLS──▶ [P2]─ backend ─[P2]──plain──▶ db (no proxy)
//!   frontend ◀──mTLS──[P1]◀──────────────────┘ (backend calls back)
//! ```
//!
//! `frontend` runs behind proxy P1 and `backend` behind P2, each with its
//! own SPIFFE identity and an inbound listener (PERMISSIVE: no policy);
//! `db` has no proxy. Four [`Flow`]s run at once, each repeating [`CYCLE`]
//! (9 in 10 responses non-5xx, a mix of durations and sizes), so every
//! panel of Istio's dashboards has data on both sides of its mutual-TLS
//! split where Istio gives it some: frontend → backend over mutual TLS
//! (reported by P1 as `source` and P2 as `destination`), an outside client
//! → backend in plain text (P2 only, source `unknown`), backend → db in
//! plain text (P2 only), backend → frontend over mutual TLS (P2 as
//! `source`, P1 as `destination`).
//!
//! The applications are [`App`]s answering what each request's query asks
//! for (status, delay, response size) and counting what they answered per
//! flow, so the test knows what each proxy must have reported.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::harness::{eventually, write, TestMesh};
use crate::mtls::launch;
use crate::mtls::pki::{identity_files, Root};

/// The services' namespace.
pub(crate) const NAMESPACE: &str = "default";

/// The Kubernetes-style name of service `name`, as Istio's
/// `destination_service` reports it.
pub(crate) fn fqdn(name: &str) -> String {
    format!("{name}.{NAMESPACE}.svc.cluster.local")
}

/// What one request asks its application for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) code: u16,
    pub(crate) delay_ms: u64,
    /// The request body's size (a POST when not zero).
    pub(crate) request_bytes: usize,
    pub(crate) response_bytes: usize,
}

const fn step(code: u16, delay_ms: u64, request_bytes: usize, response_bytes: usize) -> Step {
    Step {
        code,
        delay_ms,
        request_bytes,
        response_bytes,
    }
}

/// The requests every flow repeats. One in ten is a 503 and one a 404 (the
/// success rate is 9 in 10); six answer at once, two after 30 ms and two
/// after 300 ms, so the median is under 25 ms and the 90th and 99th
/// percentiles in Envoy's 250–500 ms bucket; one request carries 1,500
/// bytes and one response 20,000, the 99th percentiles of the sizes.
pub(crate) const CYCLE: [Step; 10] = [
    step(200, 0, 0, 100),
    step(200, 0, 0, 2_000),
    step(200, 0, 300, 100),
    step(404, 0, 0, 50),
    step(503, 0, 0, 50),
    step(200, 0, 0, 100),
    step(200, 30, 0, 4_000),
    step(200, 30, 0, 100),
    step(200, 300, 1_500, 20_000),
    step(200, 300, 0, 100),
];

/// Bounds on what a request may ask for: a bad query gets a bounded answer.
const MAX_DELAY_MS: u64 = 5_000;
const MAX_RESPONSE_BYTES: usize = 1 << 20;

impl Step {
    /// The path and query asking for this step, marked with the flow's name.
    pub(crate) fn path(&self, flow: &str) -> String {
        format!(
            "/?flow={flow}&code={}&delay_ms={}&response_bytes={}",
            self.code, self.delay_ms, self.response_bytes
        )
    }

    /// The flow and step a query asks for: unknown or malformed fields keep
    /// their defaults (flow `-`, 200 at once, empty), values are capped.
    pub(crate) fn from_query(query: &str) -> (String, Step) {
        let mut flow = "-".to_owned();
        let mut s = step(200, 0, 0, 0);
        for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match key {
                "flow" if (1..=16).contains(&value.len()) => flow = value.to_owned(),
                "code" => {
                    if let Some(c) = value.parse().ok().filter(|c| (200..600).contains(c)) {
                        s.code = c;
                    }
                }
                "delay_ms" => {
                    s.delay_ms = value.parse().unwrap_or(0).min(MAX_DELAY_MS);
                }
                "response_bytes" => {
                    s.response_bytes = value.parse().unwrap_or(0).min(MAX_RESPONSE_BYTES);
                }
                _ => {}
            }
        }
        (flow, s)
    }
}

/// Responses by status code.
pub(crate) type Tally = BTreeMap<u16, u64>;

/// An application: answers each request as its query asks ([`Step::path`]),
/// after reading its body, with `x-upstream: <name>`; counts its answers per
/// flow. Stops on drop.
pub(crate) struct App {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    served: Arc<parking_lot::Mutex<BTreeMap<String, Tally>>>,
    task: JoinHandle<()>,
}

impl App {
    pub(crate) async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the application");
        let addr = listener.local_addr().expect("the application's address");
        let served: Arc<parking_lot::Mutex<BTreeMap<String, Tally>>> = Arc::default();
        let counts = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counts = counts.clone();
                let service = service_fn(move |req| answer(name, counts.clone(), req));
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            name,
            addr,
            served,
            task,
        }
    }

    /// What it answered to `flow`'s requests, by status.
    pub(crate) fn served(&self, flow: &str) -> Tally {
        self.served.lock().get(flow).cloned().unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &'static str,
    served: Arc<parking_lot::Mutex<BTreeMap<String, Tally>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (flow, s) = Step::from_query(req.uri().query().unwrap_or(""));
    // The whole request is read, as an application would.
    let _ = req.into_body().collect().await;
    tokio::time::sleep(Duration::from_millis(s.delay_ms)).await;
    let mut resp = Response::new(Full::new(Bytes::from(vec![b'x'; s.response_bytes])));
    *resp.status_mut() = StatusCode::from_u16(s.code).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert("x-upstream", HeaderValue::from_static(name));
    *served
        .lock()
        .entry(flow)
        .or_default()
        .entry(resp.status().as_u16())
        .or_insert(0) += 1;
    Ok(resp)
}

/// The three services and both proxies.
pub(crate) struct ThreeServices {
    pub(crate) frontend: App,
    pub(crate) backend: App,
    pub(crate) db: App,
    /// frontend's proxy.
    pub(crate) p1: TestMesh,
    /// backend's proxy.
    pub(crate) p2: TestMesh,
}

/// A services.yaml entry: `name`'s FQDN with the short name as an alias,
/// one endpoint at `app`, behind the mesh proxy `mesh` (its inbound port and
/// service account) when given.
fn service(name: &str, app: &App, mesh: Option<(u16, &str)>) -> String {
    let mesh = mesh
        .map(|(port, sa)| format!(", mesh: {{port: {port}, service_account: {sa}}}"))
        .unwrap_or_default();
    format!(
        "  - name: {}\n    aliases: [{name}]\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: {name}, labels: {{app: {name}, version: v1}}{mesh}}}\n",
        fqdn(name),
        app.addr.port()
    )
}

/// A proxy for the workload `app` (its service account named as it, labels
/// `app`/`version: v1`), with an identity from `root` and an inbound
/// listener, routing to `services`.
async fn proxy(root: &Root, app: &App, services: &[String]) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = app.name;
    root.write_svid(&dir.path().join("id"), NAMESPACE, name, false);
    write(
        &dir.path().join("services.yaml"),
        &format!("services:\n{}", services.concat()),
    );
    write(&dir.path().join("routes.yaml"), "");
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}\
         workloads:\n  - {{name: {name}, namespace: {NAMESPACE}, service_account: {name}, labels: {{app: {name}, version: v1}}, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0}}\n",
        identity_files(&dir.path().join("id")),
        app.addr.port()
    );
    launch(dir, &yaml).await
}

impl ThreeServices {
    pub(crate) async fn start(root: &Root) -> Self {
        let frontend = App::start("frontend").await;
        let backend = App::start("backend").await;
        let db = App::start("db").await;
        // P2 first: P1's registry needs its inbound port (and P2's needs
        // P1's, added once P1 runs).
        let p2 = proxy(root, &backend, &[service("db", &db, None)]).await;
        let p2_inbound = p2.mesh.inbound.expect("backend's proxy listens inbound");
        let p1 = proxy(
            root,
            &frontend,
            &[service(
                "backend",
                &backend,
                Some((p2_inbound.port(), "backend")),
            )],
        )
        .await;
        let p1_inbound = p1.mesh.inbound.expect("frontend's proxy listens inbound");
        write(
            &p2.path("services.yaml"),
            &format!(
                "services:\n{}{}",
                service("db", &db, None),
                service("frontend", &frontend, Some((p1_inbound.port(), "frontend")))
            ),
        );
        // Asked of the admin endpoint, not with a request: every request
        // the proxies see is one the test counts.
        let port = p1_inbound.port().to_string();
        eventually(
            "backend's proxy knows frontend behind its proxy",
            || async {
                let (status, body) = p2.admin("/explain?host=frontend").await;
                (status == StatusCode::OK && body.contains(&port)).then_some(())
            },
        )
        .await;
        Self {
            frontend,
            backend,
            db,
            p1,
            p2,
        }
    }

    /// The four flows: frontend → backend (through P1, mutual TLS to P2), an
    /// outside client → backend (plain text to P2's inbound listener),
    /// backend → db and backend → frontend (through P2).
    pub(crate) fn flows(&self) -> [Flow; 4] {
        let flow = |name, target, host, app| Flow {
            name,
            target,
            host,
            app,
        };
        [
            flow("f1", self.p1.proxy(), "backend", "backend"),
            flow(
                "f2",
                self.p2.mesh.inbound.expect("backend's inbound listener"),
                "backend",
                "backend",
            ),
            flow("f3", self.p2.proxy(), "db", "db"),
            flow("f4", self.p2.proxy(), "frontend", "frontend"),
        ]
    }

    /// The admin listeners Prometheus scrapes.
    pub(crate) fn targets(&self) -> Vec<SocketAddr> {
        vec![self.p1.mesh.admin, self.p2.mesh.admin]
    }
}

/// Requests sent to `target` with `Host: host`, answered by the application
/// `app`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    pub(crate) name: &'static str,
    pub(crate) target: SocketAddr,
    pub(crate) host: &'static str,
    pub(crate) app: &'static str,
}

/// What a flow's client saw.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub(crate) responses: Tally,
    pub(crate) cycles: u64,
    /// Requests that failed or were not answered by the application.
    pub(crate) problems: Vec<String>,
}

/// The flows, each repeating [`CYCLE`] from its own task until stopped.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<(Flow, JoinHandle<Sent>)>,
}

impl Traffic {
    pub(crate) fn start(flows: &[Flow]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = flows
            .iter()
            .map(|&f| (f, tokio::spawn(run(f, stop.clone()))))
            .collect();
        Self { stop, tasks }
    }

    /// Stops every flow at the end of its current cycle (the counts are
    /// whole cycles) and returns what each sent.
    pub(crate) async fn stop(self) -> Vec<(Flow, Sent)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for (f, t) in self.tasks {
            out.push((f, t.await.expect("a flow's task")));
        }
        out
    }
}

async fn run(f: Flow, stop: Arc<AtomicBool>) -> Sent {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut sent = Sent::default();
    while !stop.load(Ordering::SeqCst) {
        for s in CYCLE {
            let method = if s.request_bytes > 0 {
                Method::POST
            } else {
                Method::GET
            };
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{}{}", f.target, s.path(f.name)))
                .header("host", f.host)
                .body(Full::new(Bytes::from(vec![b'y'; s.request_bytes])))
                .expect("a request");
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(resp)) => {
                    let code = resp.status().as_u16();
                    *sent.responses.entry(code).or_insert(0) += 1;
                    let who = resp.headers().get("x-upstream").cloned();
                    let _ = resp.into_body().collect().await;
                    if code != s.code || who.as_ref().and_then(|v| v.to_str().ok()) != Some(f.app) {
                        sent.problems.push(format!(
                            "{}: asked {} of {}, got {code} from {who:?}",
                            f.name, s.code, f.app
                        ));
                    }
                }
                Ok(Err(e)) => sent.problems.push(format!("{}: {e:#}", f.name)),
                Err(_) => sent.problems.push(format!("{}: no answer in 10 s", f.name)),
            }
        }
        sent.cycles += 1;
    }
    sent
}

#[test]
fn a_query_asks_for_a_bounded_step() {
    let s = step(503, 30, 0, 4_000);
    assert_eq!(
        Step::from_query(s.path("f1").trim_start_matches("/?")),
        ("f1".to_owned(), s)
    );
    let (flow, bad) = Step::from_query("code=99&delay_ms=99999999&response_bytes=x&junk&flow=");
    assert_eq!(flow, "-");
    assert_eq!(bad, step(200, MAX_DELAY_MS, 0, 0));
    let success = CYCLE.iter().filter(|s| s.code < 500).count();
    assert_eq!(success * 10, CYCLE.len() * 9);
}
