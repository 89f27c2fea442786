//! The HTTP/1.1 fast path of the outbound listener.
//!
//! One task per client connection reads a request head, routes it, writes it
//! to a pooled upstream connection, and relays the response back, driving
//! both sockets itself. An idle keep-alive connection holds no buffer: one
//! is lent from a per-thread free list ([`bufs`]) when bytes arrive and given
//! back when the exchange ends.
//!
//! A connection that opens with the HTTP/2 preface goes to [`crate::h2`].
//! HTTP/1.1 requests routed to an HTTP/2 upstream go to hyper with the bytes
//! already read put back in front ([`rewind`]); that connection then stays
//! with hyper. Message framing rules are in [`codec`].

pub(crate) mod bridge;
pub(crate) mod bufs;
pub mod codec;
mod rewind;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::atomic::{AtomicU16, Ordering};

use anymesh_core::routes::{HeaderOps, Route, WeightedCluster};
use http::header::SET_COOKIE;
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{ProxyBody, RequestBody};
use crate::forward::{self, Outcome, Plan, Proxy};
use crate::pool::{RawConn, UpstreamError};
use crate::reply::{self, Reason};
use crate::server::ServerSettings;
use codec::{ChunkedDecoder, Framing, HeadError, RequestHead, ResponseHead};

/// What every connection of one listener shares.
pub(crate) struct Shared {
    pub proxy: Arc<Proxy>,
    pub settings: ServerSettings,
    /// Serves the connections handed over to hyper.
    pub hyper: auto::Builder<TokioExecutor>,
}

/// What a connection does after an exchange.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Serve the rest with hyper; the bytes are the ones already read.
    Handover(Bytes),
    /// The client speaks HTTP/2: serve the rest with [`crate::h2`].
    Http2(Bytes),
}

/// Serves one client connection until it closes or `stop` turns true (then
/// an idle connection closes at once and a busy one after its exchange).
pub(crate) async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let mut pending: Option<BytesMut> = None;
    let mut first = true;
    // One wait for the stop for the whole connection: registering a new one
    // at every idle wait costs more than the rest of that wait.
    let mut stop_wait = stop.clone();
    let mut stopped = std::pin::pin!(stop_wait.changed());
    loop {
        let mut buf = match pending.take() {
            Some(b) => b,
            None => {
                tokio::select! {
                    biased;
                    r = stream.readable() => if r.is_err() { return },
                    _ = &mut stopped => return,
                }
                let mut b = bufs::take();
                match read_ready(&mut stream, &mut b).await {
                    Some(Ok(0)) | Some(Err(_)) => {
                        bufs::give(b);
                        return;
                    }
                    Some(Ok(_)) => b,
                    None => {
                        bufs::give(b);
                        continue;
                    }
                }
            }
        };
        // Boxed: the exchange's state exists only while an exchange runs, so
        // an idle connection's task stays small.
        let next = Box::pin(exchange(&mut stream, &mut buf, peer, &shared, first, &stop)).await;
        first = false;
        match next {
            Next::KeepAlive if !*stop.borrow() => {
                if buf.is_empty() {
                    bufs::give(buf);
                } else {
                    pending = Some(buf);
                }
            }
            Next::KeepAlive | Next::Close if *stop.borrow() => {
                bufs::give(buf);
                let _ = stream.shutdown().await;
                return;
            }
            Next::KeepAlive | Next::Close => {
                // Boxed: its timers are not every connection's.
                Box::pin(linger_close(stream, buf, stopped)).await;
                return;
            }
            Next::Http2(prefix) => {
                bufs::give(buf);
                // Boxed: the HTTP/2 connection's state is not every connection's.
                Box::pin(crate::h2::serve(
                    stream,
                    prefix,
                    peer,
                    shared.proxy.clone(),
                    stop,
                ))
                .await;
                return;
            }
            Next::Handover(prefix) => {
                bufs::give(buf);
                // Boxed: hyper's connection state would otherwise make every
                // connection's task, idle ones included, as large as itself.
                Box::pin(handover(stream, prefix, peer, &shared, stop)).await;
                return;
            }
        }
    }
}

