//! The HTTP/2 server of the outbound listener (cleartext, prior knowledge).
//!
//! One task per connection reads frames, decodes header blocks ([`hpack`]),
//! and runs each stream's request through [`Proxy::handle`] as a future the
//! connection task polls itself (no task per stream, no channel between the
//! stream and the connection). Responses are encoded straight from the
//! response's fields into the connection's write buffer, and every frame
//! that is ready goes out in one write.
//!
//! What it enforces (RFC 9113): the stream state rules, flow control in both
//! directions, the frame size and header list limits, and malformed-request
//! checks. Against abuse: a cap on concurrent streams, on the size of a
//! header block (CONTINUATION floods), on streams the client resets before
//! their response (rapid reset), and no reading while the client does not
//! read what it asked for (PING and SETTINGS floods).

mod body;
pub(crate) mod hpack;

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

pub use body::RecvBody;
use body::{ConnSignal, Inbox};
use hpack::{Field, Pseudo};

use crate::body::{ProxyBody, RequestBody};
use crate::forward::{Proxy, Reply};
use crate::h1::bufs;
use crate::h1::codec::{self, Framing, ResponseHead};
use anymesh_core::routes::HeaderOps;

/// The client connection preface (RFC 9113, 3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// Settings.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (RFC 9113, 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A connection error: GOAWAY with the code and the reason as debug data, then close.
#[derive(Debug)]
struct ConnError(Code, &'static str);

/// The largest frame payload this server accepts (the protocol's default,
/// which it does not raise).
const MAX_FRAME: usize = 16_384;
/// Streams one connection may have open at once.
const MAX_STREAMS: usize = 1024;
/// The receive window of each stream and of the connection: how much request
/// body the client may send ahead of the upstream reading it.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
/// The largest decoded header list (as an HTTP/1.1 head may be).
const MAX_HEADER_LIST: usize = crate::h1::codec::MAX_HEAD;
/// The largest header block, CONTINUATION frames included.
const MAX_HEADER_BLOCK: usize = 2 * MAX_HEADER_LIST;
/// Above this much unsent output, the connection stops reading and
/// producing until the client has read some.
const WRITE_HIGH: usize = 64 * 1024;
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Streams the client may reset before their response before the
/// connection is closed, unless most of its streams completed.
const RESET_ALLOWANCE: u64 = 200;
/// Idle time before a PING checks that the client is still there, and how
/// long its answer may take.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams closed by a reset from this side, remembered so frames the client
/// sent before it saw the reset are ignored.
const RECENT_RESETS: usize = 64;

type ReplyFuture = Pin<Box<dyn Future<Output = (u32, Reply)> + Send>>;

/// The response side of a stream.
enum Out {
    /// The request is being served.
    Waiting,
    /// The head went out; the body follows as the windows allow.
    Body {
        body: ProxyBody,
        /// Data taken from the body that the windows did not let out yet.
        pending: Option<Bytes>,
    },
}

struct Stream {
    /// The request body's queue, while the client may still send data.
    inbox: Option<Arc<Inbox>>,
    /// The client ended its side.
    remote_done: bool,
    /// How much the client may still send on this stream.
    recv_window: i64,
    /// Data read that was not credited back yet.
    recv_credit: u32,
    /// The declared `content-length` and the data received.
    expect_len: Option<u64>,
    received: u64,
    /// How much this side may still send on this stream.
    send_window: i64,
    out: Out,
    abort: AbortHandle,
}

/// Serves one HTTP/2 connection; `prefix` holds the bytes already read (the
/// preface, at least its start).
pub(crate) async fn serve(
    io: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Conn::new(io, prefix, peer, proxy);
    let mut stopping = false;
    let keepalive = tokio::time::sleep(KEEPALIVE);
    tokio::pin!(keepalive);
    loop {
        tokio::select! {
            biased;
            () = poll_fn(|cx| conn.poll(cx)) => return,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.go_away(Code::NoError, "");
            }
            () = &mut keepalive => match conn.keepalive() {
                Some(next) => keepalive.as_mut().reset(Instant::now() + next),
                None => {
                    tracing::debug!(%peer, "HTTP/2 client did not answer a PING; closing");
                    return;
                }
            },
        }
    }
}

