//! The HTTP/1.1 server of the outbound listener (the transport).
//!
//! One task per client connection reads request heads and hands each to the
//! [`Service`], which routes it and drives the exchange on the client socket
//! ([`crate::forward`]); the byte relays it uses are in [`relay`]. An idle
//! keep-alive connection holds no buffer: one is lent from a per-thread free
//! list ([`bufs`]) when bytes arrive and given back when the exchange ends.
//!
//! A connection that opens with the HTTP/2 preface goes to the HTTP/2
//! server. A request the service hands back ([`Next::Handover`]: routed to
//! an HTTP/2 upstream) goes to hyper with the bytes already read put back in
//! front ([`crate::rewind`]); that connection then stays with hyper
//! ([`mod@handover`]). Message framing rules are in [`codec`].

pub(crate) mod bufs;
pub(crate) mod codec;
pub(crate) mod handover;
pub(crate) mod relay;
pub(crate) mod settings;

use crate::service::Peer;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::stream::Stream;
use bytes::BytesMut;
use http::{Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::response::ProxyBody;
use crate::error::ErrorKind;
use crate::reply;
use crate::service::{Next, Service};
use codec::{Framing, HeadError, RequestHead};
use handover::handover;
pub use settings::ServerSettings;

/// What every connection of one listener shares.
pub(crate) struct Shared<S> {
    pub service: Arc<S>,
    pub settings: ServerSettings,
    /// Serves the connections handed over to hyper.
    pub hyper: auto::Builder<TokioExecutor>,
}

/// Serves one client connection until it closes or `stop` turns true (then
/// an idle connection closes at once and a busy one after its exchange).
pub(crate) async fn serve_connection<S: Service>(
    mut stream: Stream,
    peer: Peer,
    shared: Arc<Shared<S>>,
    stop: watch::Receiver<bool>,
    initial: Option<BytesMut>,
) {
    let mut pending: Option<BytesMut> = initial.filter(|b| !b.is_empty());
    let mut first = true;
    // One wait for the stop for the whole connection: registering a new one
    // at every idle wait costs more than the rest of that wait.
    let mut stop_wait = stop.clone();
    let mut stopped = std::pin::pin!(stop_wait.changed());
    let mut idle = IdleClock::new(shared.settings.idle_timeout);
    loop {
        let mut buf = match pending.take() {
            Some(b) => b,
            None => {
                tokio::select! {
                    biased;
                    r = stream.readable() => if r.is_err() { return },
                    _ = &mut stopped => return,
                    () = std::future::poll_fn(|cx| idle.poll_expired(cx)) => return,
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
        let next = Box::pin(shared.service.h1_exchange(
            &mut stream,
            &mut buf,
            &peer,
            &shared.settings,
            first,
            &stop,
        ))
        .await;
        first = false;
        idle.active();
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
                    shared.service.clone(),
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

/// Ends after `timeout`; never without one. The timer is boxed: only the
/// inbound listener sets one, and every connection's task holds this wait.
/// A keep-alive connection's idle timeout, with one timer per connection
/// instead of one per wait. The timer ticks every quarter of the timeout
/// while the connection waits; an exchange only marks the connection
/// active (no clock read, no timer touched). The connection closes at the
/// fourth tick in a row with no exchange: between 1 and 1.25 times the
/// timeout after its last exchange. Boxed (one pointer in the connection's
/// future), and only with a timeout.
struct IdleClock(Option<Box<IdleState>>);

struct IdleState {
    tick: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    quiet: u8,
    active: bool,
}

impl IdleClock {
    const TICKS: u8 = 4;

    fn new(timeout: Option<Duration>) -> Self {
        Self(timeout.map(|t| {
            Box::new(IdleState {
                tick: t / u32::from(Self::TICKS),
                sleep: None,
                quiet: 0,
                active: false,
            })
        }))
    }

    /// An exchange ran.
    fn active(&mut self) {
        if let Some(s) = &mut self.0 {
            s.active = true;
        }
    }

    /// Ready when the connection has been idle for the timeout; never
    /// without one.
    fn poll_expired(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let Some(s) = &mut self.0 else {
            return Poll::Pending;
        };
        let tick = s.tick;
        let sleep = s
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(tick)));
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if std::mem::take(&mut s.active) {
                s.quiet = 0;
            } else {
                s.quiet += 1;
            }
            if s.quiet >= Self::TICKS {
                return Poll::Ready(());
            }
            // From now: the timer may have passed while exchanges ran.
            sleep.as_mut().reset(Instant::now() + tick);
        }
    }

    /// [`IdleClock::poll_expired`] as a future.
    #[cfg(test)]
    async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
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
async fn linger_close(mut stream: Stream, mut buf: BytesMut, stopped: impl Future) {
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

/// Reads what the socket has now, or `None` when it has nothing yet.
///
/// Unlike `try_read_buf`, a read that leaves the socket drained (a short
/// read) clears the runtime's readiness, so the next wait does not start
/// with a read that can only fail with `WouldBlock`.
async fn read_ready(stream: &mut Stream, buf: &mut BytesMut) -> Option<io::Result<usize>> {
    let mut read = std::pin::pin!(stream.read_buf(buf));
    std::future::poll_fn(|cx| {
        Poll::Ready(match read.as_mut().poll(cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        })
    })
    .await
}

async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(bufs::BUF_SIZE);
    stream.read_buf(buf).await
}

/// The request head when `buf` holds all of it and it is a valid one;
/// `None` when [`read_head`] must take over (more to read, the HTTP/2
/// preface, a head to refuse).
pub(crate) fn parsed_head(buf: &mut BytesMut, first: bool) -> Option<RequestHead> {
    if first && h2_preface(buf) != Some(false) {
        return None;
    }
    codec::parse_request(buf).ok().flatten()
}

/// Why no request head came: what the connection does next, and the status
/// of the answer written if the head was refused (for the end hook).
pub(crate) struct NoHead {
    pub next: Next,
    pub refused: Option<(StatusCode, Instant)>,
}

/// Reads one request head from `client` (what `buf` holds first). On the
/// connection's first exchange, the HTTP/2 preface hands the connection to
/// the HTTP/2 server; a head that cannot be accepted is answered here (400,
/// 431, 501) and the connection closes.
///
/// The [`Service`] calls it at the start of its exchange, so that reading
/// the head and serving the request are one future (one allocation, no
/// copy of a nested future per exchange).
pub(crate) async fn read_head(
    client: &mut Stream,
    buf: &mut BytesMut,
    peer: &Peer,
    settings: &ServerSettings,
    first: bool,
) -> Result<RequestHead, NoHead> {
    let close = NoHead {
        next: Next::Close,
        refused: None,
    };
    // Set when the head turns out not to be whole: most heads come in one
    // read and need no clock.
    let mut head_deadline = None;
    loop {
        let parsed = match first.then(|| h2_preface(buf)) {
            Some(Some(true)) => {
                return Err(NoHead {
                    next: Next::Http2(buf.split().freeze()),
                    refused: None,
                })
            }
            Some(None) => Ok(None),
            Some(Some(false)) | None => codec::parse_request(buf),
        };
        match parsed {
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "refused request head");
                let start = Instant::now();
                let _ = Box::pin(write_head_error(client, &e)).await;
                return Err(NoHead {
                    next: Next::Close,
                    refused: Some((e.status(), start)),
                });
            }
        }
        if head_deadline.is_none() {
            head_deadline = settings.header_read_timeout.map(|t| Instant::now() + t);
        }
        let read = read_more(client, buf);
        let n = match head_deadline {
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r,
                Err(_) => return Err(close),
            },
            None => read.await,
        };
        match n {
            Ok(0) | Err(_) => return Err(close),
            Ok(_) => {}
        }
    }
}

/// Writes a local reply (a response with a complete body) to the client.
pub(crate) async fn write_response(
    client: &mut Stream,
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
async fn write_head_error(client: &mut Stream, e: &HeadError) -> io::Result<()> {
    let mut resp = reply::local(ErrorKind::BadRequest, e.to_string());
    *resp.status_mut() = e.status();
    write_response(client, resp, false, false).await
}

#[cfg(test)]
mod tests;