/// How long a connection the proxy closes goes on reading what the client
/// still sends, at most in all ([`linger_close`]).
const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// ... and at most while nothing arrives.
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Closes a client connection in stages (RFC 9112 §9.6): the write side
/// first, then what the client still sends is read and dropped until it
/// closes its side, sends nothing for [`LINGER_IDLE`], [`LINGER_TOTAL`]
/// passes or the listener stops. Closing at once with bytes unread makes the
/// kernel answer them with a reset, and a client still sending a body that
/// was refused or answered early gets the reset (a broken pipe while writing,
/// or a reset that can overtake the answer on a real network) instead of the
/// answer.
async fn linger_close(mut stream: TcpStream, mut buf: BytesMut, stopped: impl Future) {
    if stream.shutdown().await.is_err() {
        bufs::give(buf);
        return;
    }
    let deadline = Instant::now() + LINGER_TOTAL;
    let drain = async {
        loop {
            buf.clear();
            buf.reserve(bufs::BUF_SIZE);
            let idle = Instant::now() + LINGER_IDLE;
            match tokio::time::timeout_at(idle.min(deadline), stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    };
    tokio::select! {
        () = drain => {}
        _ = stopped => {}
    }
    bufs::give(buf);
}

/// Serves the rest of a connection with hyper.
async fn handover(
    stream: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) {
    let proxy = shared.proxy.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        // Boxed: hyper moves the service future around; a pointer is cheap to move.
        Box::pin(async move {
            Ok::<_, Infallible>(proxy.handle(req.map(RequestBody::Hyper), peer).await)
        })
    });
    let io = TokioIo::new(rewind::Rewind::new(prefix, stream));
    let conn = shared.hyper.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(%peer, error = %e, "connection ended with error");
    }
}

/// `Some(true)`: the client speaks HTTP/2 with prior knowledge; `None`: too
/// few bytes to tell.
fn h2_preface(buf: &[u8]) -> Option<bool> {
    const PRI: &[u8] = b"PRI ";
    if buf.len() >= PRI.len() {
        Some(buf.starts_with(PRI))
    } else if PRI.starts_with(buf) {
        None
    } else {
        Some(false)
    }
}

/// Why an exchange failed after the request head was accepted.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The client went away or sent a broken body: nothing more can be written.
    Client,
    /// The client's chunked body is malformed.
    ClientBody(codec::ChunkError),
    Connect(UpstreamError),
    Upstream(String),
    /// The route timeout passed.
    Timeout,
}