struct Conn {
    io: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The preface was received.
    preface: bool,
    /// The client's first SETTINGS was received.
    settings: bool,
    decoder: hpack::Decoder,
    /// A header block waiting for CONTINUATION frames.
    continuation: Option<Continuation>,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    replies: FuturesUnordered<Abortable<ReplyFuture>>,
    /// Streams whose response body is being sent.
    sending: Vec<u32>,
    /// The highest stream the client opened.
    last_id: u32,
    recent_resets: [u32; RECENT_RESETS],
    recent_at: usize,
    signal: Arc<ConnSignal>,
    /// How much the client may still send on the connection, and what was
    /// read that was not credited back yet.
    recv_window: i64,
    recv_credit: u32,
    /// Some credit changed since WINDOW_UPDATEs were last considered.
    credit_dirty: bool,
    /// How much this side may still send on the connection.
    send_window: i64,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    peer_window: i64,
    peer_max_frame: usize,
    /// The client changed its decoder's table size: the next header block
    /// starts with a size update.
    table_update: bool,
    /// GOAWAY was sent: no new streams are served.
    going_away: bool,
    /// The client sent GOAWAY: it is closing the connection.
    peer_going_away: bool,
    /// A connection error was sent: write what is buffered, then close.
    failed: bool,
    /// The client closed its side of the TCP connection.
    read_closed: bool,
    /// Streams reset by the client before their response, and streams completed.
    resets: u64,
    completed: u64,
    /// Frames since the last keep-alive check, and a PING is unanswered.
    frames_seen: bool,
    ping_out: bool,
    /// Scratch space for one header block.
    block: BytesMut,
}

/// A header block split over HEADERS and CONTINUATION frames.
struct Continuation {
    id: u32,
    end_stream: bool,
    /// Reset the stream with this code instead of serving it.
    reject: Option<Code>,
    block: BytesMut,
}

/// What one poll of a stream's response body did.
enum Pump {
    /// The stream's response is complete (or the stream is gone).
    Done,
    /// Wrote something; the body waits for more data or window.
    Wrote,
    Idle,
}

