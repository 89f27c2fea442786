//! Steady load through a proxy: client loops sending requests concurrently,
//! for a number of requests ([`Load::run`]) or until stopped
//! ([`Load::start`] then [`Running::stop`]), recording every outcome (status
//! or error, latency, who answered) in a [`Report`].
//!
//! Every request has a client-side deadline ([`Load::timeout`], 5 s by
//! default) so a proxy that never answers fails the test instead of hanging
//! it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wait::Poll;

/// How to load a proxy: where, what, how many at once.
#[derive(Debug, Clone)]
pub struct Load {
    proxy: SocketAddr,
    host: String,
    path: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Bytes,
    http2: bool,
    concurrency: usize,
    timeout: Duration,
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was sent.
    pub started: Instant,
    /// Until its whole body arrived (or it failed).
    pub latency: Duration,
    /// The response status, if a head arrived.
    pub status: Option<u16>,
    /// What went wrong on the client side (connect, head, body, deadline).
    pub error: Option<String>,
    /// The `x-upstream` header: which upstream answered.
    pub upstream: Option<String>,
    /// The response had `x-envoy-overloaded: true`.
    pub overloaded: bool,
    /// The `grpc-status` of the response head, if any.
    pub grpc_status: Option<String>,
    /// The start of the body of an answer other than 200.
    pub body: String,
}

impl Outcome {
    /// A 200 whose body arrived whole.
    pub fn is_ok(&self) -> bool {
        self.status == Some(200) && self.error.is_none()
    }

    fn describe(&self) -> String {
        match (&self.status, &self.error) {
            (Some(s), None) => format!("{s} {:?}", self.body),
            (Some(s), Some(e)) => format!("{s} then {e}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "nothing".to_string(),
        }
    }
}

impl Load {
    /// GET `/` for `host` through `proxy`, from 8 client loops.
    pub fn new(proxy: SocketAddr, host: &str) -> Self {
        Self {
            proxy,
            host: host.to_string(),
            path: "/".to_string(),
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            http2: false,
            concurrency: 8,
            timeout: Duration::from_secs(5),
        }
    }

    /// Client loops running at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The request path.
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }

    /// The request method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The request body (sent with its length; empty by default).
    pub fn body(mut self, body: &'static [u8]) -> Self {
        self.body = Bytes::from_static(body);
        self
    }

    /// Speaks HTTP/2 with prior knowledge to the proxy (HTTP/1.1 by default).
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// The client-side deadline of one request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `total` requests and reports them.
    pub async fn run(self, total: usize) -> Report {
        self.spawn(Some(total)).stop_when_done().await
    }

    /// Sends requests until [`Running::stop`].
    pub fn start(self) -> Running {
        self.spawn(None)
    }

    fn spawn(self, total: Option<usize>) -> Running {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let live = Arc::new(Live {
            stop: AtomicBool::new(false),
            issued: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            outcomes: Mutex::new(Vec::new()),
        });
        let load = Arc::new(self);
        let started = Instant::now();
        let tasks = (0..load.concurrency)
            .map(|_| {
                let (load, live) = (load.clone(), live.clone());
                let mut client = if load.http2 {
                    Sender::H2(None)
                } else {
                    Sender::H1(Box::new(client.clone()))
                };
                tokio::spawn(async move {
                    while !live.stop.load(Ordering::SeqCst) {
                        let n = live.issued.fetch_add(1, Ordering::SeqCst);
                        if total.is_some_and(|t| n >= t) {
                            break;
                        }
                        let outcome = load.once(&mut client).await;
                        live.outcomes.lock().push(outcome);
                        live.completed.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Running {
            live,
            tasks,
            started,
        }
    }

    async fn once(&self, client: &mut Sender) -> Outcome {
        let started = Instant::now();
        let mut outcome = Outcome {
            started,
            latency: Duration::ZERO,
            status: None,
            error: None,
            upstream: None,
            overloaded: false,
            grpc_status: None,
            body: String::new(),
        };
        // HTTP/1.1 names the service in `host`; HTTP/2 in `:authority`.
        let mut req = Request::builder().method(self.method.clone());
        req = if self.http2 {
            req.uri(format!("http://{}{}", self.host, self.path))
        } else {
            req.uri(format!("http://{}{}", self.proxy, self.path))
                .header("host", &self.host)
        };
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(self.body.clone())) {
            Ok(r) => r,
            Err(e) => panic!("building a load request: {e}"),
        };
        let exchange = async {
            let resp = match client.send(self.proxy, req).await {
                Ok(r) => r,
                Err(e) => {
                    outcome.error = Some(e);
                    return;
                }
            };
            outcome.status = Some(resp.status().as_u16());
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            outcome.upstream = header("x-upstream");
            outcome.overloaded = header("x-envoy-overloaded").as_deref() == Some("true");
            outcome.grpc_status = header("grpc-status");
            match resp.into_body().collect().await {
                Ok(body) => {
                    if outcome.status != Some(200) {
                        let body = body.to_bytes();
                        let end = body.len().min(200);
                        outcome.body = String::from_utf8_lossy(&body[..end]).into_owned();
                    }
                }
                Err(e) => outcome.error = Some(format!("body: {e:?}")),
            }
        };
        if tokio::time::timeout(self.timeout, exchange).await.is_err() {
            outcome.error = Some(format!("no answer within {:?}", self.timeout));
        }
        outcome.latency = started.elapsed();
        outcome
    }
}

/// One client loop's way to the proxy: the shared HTTP/1.1 pool, or its
/// own HTTP/2 connection (opened again when it closes).
enum Sender {
    H1(Box<Client<HttpConnector, Full<Bytes>>>),
    H2(Option<http2::SendRequest<Full<Bytes>>>),
}

impl Sender {
    async fn send(
        &mut self,
        proxy: SocketAddr,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        let slot = match self {
            Sender::H1(client) => {
                return client
                    .request(req)
                    .await
                    .map_err(|e| format!("request: {e:?}"))
            }
            Sender::H2(slot) => slot,
        };
        let mut sender = match slot.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let tcp = TcpStream::connect(proxy)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("handshake: {e:?}"))?;
                tokio::spawn(conn);
                sender
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e:?}"))?;
        let resp = sender.send_request(req).await;
        *slot = Some(sender);
        resp.map_err(|e| format!("request: {e:?}"))
    }
}

/// What the client loops share.
struct Live {
    stop: AtomicBool,
    issued: AtomicUsize,
    completed: AtomicUsize,
    outcomes: Mutex<Vec<Outcome>>,
}

/// Load under way.
#[derive(Debug)]
pub struct Running {
    live: Arc<Live>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("completed", &self.completed.load(Ordering::SeqCst))
            .finish()
    }
}

impl Running {
    /// Requests completed so far.
    pub fn completed(&self) -> usize {
        self.live.completed.load(Ordering::SeqCst)
    }

