//! [`ChaosUpstream`]: a test upstream that fails on command, for the
//! resilience end-to-end tests; [`load`]: steady load through a proxy.
//!
//! The upstream listens on `127.0.0.1:0` and speaks HTTP/1.1 through its own
//! small server (so a failure lands exactly where it is meant to on the
//! wire) and HTTP/2 with prior knowledge through hyper (told apart by the
//! connection preface). What it does with each request is a [`Behaviour`],
//! switched at run time ([`ChaosUpstream::set`], or
//! [`ChaosUpstream::set_next`] for the next few requests only).
//! [`ChaosUpstream::kill`] closes the listener and every open connection, so
//! connects are refused; [`ChaosUpstream::restart`] listens again on the same
//! port. It counts requests (by method), connections accepted and
//! connections open. `GET /healthz` ([`HEALTH_PATH`]) answers 200 or 503 as
//! [`ChaosUpstream::set_healthy`] says, whatever the behaviour, and is
//! counted apart from other requests.
//!
//! Clones share one upstream (a handle for load tasks); it stops when the
//! last clone is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::wait::Poll;

pub mod load;

/// The health path, answered by the health switch alone.
pub const HEALTH_PATH: &str = "/healthz";

/// The `content-length` announced by [`Behaviour::ResetMidResponse`]; only
/// [`PARTIAL_BODY`] bytes of it are sent.
pub const ANNOUNCED_LENGTH: usize = 1024;

/// The body bytes sent before a [`Behaviour::ResetMidResponse`] reset.
pub const PARTIAL_BODY: usize = 100;

/// How long an HTTP/2 [`Behaviour::ResetMidResponse`] waits after the
/// partial body before resetting the stream.
pub const RESET_PAUSE: Duration = Duration::from_millis(20);

/// What the upstream does with a request (other than a health check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the upstream's name as the body; `x-upstream` names it and
    /// `x-seen-method`/`x-seen-path` echo the request.
    Normal,
    /// This status, with the same headers and body as `Normal`.
    Status(u16),
    /// 200, `content-type: application/grpc` and this `grpc-status` in the
    /// head (a trailers-only gRPC answer), no body.
    GrpcStatus(u32),
    /// Reads the request and never answers (the connection stays open until
    /// the peer closes it or the upstream is killed).
    Hang,
    /// Sends a head announcing [`ANNOUNCED_LENGTH`] bytes, [`PARTIAL_BODY`]
    /// of them, then resets: TCP RST (`SO_LINGER` 0) on HTTP/1.1, a stream
    /// reset on HTTP/2.
    ResetMidResponse,
    /// Reads the request, then closes the connection without answering.
    CloseBeforeResponse,
    /// Answers as `Normal` after this delay (the upstream's own slowness).
    Slow(Duration),
}

/// A test upstream that fails on command (see the [module docs](self)).
#[derive(Clone)]
pub struct ChaosUpstream {
    shared: Arc<Shared>,
    life: Arc<Life>,
}

impl std::fmt::Debug for ChaosUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosUpstream")
            .field("name", &self.shared.name)
            .field("addr", &self.life.addr)
            .field("behaviour", &self.behaviour())
            .finish()
    }
}

/// What the serving tasks share: the switches and the counters.
struct Shared {
    name: String,
    behaviour: Mutex<Switch>,
    healthy: AtomicBool,
    requests: AtomicUsize,
    by_method: Mutex<BTreeMap<String, usize>>,
    health_checks: AtomicUsize,
    connections: AtomicUsize,
    open: AtomicUsize,
}

/// The standing behaviour and the ones queued for the next requests.
struct Switch {
    standing: Behaviour,
    next: VecDeque<Behaviour>,
}

/// The listener's life: `alive` goes false on kill; dropping the sender
/// (with the last clone) ends every task.
struct Life {
    addr: SocketAddr,
    alive: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.alive.send_replace(false);
        if let Some(task) = self.accept.lock().take() {
            task.abort();
        }
    }
}

