//! A small HTTP/1.1 + HTTP/2 upstream for the demo and the end-to-end tests.
//!
//! `GET` answers `<name>\n`; any request with a body gets the body echoed back,
//! streamed. Every response says who answered (`x-upstream`) and what arrived
//! (`x-seen-host`, `x-seen-path`, `x-seen-version`, `x-seen-headers`).
//! Test knobs: `x-delay-ms: N` waits before answering; `x-body-delay-ms: N`
//! sends the headers at once and the body N ms later.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    received: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

impl Upstream {
    /// Requests that have arrived so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type Delayed = StreamBody<futures_util::stream::Once<BoxFuture<Result<Frame<Bytes>, Infallible>>>>;
type Body = Either<Either<Full<Bytes>, Incoming>, Delayed>;

/// Starts an upstream on `127.0.0.1:0`.
pub async fn spawn(name: &str) -> std::io::Result<Upstream> {
    spawn_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts an upstream on `addr`.
pub async fn spawn_on(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let shared: Arc<str> = Arc::from(name);
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let connections_seen = connections.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop_rx.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            connections_seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            let name = shared.clone();
            let counter = counter.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    respond(name.clone(), req)
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
    });
    Ok(Upstream {
        addr,
        name: name.to_string(),
        received,
        connections,
        _stop: stop_tx,
    })
}

async fn respond(name: Arc<str>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    let seen_headers = names.join(",");
    let version = format!("{:?}", req.version());
    let ms = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let (delay, body_delay) = (ms("x-delay-ms"), ms("x-body-delay-ms"));
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let has_body = !http_body::Body::is_end_stream(req.body());
    let text = Bytes::from(format!("{name}\n"));
    let mut resp = if has_body {
        Response::new(Either::Left(Either::Right(req.into_body())))
    } else if let Some(d) = body_delay {
        let later: BoxFuture<_> = Box::pin(async move {
            tokio::time::sleep(d).await;
            Ok(Frame::data(text))
        });
        Response::new(Either::Right(StreamBody::new(futures_util::stream::once(
            later,
        ))))
    } else {
        Response::new(Either::Left(Either::Left(Full::new(text))))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert("x-upstream", v);
    }
    if let Some(v) = host {
        h.insert("x-seen-host", v);
    }
    if let Ok(v) = HeaderValue::from_str(&path) {
        h.insert("x-seen-path", v);
    }
    if let Ok(v) = HeaderValue::from_str(&version) {
        h.insert("x-seen-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&seen_headers) {
        h.insert("x-seen-headers", v);
    }
    Ok(resp)
}