    /// Requests completed so far that were not a whole 200.
    pub fn failed(&self) -> usize {
        self.live
            .outcomes
            .lock()
            .iter()
            .filter(|o| !o.is_ok())
            .count()
    }

    /// Waits until `n` more requests have completed (fails the test after
    /// the default deadline).
    pub async fn wait_for(&self, n: usize) {
        let target = self.completed() + n;
        Poll::new()
            .until(&format!("{n} more requests through the load"), || {
                self.completed() >= target
            })
            .await;
    }

    /// The outcomes so far.
    pub fn report(&self) -> Report {
        Report {
            outcomes: self.live.outcomes.lock().clone(),
            elapsed: self.started.elapsed(),
        }
    }

    /// Stops sending, waits for the requests in flight, and reports.
    pub async fn stop(self) -> Report {
        self.live.stop.store(true, Ordering::SeqCst);
        self.stop_when_done().await
    }

    async fn stop_when_done(self) -> Report {
        for task in self.tasks {
            if let Err(e) = task.await {
                panic!("a load task failed: {e}");
            }
        }
        let outcomes = std::mem::take(&mut *self.live.outcomes.lock());
        Report {
            outcomes,
            elapsed: self.started.elapsed(),
        }
    }
}

/// The outcomes of a load, with counts and latency quantiles.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every request, in completion order.
    pub outcomes: Vec<Outcome>,
    /// From the start of the load to the report.
    pub elapsed: Duration,
}

impl Report {
    /// Requests sent.
    pub fn total(&self) -> usize {
        self.outcomes.len()
    }

    /// Whole 200s.
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// Responses per status (requests without a head are not counted).
    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut m = BTreeMap::new();
        for s in self.outcomes.iter().filter_map(|o| o.status) {
            *m.entry(s).or_insert(0) += 1;
        }
        m
    }

    /// Responses with this status.
    pub fn status(&self, status: u16) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status == Some(status))
            .count()
    }

    /// Answers per `x-upstream`.
    pub fn by_upstream(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in &self.outcomes {
            let who = o.upstream.clone().unwrap_or_else(|| "-".to_string());
            *m.entry(who).or_insert(0) += 1;
        }
        m
    }

    /// Every request that was not a whole 200, described (at most 20).
    pub fn failures(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| !o.is_ok())
            .take(20)
            .map(Outcome::describe)
            .collect()
    }

    /// The outcomes of requests sent at or after `t`.
    pub fn since(&self, t: Instant) -> Report {
        Report {
            outcomes: self
                .outcomes
                .iter()
                .filter(|o| o.started >= t)
                .cloned()
                .collect(),
            elapsed: self.elapsed,
        }
    }

    /// The latency below which a share `q` (0..=1) of requests finished
    /// (nearest rank); zero without requests.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l: Vec<Duration> = self.outcomes.iter().map(|o| o.latency).collect();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l.sort_unstable();
        let rank = (q.clamp(0.0, 1.0) * l.len() as f64).ceil() as usize;
        l[rank.clamp(1, l.len()) - 1]
    }

    /// The median latency.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// The 99th percentile latency.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The slowest request.
    pub fn max(&self) -> Duration {
        self.quantile(1.0)
    }

    /// One line: totals, statuses, errors, quantiles, upstreams.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} requests in {:?}: {} ok, statuses {:?}",
            self.total(),
            self.elapsed,
            self.ok(),
            self.statuses()
        );
        let errors = self.outcomes.iter().filter(|o| o.error.is_some()).count();
        let _ = write!(
            s,
            ", {errors} errors, p50 {:?}, p99 {:?}, max {:?}, by upstream {:?}",
            self.p50(),
            self.p99(),
            self.max(),
            self.by_upstream()
        );
        s
    }
}