/// Reads what the socket has now, or `None` when it has nothing yet.
///
/// Unlike `try_read_buf`, a read that leaves the socket drained (a short
/// read) clears the runtime's readiness, so the next wait does not start
/// with a read that can only fail with `WouldBlock`.
async fn read_ready(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<io::Result<usize>> {
    let mut read = std::pin::pin!(stream.read_buf(buf));
    std::future::poll_fn(|cx| {
        Poll::Ready(match read.as_mut().poll(cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        })
    })
    .await
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(bufs::BUF_SIZE);
    stream.read_buf(buf).await
}

/// Reads one request head and serves the exchange.
pub(crate) async fn exchange(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    shared: &Shared,
    first: bool,
    stop: &watch::Receiver<bool>,
) -> Next {
    let head_deadline = shared
        .settings
        .header_read_timeout
        .map(|t| Instant::now() + t);
    let head = loop {
        let parsed = match first.then(|| h2_preface(buf)) {
            Some(Some(true)) => return Next::Http2(buf.split().freeze()),
            Some(None) => Ok(None),
            Some(Some(false)) | None => codec::parse_request(buf),
        };
        match parsed {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "refused request head");
                let start = Instant::now();
                let _ = Box::pin(write_head_error(client, &e)).await;
                shared
                    .proxy
                    .record_status(None, None, e.status().as_u16(), start);
                return Next::Close;
            }
        }
        let read = read_more(client, buf);
        let n = match head_deadline {
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r,
                Err(_) => return Next::Close,
            },
            None => read.await,
        };
        match n {
            Ok(0) | Err(_) => return Next::Close,
            Ok(_) => {}
        }
    };
    let start = Instant::now();
    let proxy = &shared.proxy;
    let routing = proxy.router().current();
    let RequestHead {
        mut parts,
        framing,
        keep_alive,
        expect_continue,
        raw,
    } = head;
    let has_body = !matches!(framing, Framing::None | Framing::Length(0));
    let head_request = parts.method == Method::HEAD;
    let client_11 = parts.version == Version::HTTP_11;
    let stopping = || *stop.borrow();
    let mut plan = match forward::plan(&parts, peer, &routing) {
        Ok(p) => p,
        Err(out) => {
            // The body was not read: the connection cannot carry another request.
            let keep = keep_alive && !has_body && !stopping();
            return Box::pin(finish_local(client, proxy, *out, head_request, keep, start)).await;
        }
    };
    if plan.h2 {
        drop(plan);
        let mut prefix = BytesMut::with_capacity(raw.len() + buf.len());
        prefix.extend_from_slice(&raw);
        prefix.extend_from_slice(buf);
        buf.clear();
        return Next::Handover(prefix.freeze());
    }
    drop(raw);
    if let Err(mut out) = forward::prepare(&mut parts, &plan) {
        plan.label(&mut out);
        let keep = keep_alive && !has_body && !stopping();
        return Box::pin(finish_local(client, proxy, *out, head_request, keep, start)).await;
    }
    if expect_continue {
        // Answered here (100 Continue once the body is wanted), not upstream.
        parts.headers.remove(http::header::EXPECT);
    }
    let idempotent = idempotent(&parts.method);
    let mut out = bufs::take();
    codec::write_request_head(&mut out, &parts, framing);
    drop(parts);
    // A body already read in full goes out with the head, and can be sent again.
    let buffered = match framing {
        Framing::None => true,
        Framing::Length(n) if (buf.len() as u64) >= n => {
            out.extend_from_slice(&buf[..n as usize]);
            buf.advance(n as usize);
            true
        }
        _ => false,
    };
    let request = UpstreamRequest {
        head: &out,
        replayable: buffered && idempotent,
        head_request,
    };
    let ctx = Respond {
        route: plan.hit.route,
        target: plan.target,
        set_cookie: plan.set_cookie.take(),
        head_request,
        client_11,
        keep_alive: keep_alive && !stopping(),
        written: AtomicU16::new(0),
    };
    let deadline = plan.hit.route.timeout.map(|t| start + t);
    let pool = proxy.pool();
    let run = async {
        if buffered {
            let (mut up, mut rbuf, head) = send_buffered(proxy, &plan, &request).await?;
            let r = respond(client, &mut up.stream, &mut rbuf, Some(head), &ctx).await;
            bufs::give(rbuf);
            return r.map(|r| (r, Some(up), true));
        }
        // Boxed: bodies that stream are the rarer case, and their future is
        // large; every exchange's boxed state would carry it otherwise.
        Box::pin(send_streaming(
            client,
            buf,
            pool,
            plan.endpoint,
            &request,
            expect_continue,
            framing,
            &ctx,
        ))
        .await
    };
    let result = match deadline {
        Some(d) => tokio::time::timeout_at(d, run)
            .await
            .unwrap_or(Err(Fail::Timeout)),
        None => run.await,
    };
    bufs::give(out);
    let written = ctx.written.load(Ordering::Relaxed);
    let labels = || (Some(plan.service()), Some(plan.hit.route.name.clone()));
    match result {
        Ok((done, up, body_sent)) => {
            drop(plan.guard);
            let (service, route) = (
                Some(plan.target.cluster.service.as_arc().clone()),
                Some(plan.hit.route.name.clone()),
            );
            proxy.record_status(service, route, done.status.as_u16(), start);
            if let Some(up) = up.filter(|_| done.upstream_reusable && body_sent) {
                pool.release_raw(up);
            }
            if done.keep_client && body_sent {
                Next::KeepAlive
            } else {
                Next::Close
            }
        }
        Err(fail) if written != 0 => {
            tracing::debug!(endpoint = %plan.endpoint, error = ?fail, "exchange ended after the response head");
            let (service, route) = labels();
            proxy.record_status(service, route, written, start);
            Next::Close
        }
        Err(fail) => {
            let mut local = match fail {
                Fail::Client => {
                    let (service, route) = labels();
                    proxy.record_status(service, route, 499, start);
                    return Next::Close;
                }
                Fail::ClientBody(e) => Outcome::local(Reason::BadRequest, e.to_string()),
                Fail::Timeout => Outcome::local(Reason::Timeout, plan.timeout_message()),
                Fail::Connect(e) => Outcome::local(
                    Reason::UpstreamConnect,
                    plan.failure_message(&e.to_string()),
                ),
                Fail::Upstream(e) => {
                    Outcome::local(Reason::UpstreamError, plan.failure_message(&e))
                }
            };
            tracing::debug!(endpoint = %plan.endpoint, status = %local.resp.status(), "upstream request failed");
            plan.label(&mut local);
            // Part of the request body may be unread: never keep such a connection.
            let keep = keep_alive && !has_body && !stopping();
            Box::pin(finish_local(
                client,
                proxy,
                local,
                head_request,
                keep,
                start,
            ))
            .await
        }
    }
}