impl ChaosUpstream {
    /// Starts an upstream named `name` on a free loopback port, behaving
    /// [`Behaviour::Normal`] and healthy.
    pub async fn start(name: &str) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding chaos upstream {name}: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("chaos upstream {name}'s address: {e}"),
        };
        let shared = Arc::new(Shared {
            name: name.to_string(),
            behaviour: Mutex::new(Switch {
                standing: Behaviour::Normal,
                next: VecDeque::new(),
            }),
            healthy: AtomicBool::new(true),
            requests: AtomicUsize::new(0),
            by_method: Mutex::new(BTreeMap::new()),
            health_checks: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let (alive, _) = watch::channel(true);
        let task = tokio::spawn(accept(listener, shared.clone(), alive.subscribe()));
        Self {
            shared,
            life: Arc::new(Life {
                addr,
                alive,
                accept: Mutex::new(Some(task)),
            }),
        }
    }

    /// Starts one upstream per name.
    pub async fn start_many(names: &[&str]) -> Vec<Self> {
        let mut ups = Vec::with_capacity(names.len());
        for name in names {
            ups.push(Self::start(name).await);
        }
        ups
    }

    /// Its name (the `x-upstream` header and the body of a normal answer).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its address (the same after a restart).
    pub fn addr(&self) -> SocketAddr {
        self.life.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.life.addr.port()
    }

    /// Behaves as `b` from the next request on (queued
    /// [`set_next`](Self::set_next) behaviours are dropped).
    pub fn set(&self, b: Behaviour) {
        let mut s = self.shared.behaviour.lock();
        s.standing = b;
        s.next.clear();
    }

    /// Behaves as `b` for the next `n` requests, then as before.
    pub fn set_next(&self, n: usize, b: Behaviour) {
        let mut s = self.shared.behaviour.lock();
        s.next.extend(std::iter::repeat_n(b, n));
    }

    /// The standing behaviour.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.behaviour.lock().standing
    }

    /// Makes [`HEALTH_PATH`] answer 200 (`true`) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received (whole heads read), health checks excluded.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests received with this method (e.g. `"GET"`).
    pub fn requests_by(&self, method: &str) -> usize {
        self.shared
            .by_method
            .lock()
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Health checks received on [`HEALTH_PATH`].
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Whether it listens (not killed).
    pub fn is_up(&self) -> bool {
        *self.life.alive.borrow()
    }

    /// Stops listening and closes every open connection; returns once the
    /// port refuses connections and no connection is left open.
    pub async fn kill(&self) {
        self.life.alive.send_replace(false);
        let task = self.life.accept.lock().take();
        if let Some(task) = task {
            // The accept loop ends on the signal, dropping the listener.
            let _ = task.await;
        }
        let open = &self.shared.open;
        Poll::new()
            .every(Duration::from_millis(1))
            .until("killed upstream's connections to close", || {
                open.load(Ordering::SeqCst) == 0
            })
            .await;
    }

    /// Listens again on the same port, keeping behaviour and counters.
    pub async fn restart(&self) {
        if self.is_up() {
            return;
        }
        let listener = match TcpListener::bind(self.life.addr).await {
            Ok(l) => l,
            Err(e) => panic!("rebinding chaos upstream {}: {e}", self.shared.name),
        };
        self.life.alive.send_replace(true);
        let task = tokio::spawn(accept(
            listener,
            self.shared.clone(),
            self.life.alive.subscribe(),
        ));
        *self.life.accept.lock() = Some(task);
    }
}

impl Shared {
    /// Counts a request and says what to do with it; `None` for a health
    /// check (counted apart).
    fn arrived(&self, method: &str, path: &str) -> Option<Behaviour> {
        let path = path.split('?').next().unwrap_or(path);
        if method == "GET" && path == HEALTH_PATH {
            self.health_checks.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        *self.by_method.lock().entry(method.to_string()).or_insert(0) += 1;
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut s = self.behaviour.lock();
        Some(s.next.pop_front().unwrap_or(s.standing))
    }

    fn health_status(&self) -> u16 {
        if self.healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        }
    }
}

/// Decrements the open-connection count when a connection task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut alive: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = alive.wait_for(|a| !*a) => return,
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(shared.clone());
        let shared = shared.clone();
        let mut alive = alive.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _ = stream.set_nodelay(true);
            tokio::select! {
                _ = serve(stream, shared) => {}
                _ = alive.wait_for(|a| !*a) => {}
            }
        });
    }
}

/// The HTTP/2 connection preface starts so; no HTTP/1.1 method does.
const H2_PREFIX: &[u8] = b"PRI";

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut first = [0u8; 3];
    let h2 = loop {
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= H2_PREFIX.len() => break first == H2_PREFIX,
            Ok(n) if first[..n] != H2_PREFIX[..n] => break false,
            // A preface cut after one or two bytes: wait for the rest.
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    if h2 {
        serve_h2(stream, shared).await;
    } else {
        let _ = serve_h1(BufReader::new(stream), &shared).await;
    }
}

// ---------------------------------------------------------------- HTTP/1.1

/// What the upstream needs from a request head.
struct Head {
    method: String,
    path: String,
    close: bool,
}

/// The largest head read.
const MAX_HEAD: usize = 64 * 1024;