impl Conn {
    fn new(io: TcpStream, prefix: Bytes, peer: SocketAddr, proxy: Arc<Proxy>) -> Self {
        let mut rbuf = bufs::take();
        rbuf.extend_from_slice(&prefix);
        let mut wbuf = bufs::take();
        // This server's SETTINGS, then the connection window raised to CONN_WINDOW.
        let settings = [
            (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
        ];
        frame_head(&mut wbuf, settings.len() * 6, SETTINGS, 0, 0);
        for (id, value) in settings {
            wbuf.put_u16(id);
            wbuf.put_u32(value);
        }
        window_update(&mut wbuf, 0, CONN_WINDOW - DEFAULT_WINDOW as u32);
        Self {
            io,
            peer,
            proxy,
            rbuf,
            wbuf,
            preface: false,
            settings: false,
            decoder: hpack::Decoder::default(),
            continuation: None,
            streams: HashMap::default(),
            replies: FuturesUnordered::new(),
            sending: Vec::new(),
            last_id: 0,
            recent_resets: [0; RECENT_RESETS],
            recent_at: 0,
            signal: Arc::default(),
            recv_window: CONN_WINDOW as i64,
            recv_credit: 0,
            credit_dirty: false,
            send_window: DEFAULT_WINDOW,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: MAX_FRAME,
            table_update: false,
            going_away: false,
            peer_going_away: false,
            failed: false,
            read_closed: false,
            resets: 0,
            completed: 0,
            frames_seen: false,
            ping_out: false,
            block: BytesMut::new(),
        }
    }

    /// Drives the connection; ready when it is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.wbuf.capacity() == 0 {
            self.wbuf = bufs::take();
        }
        loop {
            let mut progress = false;
            if !self.failed && !self.read_closed && self.wbuf.len() < WRITE_HIGH {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.read_closed = true;
                        self.end_remote_bodies();
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                if let Err(ConnError(code, why)) = self.on_input() {
                    tracing::debug!(peer = %self.peer, ?code, why, "HTTP/2 connection error");
                    self.go_away(code, why);
                    self.fail();
                }
            }
            if !self.failed {
                // Reply heads wait while the client is not reading.
                while self.wbuf.len() < WRITE_HIGH {
                    let Poll::Ready(Some(reply)) = self.replies.poll_next_unpin(cx) else {
                        break;
                    };
                    progress = true;
                    if let Ok((id, resp)) = reply {
                        self.respond(id, resp, cx);
                    }
                }
                if self.signal.take(cx) {
                    self.credit_bodies();
                }
                progress |= self.poll_bodies(cx);
                self.send_credit();
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(true)) => progress = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
            }
            let finished = self.failed
                || (self.streams.is_empty()
                    && (self.going_away || self.peer_going_away || self.read_closed));
            if finished && self.wbuf.is_empty() {
                let _ = Pin::new(&mut self.io).poll_shutdown(cx);
                return Poll::Ready(());
            }
            if !progress {
                // An idle connection holds no buffer: they go back to the
                // thread's free list until bytes come or go again.
                if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                    bufs::give(std::mem::take(&mut self.rbuf));
                }
                if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
                    bufs::give(std::mem::take(&mut self.wbuf));
                }
                return Poll::Pending;
            }
        }
    }

    /// Reads what the socket has; `Ok(0)` at its end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            self.rbuf = bufs::take();
        }
        self.rbuf.reserve(MAX_FRAME + 9);
        // Through AsyncRead: a short read clears the readiness, so the next
        // poll does not try a read that can only fail. The future keeps no
        // state between polls.
        std::pin::pin!(self.io.read_buf(&mut self.rbuf)).poll(cx)
    }

    /// Writes what is buffered; `Ok(true)` when something was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut wrote = false;
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if wrote => return Poll::Ready(Ok(true)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(wrote))
    }

    /// The client can send nothing more: bodies still arriving end with an error.
    fn end_remote_bodies(&mut self) {
        for s in self.streams.values_mut() {
            if !s.remote_done {
                s.remote_done = true;
                if let Some(inbox) = &s.inbox {
                    self.recv_credit += inbox.close() as u32;
                }
            }
        }
    }

    /// Stops everything after a connection error: streams end, nothing more is read.
    fn fail(&mut self) {
        self.failed = true;
        for (_, s) in self.streams.drain() {
            s.abort.abort();
            if let Some(inbox) = &s.inbox {
                inbox.close();
            }
        }
        self.sending.clear();
    }

    /// Sends GOAWAY: streams above the last one opened will not be served.
    fn go_away(&mut self, code: Code, why: &str) {
        if self.going_away && code == Code::NoError {
            return;
        }
        self.going_away = true;
        frame_head(&mut self.wbuf, 8 + why.len(), GOAWAY, 0, 0);
        self.wbuf.put_u32(self.last_id);
        self.wbuf.put_u32(code as u32);
        self.wbuf.extend_from_slice(why.as_bytes());
    }

    /// A keep-alive tick: when the next is due, or `None` when the client is gone.
    fn keepalive(&mut self) -> Option<Duration> {
        if std::mem::take(&mut self.frames_seen) {
            self.ping_out = false;
            return Some(KEEPALIVE);
        }
        if self.ping_out {
            return None;
        }
        self.ping_out = true;
        frame_head(&mut self.wbuf, 8, PING, 0, 0);
        self.wbuf.put_u64(0x616e_796d_6573_6821);
        Some(KEEPALIVE_TIMEOUT)
    }

    /// Handles the complete frames in the read buffer.
    fn on_input(&mut self) -> Result<(), ConnError> {
        // Taken out while frames are handled, so handlers can borrow payloads from it.
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let r = self.frames(&mut rbuf);
        self.rbuf = rbuf;
        r
    }

    fn frames(&mut self, rbuf: &mut BytesMut) -> Result<(), ConnError> {
        if !self.preface {
            let n = rbuf.len().min(PREFACE.len());
            if rbuf[..n] != PREFACE[..n] {
                return Err(ConnError(Code::Protocol, "invalid connection preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            rbuf.advance(PREFACE.len());
            self.preface = true;
        }
        while rbuf.len() >= 9 && !self.failed {
            let len = (rbuf[0] as usize) << 16 | (rbuf[1] as usize) << 8 | rbuf[2] as usize;
            if len > MAX_FRAME {
                return Err(ConnError(
                    Code::FrameSize,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if rbuf.len() < 9 + len {
                break;
            }
            let (ty, flags) = (rbuf[3], rbuf[4]);
            let id = u32::from_be_bytes([rbuf[5], rbuf[6], rbuf[7], rbuf[8]]) & 0x7fff_ffff;
            self.frames_seen = true;
            if !self.settings && ty != SETTINGS {
                return Err(ConnError(
                    Code::Protocol,
                    "the first frame must be SETTINGS",
                ));
            }
            if let Some(c) = &self.continuation {
                if ty != CONTINUATION || id != c.id {
                    return Err(ConnError(Code::Protocol, "expected CONTINUATION"));
                }
            }
            let payload = &rbuf[9..9 + len];
            match ty {
                DATA => self.on_data(id, flags, payload)?,
                HEADERS => self.on_headers(id, flags, payload)?,
                PRIORITY => self.on_priority(id, payload)?,
                RST_STREAM => self.on_reset(id, payload)?,
                SETTINGS => self.on_settings(id, flags, payload)?,
                PUSH_PROMISE => {
                    return Err(ConnError(Code::Protocol, "PUSH_PROMISE from a client"))
                }
                PING => self.on_ping(id, flags, payload)?,
                GOAWAY => {
                    if id != 0 {
                        return Err(ConnError(Code::Protocol, "GOAWAY on a stream"));
                    }
                    if payload.len() < 8 {
                        return Err(ConnError(Code::FrameSize, "GOAWAY shorter than 8 bytes"));
                    }
                    // It concerns streams this side would open (none); the
                    // connection closes once its streams are done.
                    self.peer_going_away = true;
                }
                WINDOW_UPDATE => self.on_window_update(id, payload)?,
                CONTINUATION => self.on_continuation(id, flags, payload)?,
                // Unknown frame types are ignored (RFC 9113, 4.1).
                _ => {}
            }
            rbuf.advance(9 + len);
            if self.resets > RESET_ALLOWANCE && self.resets > self.completed {
                return Err(ConnError(Code::EnhanceYourCalm, "too many streams reset"));
            }
        }
        Ok(())
    }

    fn is_idle(&self, id: u32) -> bool {
        id > self.last_id
    }

    /// Closes a stream with RST_STREAM.
    fn reset(&mut self, id: u32, code: Code) {
        self.count_reset(id);
        self.refuse(id, code);
        self.remove(id);
    }

    /// Counts a stream ended before its response began: its upstream request
    /// was started for nothing (rapid reset, and resets the client provokes).
    fn count_reset(&mut self, id: u32) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| matches!(s.out, Out::Waiting))
        {
            self.resets += 1;
        }
    }

    /// Sends RST_STREAM, and remembers the stream so that frames the client
    /// sent before it saw the reset are ignored.
    fn refuse(&mut self, id: u32, code: Code) {
        rst_stream(&mut self.wbuf, id, code);
        self.recent_resets[self.recent_at] = id;
        self.recent_at = (self.recent_at + 1) % RECENT_RESETS;
    }

    /// Forgets a stream: its request stops, its queued request body is credited back.
    fn remove(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        s.abort.abort();
        if let Some(inbox) = &s.inbox {
            self.recv_credit += inbox.close() as u32;
            self.credit_dirty = true;
        }
        // Its id may stay in `sending` a while: pumping a stream that is gone ends there.
    }

    fn recently_reset(&self, id: u32) -> bool {
        self.recent_resets.contains(&id)
    }

    fn on_data(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 {
            return Err(ConnError(Code::Protocol, "DATA on stream 0"));
        }
        let len = payload.len() as i64;
        if len > self.recv_window {
            return Err(ConnError(
                Code::FlowControl,
                "DATA beyond the connection window",
            ));
        }
        self.recv_window -= len;
        let data = &payload[unpadded(flags, payload)?];
        let pad = len as u32 - data.len() as u32;
        let end = flags & END_STREAM != 0;
        let Some(s) = self.streams.get_mut(&id) else {
            self.recv_credit += len as u32;
            if self.is_idle(id) {
                return Err(ConnError(Code::Protocol, "DATA on an idle stream"));
            }
            if !self.recently_reset(id) {
                rst_stream(&mut self.wbuf, id, Code::StreamClosed);
            }
            return Ok(());
        };
        if s.remote_done {
            self.recv_credit += len as u32;
            self.reset(id, Code::StreamClosed);
            return Ok(());
        }
        if len > s.recv_window {
            self.recv_credit += len as u32;
            self.reset(id, Code::FlowControl);
            return Ok(());
        }
        s.recv_window -= len;
        s.received += data.len() as u64;
        let wrong_length = s
            .expect_len
            .is_some_and(|n| s.received > n || (end && s.received != n));
        if wrong_length {
            self.recv_credit += len as u32;
            self.reset(id, Code::Protocol);
            return Ok(());
        }
        // Padding is credited back at once; data once the reader took it.
        self.recv_credit += pad;
        s.recv_credit += pad;
        let data_len = data.len() as u32;
        // Copied out of the read buffer: a slice would keep the whole buffer
        // alive, and a client sending tiny frames could pin far more memory
        // than its window.
        let delivered = match &s.inbox {
            Some(inbox) => inbox.push(Bytes::copy_from_slice(data), end),
            None => false,
        };
        if !delivered {
            self.recv_credit += data_len;
            s.recv_credit += data_len;
        }
        if end {
            // The inbox stays until the stream closes: what the reader takes
            // is still credited to the connection.
            s.remote_done = true;
        }
        self.credit_dirty = true;
        Ok(())
    }

    fn on_headers(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 || id % 2 == 0 {
            return Err(ConnError(Code::Protocol, "HEADERS on an invalid stream id"));
        }
        let mut frag = &payload[unpadded(flags, payload)?];
        let mut reject = None;
        if flags & PRIORITY_FLAG != 0 {
            let Some((prio, rest)) = frag.split_first_chunk::<5>() else {
                return Err(ConnError(
                    Code::FrameSize,
                    "HEADERS too short for its priority",
                ));
            };
            let dep = u32::from_be_bytes([prio[0], prio[1], prio[2], prio[3]]) & 0x7fff_ffff;
            if dep == id {
                // Still decoded, so the table stays in step; the stream is reset.
                reject = Some(Code::Protocol);
            }
            frag = rest;
        }
        let end_stream = flags & END_STREAM != 0;
        if flags & END_HEADERS == 0 {
            if frag.len() > MAX_HEADER_BLOCK {
                return Err(ConnError(Code::EnhanceYourCalm, "header block too large"));
            }
            self.continuation = Some(Continuation {
                id,
                end_stream,
                reject,
                block: BytesMut::from(frag),
            });
            return Ok(());
        }
        self.decode_block(id, end_stream, frag, reject)
    }

    fn on_continuation(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        let Some(mut c) = self.continuation.take() else {
            return Err(ConnError(Code::Protocol, "CONTINUATION without HEADERS"));
        };
        if c.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return Err(ConnError(Code::EnhanceYourCalm, "header block too large"));
        }
        c.block.extend_from_slice(payload);
        if flags & END_HEADERS == 0 {
            self.continuation = Some(c);
            return Ok(());
        }
        self.decode_block(id, c.end_stream, &c.block, c.reject)
    }

    /// Decodes a complete header block: a new request, or a request's trailers.
    /// `reject` resets the stream instead of serving it.
    fn decode_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
        reject: Option<Code>,
    ) -> Result<(), ConnError> {
        let mut fields = Fields::default();
        self.decoder
            .decode(block, |f| fields.add(f))
            .map_err(|e| ConnError(Code::Compression, e.0))?;
        if !self.is_idle(id) {
            // Trailers of an open stream; anything else on a used id is an error.
            let Some(s) = self.streams.get_mut(&id) else {
                if self.recently_reset(id) {
                    return Ok(());
                }
                return Err(ConnError(Code::StreamClosed, "HEADERS on a closed stream"));
            };
            if s.remote_done {
                self.reset(id, Code::StreamClosed);
                return Ok(());
            }
            if !end_stream
                || fields.pseudo_seen
                || fields.malformed.is_some()
                || fields.size > MAX_HEADER_LIST
            {
                self.reset(id, Code::Protocol);
                return Ok(());
            }
            s.remote_done = true;
            if s.expect_len.is_some_and(|n| n != s.received) {
                self.reset(id, Code::Protocol);
                return Ok(());
            }
            if let Some(inbox) = &s.inbox {
                inbox.trailers(fields.headers);
            }
            return Ok(());
        }
        self.last_id = id;
        if self.going_away {
            // Sent after our GOAWAY: not served, and the client knows it.
            return Ok(());
        }
        if let Some(code) = reject {
            self.refuse(id, code);
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            self.refuse(id, Code::RefusedStream);
            return Ok(());
        }
        if fields.size > MAX_HEADER_LIST {
            self.local_reply(id, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, end_stream);
            return Ok(());
        }
        let (req, expect_len) = match fields.request() {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(peer = %self.peer, stream = id, why, "malformed HTTP/2 request");
                self.refuse(id, Code::Protocol);
                return Ok(());
            }
        };
        if end_stream && expect_len.is_some_and(|n| n != 0) {
            self.refuse(id, Code::Protocol);
            return Ok(());
        }
        let proxy = self.proxy.clone();
        let peer = self.peer;
        let (inbox, reply): (_, ReplyFuture) = if end_stream {
            let parts = req.into_parts().0;
            let reply = async move { (id, proxy.handle_bodiless(parts, peer).await) };
            (None, Box::pin(reply))
        } else {
            let inbox = Inbox::new(self.signal.clone());
            let req = req.map(|()| RequestBody::H2(RecvBody::new(inbox.clone(), expect_len)));
            let reply = async move { (id, Reply::Response(proxy.handle(req, peer).await)) };
            (Some(inbox), Box::pin(reply))
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.replies.push(Abortable::new(reply, registration));
        self.streams.insert(
            id,
            Stream {
                inbox,
                remote_done: end_stream,
                recv_window: STREAM_WINDOW as i64,
                recv_credit: 0,
                expect_len,
                received: 0,
                send_window: self.peer_window,
                out: Out::Waiting,
                abort,
            },
        );
        Ok(())
    }

    /// Starts a header block; the first after the client changed its table
    /// size says the table is empty (size 0: this encoder keeps none).
    fn start_block(&mut self) {
        self.block.clear();
        if std::mem::take(&mut self.table_update) {
            self.block.put_u8(0x20);
        }
    }

    /// Answers a request this connection refuses, without serving it.
    fn local_reply(&mut self, id: u32, status: StatusCode, end_stream: bool) {
        self.start_block();
        hpack::encode_status(&mut self.block, status);
        write_block(&mut self.wbuf, id, &self.block, true, self.peer_max_frame);
        if !end_stream {
            // The body is not wanted.
            self.refuse(id, Code::NoError);
        }
    }

    fn on_priority(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 {
            return Err(ConnError(Code::Protocol, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            if self.is_idle(id) {
                // No RST_STREAM may name an idle stream.
                return Err(ConnError(Code::FrameSize, "PRIORITY not 5 bytes"));
            }
            self.reset(id, Code::FrameSize);
            return Ok(());
        }
        let dep =
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
        if dep == id {
            if self.is_idle(id) {
                return Err(ConnError(Code::Protocol, "PRIORITY depending on itself"));
            }
            self.reset(id, Code::Protocol);
        }
        // Priorities are otherwise ignored (RFC 9113 deprecates them).
        Ok(())
    }

    fn on_reset(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(ConnError(Code::FrameSize, "RST_STREAM not 4 bytes"));
        }
        if id == 0 || self.is_idle(id) {
            return Err(ConnError(
                Code::Protocol,
                "RST_STREAM on stream 0 or an idle stream",
            ));
        }
        self.count_reset(id);
        self.remove(id);
        Ok(())
    }

    fn on_settings(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(ConnError(Code::Protocol, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err(ConnError(Code::FrameSize, "SETTINGS ACK with a payload"));
            }
            if !self.settings {
                return Err(ConnError(
                    Code::Protocol,
                    "the first frame must be SETTINGS",
                ));
            }
            return Ok(());
        }
        if payload.len() % 6 != 0 {
            return Err(ConnError(
                Code::FrameSize,
                "SETTINGS not a multiple of 6 bytes",
            ));
        }
        self.settings = true;
        let mut window = None;
        for s in payload.chunks_exact(6) {
            let key = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match key {
                SETTINGS_HEADER_TABLE_SIZE => self.table_update = true,
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(ConnError(Code::Protocol, "SETTINGS_ENABLE_PUSH above 1"))
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    if value as i64 > MAX_WINDOW {
                        return Err(ConnError(
                            Code::FlowControl,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    // Applied once per frame, whatever the frame repeats.
                    window = Some(value as i64);
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(ConnError(
                            Code::Protocol,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                // Concurrent streams and header list size concern pushes and
                // what this side sends; unknown settings are ignored.
                _ => {}
            }
        }
        if let Some(value) = window {
            let delta = value - self.peer_window;
            self.peer_window = value;
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if s.send_window > MAX_WINDOW {
                    return Err(ConnError(Code::FlowControl, "a stream window above 2^31-1"));
                }
            }
        }
        frame_head(&mut self.wbuf, 0, SETTINGS, ACK, 0);
        Ok(())
    }

    fn on_ping(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(ConnError(Code::Protocol, "PING on a stream"));
        }
        if payload.len() != 8 {
            return Err(ConnError(Code::FrameSize, "PING not 8 bytes"));
        }
        if flags & ACK == 0 {
            frame_head(&mut self.wbuf, 8, PING, ACK, 0);
            self.wbuf.extend_from_slice(payload);
        }
        Ok(())
    }

    fn on_window_update(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(ConnError(Code::FrameSize, "WINDOW_UPDATE not 4 bytes"));
        }
        let inc = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & 0x7fff_ffff) as i64;
        if id == 0 {
            if inc == 0 {
                return Err(ConnError(Code::Protocol, "WINDOW_UPDATE of 0"));
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return Err(ConnError(
                    Code::FlowControl,
                    "connection window above 2^31-1",
                ));
            }
            return Ok(());
        }
        if self.is_idle(id) {
            return Err(ConnError(Code::Protocol, "WINDOW_UPDATE on an idle stream"));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if inc == 0 {
            self.reset(id, Code::Protocol);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            self.reset(id, Code::FlowControl);
        }
        Ok(())
    }

    /// A stream's response is ready: its head goes out, and as much of its body as may.
    fn respond(&mut self, id: u32, reply: Reply, cx: &mut Context<'_>) {
        if !self.streams.contains_key(&id) {
            return;
        }
        self.start_block();
        let body = match reply {
            Reply::Response(resp) => {
                let (parts, body) = resp.into_parts();
                hpack::encode_status(&mut self.block, parts.status);
                encode_fields(&mut self.block, &parts.headers);
                body
            }
            Reply::Raw { block, body } => {
                self.block.extend_from_slice(&block);
                ProxyBody::Raw { body }
            }
        };
        let end = body.is_end_stream();
        write_block(&mut self.wbuf, id, &self.block, end, self.peer_max_frame);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if end {
            self.completed += 1;
            self.local_done(id);
            return;
        }
        s.out = Out::Body {
            body,
            pending: None,
        };
        self.sending.push(id);
        if let Pump::Done = self.pump(id, cx) {
            self.sending.pop();
        }
    }

    /// This side ended the stream: it closes, unless the client is still
    /// sending a body nobody needs now, which RST_STREAM (NO_ERROR) stops.
    fn local_done(&mut self, id: u32) {
        let remote_done = self.streams.get(&id).is_none_or(|s| s.remote_done);
        if !remote_done {
            self.refuse(id, Code::NoError);
        }
        self.remove(id);
    }

    /// Polls the bodies being sent.
    fn poll_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.sending.len() {
            // Without connection window a body can still end or send
            // trailers, and streams that are gone leave the list.
            if self.wbuf.len() >= WRITE_HIGH {
                break;
            }
            let id = self.sending[i];
            match self.pump(id, cx) {
                Pump::Done => {
                    self.sending.swap_remove(i);
                    progress = true;
                }
                Pump::Wrote => {
                    progress = true;
                    i += 1;
                }
                Pump::Idle => i += 1,
            }
        }
        progress
    }

    /// Sends what one stream's body has, as far as the windows allow.
    fn pump(&mut self, id: u32, cx: &mut Context<'_>) -> Pump {
        let mut wrote = false;
        loop {
            let Some(s) = self.streams.get_mut(&id) else {
                return Pump::Done;
            };
            let Out::Body { body, pending } = &mut s.out else {
                return Pump::Done;
            };
            if let Some(mut data) = pending.take() {
                let room = s
                    .send_window
                    .min(self.send_window)
                    .min(self.peer_max_frame as i64);
                if room <= 0 {
                    *pending = Some(data);
                    return if wrote { Pump::Wrote } else { Pump::Idle };
                }
                let n = (room as usize).min(data.len());
                let chunk = data.split_to(n);
                let last = data.is_empty() && body.is_end_stream();
                frame_head(
                    &mut self.wbuf,
                    n,
                    DATA,
                    if last { END_STREAM } else { 0 },
                    id,
                );
                self.wbuf.extend_from_slice(&chunk);
                s.send_window -= n as i64;
                self.send_window -= n as i64;
                wrote = true;
                if last {
                    self.completed += 1;
                    self.local_done(id);
                    return Pump::Done;
                }
                if !data.is_empty() {
                    *pending = Some(data);
                    continue;
                }
            }
            if self.wbuf.len() >= WRITE_HIGH {
                return Pump::Wrote;
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return if wrote { Pump::Wrote } else { Pump::Idle },
                Poll::Ready(None) => {
                    frame_head(&mut self.wbuf, 0, DATA, END_STREAM, id);
                    self.completed += 1;
                    self.local_done(id);
                    return Pump::Done;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if !data.is_empty() {
                            *pending = Some(data);
                        }
                    }
                    Err(frame) => {
                        let fields = frame.into_trailers().unwrap_or_default();
                        self.start_block();
                        encode_fields(&mut self.block, &fields);
                        write_block(&mut self.wbuf, id, &self.block, true, self.peer_max_frame);
                        self.completed += 1;
                        self.local_done(id);
                        return Pump::Done;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(peer = %self.peer, stream = id, error = %e, "response body failed");
                    self.reset(id, Code::Internal);
                    return Pump::Done;
                }
            }
        }
    }

    /// Takes what readers consumed of request bodies, for WINDOW_UPDATE.
    fn credit_bodies(&mut self) {
        for s in self.streams.values_mut() {
            let Some(inbox) = &s.inbox else { continue };
            let (n, gone) = inbox.credit();
            s.recv_credit += n as u32;
            self.recv_credit += n as u32;
            if gone {
                s.inbox = None;
            }
        }
        self.credit_dirty = true;
    }

    /// Sends WINDOW_UPDATE where half a window was consumed.
    fn send_credit(&mut self) {
        if std::mem::take(&mut self.credit_dirty) {
            for (&id, s) in self.streams.iter_mut() {
                let due = s.recv_credit > 0
                    && s.recv_credit as i64 >= s.recv_window.min(STREAM_WINDOW as i64 / 2);
                if due && !s.remote_done {
                    window_update(&mut self.wbuf, id, s.recv_credit);
                    s.recv_window += s.recv_credit as i64;
                    s.recv_credit = 0;
                }
            }
        }
        // Half a window consumed, or the window ran low: slow readers on
        // some streams must not hold the whole connection's window.
        if self.recv_credit > 0
            && self.recv_credit as i64 >= self.recv_window.min(CONN_WINDOW as i64 / 2)
        {
            window_update(&mut self.wbuf, 0, self.recv_credit);
            self.recv_window += self.recv_credit as i64;
            self.recv_credit = 0;
        }
    }
}

impl Drop for Conn {
    /// However the connection ends, request bodies still arriving end with
    /// an error, so whoever reads them stops waiting.
    fn drop(&mut self) {
        for s in self.streams.values() {
            if let Some(inbox) = &s.inbox {
                inbox.close();
            }
        }
    }
}

/// The part of a payload that is not padding (PADDED flag).
fn unpadded(flags: u8, payload: &[u8]) -> Result<std::ops::Range<usize>, ConnError> {
    if flags & PADDED == 0 {
        return Ok(0..payload.len());
    }
    let Some(&pad) = payload.first() else {
        return Err(ConnError(
            Code::FrameSize,
            "padded frame without its pad length",
        ));
    };
    let pad = pad as usize;
    if pad + 1 > payload.len() {
        return Err(ConnError(Code::Protocol, "padding longer than the frame"));
    }
    Ok(1..payload.len() - pad)
}

fn frame_head(out: &mut BytesMut, len: usize, ty: u8, flags: u8, id: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(ty);
    out.put_u8(flags);
    out.put_u32(id);
}

fn rst_stream(out: &mut BytesMut, id: u32, code: Code) {
    frame_head(out, 4, RST_STREAM, 0, id);
    out.put_u32(code as u32);
}

fn window_update(out: &mut BytesMut, id: u32, inc: u32) {
    frame_head(out, 4, WINDOW_UPDATE, 0, id);
    out.put_u32(inc);
}

/// Writes a header block as HEADERS, plus CONTINUATION frames when it is
/// larger than the client's frame size.
fn write_block(out: &mut BytesMut, id: u32, block: &[u8], end_stream: bool, max_frame: usize) {
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let end_flag = if end_stream { END_STREAM } else { 0 };
    let headers_end = if chunks.peek().is_none() {
        END_HEADERS
    } else {
        0
    };
    frame_head(out, first.len(), HEADERS, end_flag | headers_end, id);
    out.extend_from_slice(first);
    while let Some(c) = chunks.next() {
        let flag = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        frame_head(out, c.len(), CONTINUATION, flag, id);
        out.extend_from_slice(c);
    }
}

/// Fields that belong to one HTTP/1.1 connection and have no place in HTTP/2.
fn connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

/// Encodes the head of an HTTP/1.1 upstream's response for an HTTP/2
/// client, from the received bytes: the fields the client gets
/// ([`codec::proxied_fields`]), names lowercased, and the body's length.
pub(crate) fn encode_proxied_head(
    head: &ResponseHead,
    ops: &[&HeaderOps],
    extra: Option<(&HeaderName, &HeaderValue)>,
) -> BytesMut {
    let mut block = BytesMut::with_capacity(256);
    hpack::encode_status(&mut block, head.status);
    codec::proxied_fields(head, ops, extra, |name, value| {
        hpack::encode_received_field(&mut block, name, value);
    });
    if let Framing::Length(n) = head.framing {
        let mut digits = [0u8; 20];
        hpack::encode_field(&mut block, b"content-length", decimal(n, &mut digits));
    }
    block
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Encodes response fields or trailers.
fn encode_fields(block: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        if connection_specific(name) {
            continue;
        }
        hpack::encode_field(block, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// A request's fields as they are decoded.
#[derive(Default)]
struct Fields {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    /// Any pseudo-header (trailers must have none).
    pseudo_seen: bool,
    regular_seen: bool,
    /// Why the request is malformed, if it is.
    malformed: Option<&'static str>,
    /// The header list size (RFC 9113, 6.5.2).
    size: usize,
}

impl Fields {
    fn add(&mut self, f: Field) {
        if self.size > MAX_HEADER_LIST {
            // Decoding goes on for the table's sake; nothing more is kept.
            return;
        }
        match f {
            Field::Pseudo(p, v) => {
                self.size += v.len() + 32 + 8;
                self.pseudo_seen = true;
                if self.regular_seen {
                    self.malformed
                        .get_or_insert("pseudo-header after a regular field");
                }
                let slot = match p {
                    Pseudo::Method => &mut self.method,
                    Pseudo::Scheme => &mut self.scheme,
                    Pseudo::Authority => &mut self.authority,
                    Pseudo::Path => &mut self.path,
                    Pseudo::Other => {
                        self.malformed
                            .get_or_insert("unknown or response pseudo-header");
                        return;
                    }
                };
                if slot.is_some() {
                    self.malformed.get_or_insert("repeated pseudo-header");
                }
                *slot = Some(v);
            }
            Field::Header(n, v) => {
                self.size += n.as_str().len() + v.len() + 32;
                self.regular_seen = true;
                if connection_specific(&n) {
                    self.malformed.get_or_insert("connection-specific field");
                } else if n == header::TE && v != "trailers" {
                    self.malformed.get_or_insert("TE other than \"trailers\"");
                }
                self.headers.append(n, v);
            }
            Field::Malformed(why) => {
                self.malformed.get_or_insert(why);
            }
        }
    }

    /// The request head, and its declared `content-length`.
    fn request(mut self) -> Result<(Request<()>, Option<u64>), &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        let method = self.method.ok_or("no :method")?;
        let method = Method::from_bytes(&method).map_err(|_| "invalid :method")?;
        let mut parts = uri::Parts::default();
        if let Some(a) = self.authority {
            parts.authority =
                Some(Authority::from_maybe_shared(a).map_err(|_| "invalid :authority")?);
        }
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() || parts.authority.is_none() {
                return Err("CONNECT needs :authority only");
            }
        } else {
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            if path.is_empty() {
                return Err("empty :path");
            }
            let scheme = match &scheme[..] {
                b"http" => Scheme::HTTP,
                b"https" => Scheme::HTTPS,
                other => Scheme::try_from(other).map_err(|_| "invalid :scheme")?,
            };
            // A URI cannot have a scheme without an authority: the scheme is
            // dropped then, and the Host field names the target.
            if parts.authority.is_some() {
                parts.scheme = Some(scheme);
            }
            parts.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "invalid :path")?);
        }
        let uri = Uri::from_parts(parts).map_err(|_| "invalid request target")?;
        let expect_len = content_length(&self.headers)?;
        // Cookie crumbs become one field for HTTP/1.1 upstreams (RFC 9113, 8.2.3).
        if self.headers.get_all(header::COOKIE).iter().nth(1).is_some() {
            let joined: Vec<u8> = self
                .headers
                .get_all(header::COOKIE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect::<Vec<_>>()
                .join(&b"; "[..]);
            let v = HeaderValue::from_bytes(&joined).map_err(|_| "invalid cookie")?;
            self.headers.insert(header::COOKIE, v);
        }
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = self.headers;
        Ok((req, expect_len))
    }
}

/// The declared `content-length`; several fields must agree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("invalid content-length")?;
        if found.is_some_and(|f| f != n) {
            return Err("conflicting content-length");
        }
        found = Some(n);
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