/// A request that may be sent again when a reused connection turns out closed.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Sends a request whose body is still arriving, full duplex: the response
/// may start (or be echoed) while the body is still coming.
#[allow(clippy::too_many_arguments)]
async fn send_streaming(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    pool: &crate::pool::Pool,
    endpoint: &str,
    request: &UpstreamRequest<'_>,
    expect_continue: bool,
    framing: Framing,
    ctx: &Respond<'_>,
) -> Result<(Responded, Option<RawConn>, bool), Fail> {
    let mut up = pool.raw(endpoint).await.map_err(Fail::Connect)?;
    up.stream
        .write_all(request.head)
        .await
        .map_err(|e| Fail::Upstream(format!("writing the request: {e}")))?;
    if expect_continue && buf.is_empty() {
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Fail::Client)?;
    }
    let mut rbuf = bufs::take();
    let outcome = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = up.stream.split();
        let send = send_body(&mut cr, buf, &mut uw, framing);
        let resp = respond(&mut cw, &mut ur, &mut rbuf, None, ctx);
        tokio::pin!(send, resp);
        let first = tokio::select! {
            biased;
            s = &mut send => Ok(s),
            r = &mut resp => Err(r),
        };
        match first {
            // The upstream stopped taking the body: it may have answered
            // early and closed with the body unread, and its kernel reset
            // the connection. The answer is still there to read; the
            // response side tells.
            Ok(Err(Fail::Upstream(_))) => Ok((resp.await, false)),
            Ok(Err(fail)) => Err(fail),
            Ok(Ok(())) => Ok((resp.await, true)),
            // Answered before the request body ended: neither connection can be reused.
            Err(r) => Ok((r, false)),
        }
    };
    bufs::give(rbuf);
    let (r, body_sent) = outcome?;
    r.map(|r| (r, Some(up), body_sent))
}

/// The request as it goes upstream.
pub(crate) struct UpstreamRequest<'a> {
    /// Head, plus the whole body when it was read already.
    head: &'a [u8],
    /// May be sent again on a new connection if a reused one turns out closed.
    replayable: bool,
    head_request: bool,
}