async fn serve_h1(mut io: BufReader<TcpStream>, shared: &Shared) -> io::Result<()> {
    while let Some(head) = read_request(&mut io).await? {
        let Some(behaviour) = shared.arrived(&head.method, &head.path) else {
            let status = shared.health_status();
            write_h1(&mut io, status, &[], b"health\n", head.close).await?;
            if head.close {
                return Ok(());
            }
            continue;
        };
        let echo = [
            ("x-upstream", shared.name.as_str()),
            ("x-seen-method", head.method.as_str()),
            ("x-seen-path", head.path.as_str()),
        ];
        let body = shared.name.as_bytes();
        match behaviour {
            Behaviour::Normal => write_h1(&mut io, 200, &echo, body, head.close).await?,
            Behaviour::Status(s) => write_h1(&mut io, s, &echo, body, head.close).await?,
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                write_h1(&mut io, 200, &echo, body, head.close).await?;
            }
            Behaviour::GrpcStatus(code) => {
                let code = code.to_string();
                let grpc = [
                    ("x-upstream", shared.name.as_str()),
                    ("content-type", "application/grpc"),
                    ("grpc-status", code.as_str()),
                ];
                write_h1(&mut io, 200, &grpc, b"", head.close).await?;
            }
            Behaviour::Hang => {
                // Until the peer goes away (or the upstream is killed).
                let mut scratch = [0u8; 1024];
                while io.read(&mut scratch).await? > 0 {}
                return Ok(());
            }
            Behaviour::CloseBeforeResponse => return Ok(()),
            Behaviour::ResetMidResponse => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {ANNOUNCED_LENGTH}\r\nx-upstream: {}\r\n\r\n",
                    shared.name
                );
                io.write_all(head.as_bytes()).await?;
                io.write_all(&[b'x'; PARTIAL_BODY]).await?;
                io.flush().await?;
                // Closing with a zero linger sends RST instead of FIN.
                io.get_ref().set_zero_linger()?;
                return Ok(());
            }
        }
        if head.close {
            return Ok(());
        }
    }
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one request (head and body, the body discarded); `None` at a clean
/// end of the connection.
async fn read_request(io: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        if io.read_until(b'\n', &mut raw).await? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed inside a request head"))
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(invalid("request head too long"));
        }
        let line = &raw[start..];
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                // An empty line before the request line is ignored (RFC 9112 2.2).
                raw.clear();
                continue;
            }
            break;
        }
    }
    let text = std::str::from_utf8(&raw).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = text.lines();
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let mut close = version == "HTTP/1.0";
    let mut length = 0usize;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| invalid("bad content-length"))?;
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().ends_with("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    if chunked {
        discard_chunked(io).await?;
    } else {
        discard(io, length).await?;
    }
    Ok(Some(Head {
        method: method.to_string(),
        path: path.to_string(),
        close,
    }))
}

async fn discard(io: &mut BufReader<TcpStream>, n: usize) -> io::Result<()> {
    let copied = tokio::io::copy(&mut (&mut *io).take(n as u64), &mut tokio::io::sink()).await?;
    if copied < n as u64 {
        return Err(invalid("connection closed inside a request body"));
    }
    Ok(())
}

async fn discard_chunked(io: &mut BufReader<TcpStream>) -> io::Result<()> {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(invalid("connection closed inside a chunked body"));
        }
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if io.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        discard(io, size + 2).await?;
    }
}

async fn write_h1(
    io: &mut BufReader<TcpStream>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

// ------------------------------------------------------------------ HTTP/2

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn serve_h2(stream: TcpStream, shared: Arc<Shared>) {
    // A `CloseBeforeResponse` request closes the whole connection.
    let close = Arc::new(Notify::new());
    let service = {
        let close = close.clone();
        hyper::service::service_fn(move |req| answer_h2(shared.clone(), close.clone(), req))
    };
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = close.notified() => {}
    }
}

async fn answer_h2(
    shared: Arc<Shared>,
    close: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(behaviour) = shared.arrived(&method, &path) else {
        return Ok(respond(shared.health_status(), &[], full("health\n")));
    };
    let name = shared.name.clone();
    let echo = [
        ("x-upstream", name.as_str()),
        ("x-seen-method", method.as_str()),
        ("x-seen-path", path.as_str()),
    ];
    let resp = match behaviour {
        Behaviour::Normal => respond(200, &echo, full(name.clone())),
        Behaviour::Status(s) => respond(s, &echo, full(name.clone())),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            respond(200, &echo, full(name.clone()))
        }
        Behaviour::GrpcStatus(code) => {
            let code = code.to_string();
            let grpc = [
                ("x-upstream", name.as_str()),
                ("content-type", "application/grpc"),
                ("grpc-status", code.as_str()),
            ];
            respond(200, &grpc, full(Bytes::new()))
        }
        Behaviour::Hang => std::future::pending().await,
        Behaviour::CloseBeforeResponse => {
            close.notify_one();
            std::future::pending().await
        }
        Behaviour::ResetMidResponse => {
            use futures_util::StreamExt as _;
            type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
            let data: Item = Ok(Frame::data(Bytes::from_static(&[b'x'; PARTIAL_BODY])));
            // The reset follows the partial body a moment later, so the
            // peer has the head before the stream ends.
            let reset = futures_util::stream::once(async {
                tokio::time::sleep(RESET_PAUSE).await;
                Err::<Frame<Bytes>, _>("chaos: reset mid-response".into())
            });
            let frames = futures_util::stream::iter([data]).chain(reset);
            let body = BodyExt::boxed(StreamBody::new(frames));
            let len = ANNOUNCED_LENGTH.to_string();
            respond(
                200,
                &[("x-upstream", name.as_str()), ("content-length", &len)],
                body,
            )
        }
    };
    Ok(resp)
}

fn respond(status: u16, headers: &[(&str, &str)], body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests;
