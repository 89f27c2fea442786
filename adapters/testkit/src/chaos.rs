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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::wait::Poll;

mod h1;
mod h2;
pub mod load;

/// The health path, answered by the health switch alone.
pub const HEALTH_PATH: &str = "/healthz";

/// The `content-length` announced by [`Behaviour::ResetMidResponse`]; only
/// [`PARTIAL_BODY`] bytes of it are sent.
pub const ANNOUNCED_LENGTH: usize = 1024;

/// The body bytes sent before a [`Behaviour::ResetMidResponse`] reset.
pub const PARTIAL_BODY: usize = 100;

/// How long [`Behaviour::ResetMidResponse`] waits after the partial body
/// before resetting, so the peer has the head (and has likely passed it on)
/// before the reset.
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
    /// of them, and after [`RESET_PAUSE`] resets: TCP RST (`SO_LINGER` 0) on HTTP/1.1, a stream
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
        h2::serve(stream, shared).await;
    } else {
        let _ = h1::serve(BufReader::new(stream), &shared).await;
    }
}

#[cfg(test)]
mod tests;