/// Sends a request whose body is in `req.head` already, and reads the
/// response head; a reused connection found closed is replaced once.
pub(crate) async fn send_buffered(
    proxy: &Proxy,
    plan: &Plan<'_>,
    req: &UpstreamRequest<'_>,
) -> Result<(RawConn, BytesMut, ResponseHead), Fail> {
    let pool = proxy.pool();
    let mut retried = false;
    loop {
        let conn = if retried {
            Box::pin(pool.raw_fresh(plan.endpoint)).await
        } else {
            pool.raw(plan.endpoint).await
        };
        let mut up = conn.map_err(Fail::Connect)?;
        let may_retry = up.reused && !retried && req.replayable;
        if let Err(e) = up.stream.write_all(req.head).await {
            if may_retry {
                retried = true;
                continue;
            }
            return Err(Fail::Upstream(format!("writing the request: {e}")));
        }
        let mut rbuf = bufs::take();
        match read_response_head(&mut up.stream, &mut rbuf, req.head_request).await {
            Ok(head) => return Ok((up, rbuf, head)),
            Err(HeadRead::Closed) if may_retry && rbuf.is_empty() => {
                // A kept-alive connection the upstream had closed: nothing was answered.
                bufs::give(rbuf);
                retried = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why no response head could be read.
enum HeadRead {
    /// The connection closed (or reset) before a complete head.
    Closed,
    Failed(String),
}

impl From<HeadRead> for Fail {
    fn from(e: HeadRead) -> Self {
        match e {
            HeadRead::Closed => {
                Fail::Upstream("connection closed before a complete response head".into())
            }
            HeadRead::Failed(e) => Fail::Upstream(e),
        }
    }
}

/// Reads the final response head; interim (1xx) responses are skipped.
async fn read_response_head<R: AsyncRead + Unpin>(
    up: &mut R,
    rbuf: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, HeadRead> {
    loop {
        match codec::parse_response(rbuf, head_request) {
            Ok(Some(h)) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(HeadRead::Failed(
                    "unexpected 101 Switching Protocols".into(),
                ))
            }
            // Interim responses (100 Continue, 103 Early Hints) are not passed on.
            Ok(Some(h)) if h.status.is_informational() => continue,
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(e) => return Err(HeadRead::Failed(format!("invalid response: {e}"))),
        }
        rbuf.reserve(bufs::BUF_SIZE);
        match up.read_buf(rbuf).await {
            Ok(0) => return Err(HeadRead::Closed),
            Err(e) if rbuf.is_empty() => {
                tracing::trace!(error = %e, "upstream connection failed before answering");
                return Err(HeadRead::Closed);
            }
            Err(e) => return Err(HeadRead::Failed(format!("reading the response: {e}"))),
            Ok(_) => {}
        }
    }
}

/// Streams the rest of the request body to the upstream.
async fn send_body<R, W>(
    client: &mut R,
    buf: &mut BytesMut,
    up: &mut W,
    framing: Framing,
) -> Result<(), Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut out = BytesMut::new();
    let upstream_write = |e: io::Error| Fail::Upstream(format!("writing the request body: {e}"));
    loop {
        let done = match framing {
            Framing::Length(_) => {
                let take = remaining.min(buf.len() as u64) as usize;
                if take > 0 {
                    up.write_all(&buf[..take]).await.map_err(upstream_write)?;
                    buf.advance(take);
                    remaining -= take as u64;
                }
                remaining == 0
            }
            Framing::Chunked => {
                let used = decoder
                    .decode(buf, |data| codec::write_chunk(&mut out, data))
                    .map_err(Fail::ClientBody)?;
                buf.advance(used);
                if decoder.is_done() {
                    out.extend_from_slice(codec::LAST_CHUNK);
                }
                if !out.is_empty() {
                    up.write_all(&out).await.map_err(upstream_write)?;
                    out.clear();
                }
                decoder.is_done()
            }
            Framing::None | Framing::Close => true,
        };
        if done {
            return Ok(());
        }
        buf.reserve(bufs::BUF_SIZE);
        match client.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(Fail::Client),
            Ok(_) => {}
        }
    }
}

/// What the response side needs from the route and the request.
pub(crate) struct Respond<'a> {
    route: &'a Route,
    target: &'a WeightedCluster,
    set_cookie: Option<HeaderValue>,
    head_request: bool,
    client_11: bool,
    /// The client may keep the connection (asked for it; not shutting down).
    keep_alive: bool,
    /// The status of the response head once it went to the client (0
    /// before): from then on a failure can only close the connection.
    written: AtomicU16,
}

/// How a response ended.
pub(crate) struct Responded {
    status: StatusCode,
    keep_client: bool,
    upstream_reusable: bool,
}

/// Reads the response head (unless given), writes it to the client and
/// relays the body.
pub(crate) async fn respond<R, W>(
    client: &mut W,
    up: &mut R,
    rbuf: &mut BytesMut,
    head: Option<ResponseHead>,
    ctx: &Respond<'_>,
) -> Result<Responded, Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let head = match head {
        Some(h) => h,
        None => read_response_head(up, rbuf, ctx.head_request).await?,
    };
    let status = head.status;
    let in_framing = head.framing;
    let out_framing = match in_framing {
        Framing::None => Framing::None,
        Framing::Length(n) => Framing::Length(n),
        // A close-delimited body becomes chunked for an HTTP/1.1 client, so
        // its connection survives.
        Framing::Chunked | Framing::Close if ctx.client_11 => Framing::Chunked,
        Framing::Chunked | Framing::Close => Framing::Close,
    };
    let keep = ctx.keep_alive && ctx.client_11 && out_framing != Framing::Close;
    let mut w = bufs::take();
    let ops = [&ctx.target.response_headers, &ctx.route.response_headers];
    let ops: &[&HeaderOps] = if ops.iter().all(|o| o.is_empty()) {
        &[]
    } else {
        &ops
    };
    let cookie = ctx.set_cookie.as_ref().map(|c| (&SET_COOKIE, c));
    codec::write_proxied_response_head(&mut w, &head, ops, cookie, out_framing, !keep);
    let up_keep = head.keep_alive;
    drop(head);
    ctx.written.store(status.as_u16(), Ordering::Relaxed);
    let exact = relay_body(client, up, rbuf, &mut w, in_framing, out_framing).await;
    bufs::give(w);
    Ok(Responded {
        status,
        keep_client: keep,
        upstream_reusable: up_keep && exact?,
    })
}

/// Relays the response body (the head is already in `w`). Returns true when
/// the body ended exactly where its framing said, so the upstream connection
/// can be reused.
async fn relay_body<R, W>(
    client: &mut W,
    up: &mut R,
    rbuf: &mut BytesMut,
    w: &mut BytesMut,
    in_framing: Framing,
    out_framing: Framing,
) -> Result<bool, Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let chunked_out = out_framing == Framing::Chunked;
    let mut remaining = match in_framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    loop {
        let done = match in_framing {
            Framing::None => true,
            Framing::Length(_) => {
                let take = remaining.min(rbuf.len() as u64) as usize;
                if w.is_empty() && take > 0 {
                    // Large bodies go straight from the read buffer.
                    client
                        .write_all(&rbuf[..take])
                        .await
                        .map_err(|_| Fail::Client)?;
                } else {
                    w.extend_from_slice(&rbuf[..take]);
                }
                rbuf.advance(take);
                remaining -= take as u64;
                remaining == 0
            }
            Framing::Chunked => {
                let used = decoder
                    .decode(rbuf, |data| {
                        if chunked_out {
                            codec::write_chunk(w, data);
                        } else {
                            w.extend_from_slice(data);
                        }
                    })
                    .map_err(|e| Fail::Upstream(e.to_string()))?;
                rbuf.advance(used);
                decoder.is_done()
            }
            Framing::Close => {
                if chunked_out {
                    codec::write_chunk(w, rbuf);
                } else {
                    w.extend_from_slice(rbuf);
                }
                rbuf.clear();
                false
            }
        };
        if done && chunked_out {
            w.extend_from_slice(codec::LAST_CHUNK);
        }
        if !w.is_empty() {
            client.write_all(w).await.map_err(|_| Fail::Client)?;
            w.clear();
        }
        if done {
            // Bytes past the end of the response: the upstream is confused; do not reuse.
            return Ok(rbuf.is_empty());
        }
        rbuf.reserve(bufs::BUF_SIZE);
        match up.read_buf(rbuf).await {
            Ok(0) if in_framing == Framing::Close => {
                if chunked_out {
                    client
                        .write_all(codec::LAST_CHUNK)
                        .await
                        .map_err(|_| Fail::Client)?;
                }
                return Ok(false);
            }
            Ok(0) => return Err(Fail::Upstream("response body ended early".into())),
            Err(e) => return Err(Fail::Upstream(format!("reading the response body: {e}"))),
            Ok(_) => {}
        }
    }
}

/// Writes a local reply (routing miss, upstream failure) and records it.
pub(crate) async fn finish_local(
    client: &mut TcpStream,
    proxy: &Proxy,
    out: Outcome,
    head_request: bool,
    keep: bool,
    start: Instant,
) -> Next {
    let code = out.resp.status().as_u16();
    // After a malformed request, what follows on the connection cannot be trusted.
    let keep = keep && out.resp.status() != StatusCode::BAD_REQUEST;
    let written = write_response(client, out.resp, head_request, keep).await;
    proxy.record_status(out.service, out.route, code, start);
    match written {
        Ok(()) if keep => Next::KeepAlive,
        _ => Next::Close,
    }
}

async fn write_response(
    client: &mut TcpStream,
    resp: Response<ProxyBody>,
    head_request: bool,
    keep: bool,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let data = body.into_local();
    let mut w = bufs::take();
    codec::write_response_head(
        &mut w,
        parts.status,
        &parts.headers,
        Framing::Length(data.len() as u64),
        !keep,
    );
    if !head_request {
        w.extend_from_slice(&data);
    }
    let r = client.write_all(&w).await;
    bufs::give(w);
    r
}

/// Answers a request head that could not be accepted, then the connection closes.
async fn write_head_error(client: &mut TcpStream, e: &HeadError) -> io::Result<()> {
    let mut resp = reply::local(Reason::BadRequest, e.to_string());
    *resp.status_mut() = e.status();
    write_response(client, resp, false, false).await
}

#[cfg(test)]
mod tests;
