//! The server over an in-memory duplex, driven by a client that writes
//! frames by hand. The handler has no routes: every request gets a local
//! answer with a body.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::frame::*;
use super::handoff;
use super::limits::{CONN_WINDOW, STREAM_WINDOW};
use super::state::State;

mod props;

#[derive(Debug)]
struct Frame {
    ty: u8,
    flags: u8,
    id: u32,
    payload: Bytes,
}

impl Frame {
    /// The error code of RST_STREAM or GOAWAY.
    fn code(&self) -> u32 {
        let at = if self.ty == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes([
            self.payload[at],
            self.payload[at + 1],
            self.payload[at + 2],
            self.payload[at + 3],
        ])
    }
}

/// A client on one end of a duplex, the server on the other.
struct Client {
    io: DuplexStream,
    buf: BytesMut,
    server: JoinHandle<()>,
    _stop: watch::Sender<bool>,
}

fn peer() -> crate::service::Peer {
    crate::service::Peer::outbound(SocketAddr::from(([127, 0, 0, 1], 40_000)))
}

impl Client {
    /// Starts a server and sends the preface and SETTINGS with `settings`.
    async fn connect(settings: &[(u16, u32)]) -> Client {
        let (io, server_io) = tokio::io::duplex(64 * 1024);
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(super::conn::serve_with(
            server_io,
            Bytes::new(),
            peer(),
            test_handler(),
            stop_rx,
        ));
        let mut c = Client {
            io,
            buf: BytesMut::new(),
            server,
            _stop: stop,
        };
        c.io.write_all(PREFACE).await.expect("preface");
        let mut p = Vec::new();
        for (k, v) in settings {
            p.put_u16(*k);
            p.put_u32(*v);
        }
        c.send(SETTINGS, 0, 0, &p).await;
        c
    }

    async fn send(&mut self, ty: u8, flags: u8, id: u32, payload: &[u8]) {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.put_uint(payload.len() as u64, 3);
        f.put_u8(ty);
        f.put_u8(flags);
        f.put_u32(id);
        f.extend_from_slice(payload);
        // The server may have closed already; what it sent is still read.
        let _ = self.io.write_all(&f).await;
    }

    /// A request's HEADERS, fields as literals.
    async fn request(&mut self, id: u32, fields: &[(&str, &str)], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, id, &block(fields)).await;
    }

    /// The next frame; `None` once the server closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(head) = self.buf.first_chunk::<HEAD_LEN>() {
                let h = Head::read(head);
                if self.buf.len() >= HEAD_LEN + h.len {
                    self.buf.advance(HEAD_LEN);
                    let payload = self.buf.split_to(h.len).freeze();
                    return Some(Frame {
                        ty: h.ty,
                        flags: h.flags,
                        id: h.id,
                        payload,
                    });
                }
            }
            let read = self.io.read_buf(&mut self.buf);
            let n = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("the server answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Skips frames until one of type `ty` on stream `id`.
    async fn expect(&mut self, ty: u8, id: u32) -> Frame {
        loop {
            let f = self
                .frame()
                .await
                .unwrap_or_else(|| panic!("connection closed before frame type {ty}"));
            if f.ty == GOAWAY && ty != GOAWAY {
                panic!(
                    "GOAWAY while waiting for frame type {ty}: {:?}",
                    String::from_utf8_lossy(&f.payload[8..])
                );
            }
            if f.ty == ty && f.id == id {
                return f;
            }
        }
    }

    /// Expects GOAWAY with `code`, then the end of the connection.
    async fn expect_goaway(&mut self, code: Code) {
        let f = self.expect(GOAWAY, 0).await;
        assert_eq!(
            f.code(),
            code as u32,
            "GOAWAY code; debug data: {:?}",
            String::from_utf8_lossy(&f.payload[8..])
        );
        while self.frame().await.is_some() {}
    }
}

/// A header block of literals that are not indexed, without Huffman coding
/// (names and values shorter than 127 bytes).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        for s in [n, v] {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "web"),
    (":path", "/"),
];

/// RFC 9113, 8.2.1: a field value must not start or end with whitespace;
/// such a request is malformed (a stream error), and the connection serves on.
#[tokio::test]
async fn a_field_value_with_whitespace_at_an_end_is_malformed() {
    let mut c = Client::connect(&[]).await;
    for (id, value) in [
        (1, " padded"),
        (3, "padded "),
        (5, "\tpadded"),
        (7, "padded\t"),
    ] {
        let mut fields = GET.to_vec();
        fields.push(("x-padded", value));
        c.request(id, &fields, true).await;
        let rst = c.expect(RST_STREAM, id).await;
        assert_eq!(rst.code(), Code::Protocol as u32, "{value:?}");
    }
    // Whitespace inside a value is fine.
    let mut fields = GET.to_vec();
    fields.push(("x-inner", "a b\tc"));
    c.request(9, &fields, true).await;
    // Served: the answer's head comes, no RST_STREAM before it.
    c.expect(HEADERS, 9).await;
}

/// RFC 9113, 5.1.1: a HEADERS frame on a stream id lower than one already
/// used, and not open, is a connection error PROTOCOL_ERROR.
#[tokio::test]
async fn headers_on_a_lower_stream_id_is_a_protocol_error() {
    let mut c = Client::connect(&[]).await;
    c.request(5, &GET, true).await;
    c.expect(HEADERS, 5).await;
    // Never used, but lower than 5.
    c.request(3, &GET, true).await;
    c.expect_goaway(Code::Protocol).await;

    // Used and closed.
    let mut c = Client::connect(&[]).await;
    c.request(1, &GET, true).await;
    c.expect(DATA, 1).await;
    c.request(3, &GET, true).await;
    c.expect(HEADERS, 3).await;
    c.request(1, &GET, true).await;
    c.expect_goaway(Code::Protocol).await;
}

/// A client that closes its side (TCP FIN) while a response waits for
/// window it can no longer give: the stalled stream ends at once, and so
/// does the connection, instead of waiting for the keep-alive PING.
#[tokio::test(start_paused = true)]
async fn a_half_closed_client_ends_streams_stalled_on_its_window() {
    // Stream windows of 0: the answer's head goes out, its body cannot.
    let mut c = Client::connect(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    c.request(1, &GET, true).await;
    let head = c.expect(HEADERS, 1).await;
    assert_eq!(head.flags & END_STREAM, 0, "the answer has a body");
    c.io.shutdown().await.expect("half-close");
    let start = tokio::time::Instant::now();
    let rst = c.expect(RST_STREAM, 1).await;
    assert_eq!(rst.code(), Code::Cancel as u32);
    assert!(c.frame().await.is_none(), "the connection closes");
    tokio::time::timeout(Duration::from_secs(1), &mut c.server)
        .await
        .expect("the connection task ends at once")
        .expect("no panic");
    assert!(start.elapsed() < Duration::from_secs(1));

    // A tiny window: some of the body goes out, then it stalls.
    let mut c = Client::connect(&[(SETTINGS_INITIAL_WINDOW_SIZE, 3)]).await;
    c.request(1, &GET, true).await;
    c.expect(HEADERS, 1).await;
    let data = c.expect(DATA, 1).await;
    assert_eq!((data.payload.len(), data.flags & END_STREAM), (3, 0));
    c.io.shutdown().await.expect("half-close");
    let rst = c.expect(RST_STREAM, 1).await;
    assert_eq!(rst.code(), Code::Cancel as u32);
    tokio::time::timeout(Duration::from_secs(1), &mut c.server)
        .await
        .expect("the connection task ends at once")
        .expect("no panic");
}

/// A half-closed client still gets the answers that need no window.
#[tokio::test(start_paused = true)]
async fn a_half_closed_client_still_gets_answers_the_window_allows() {
    let mut c = Client::connect(&[]).await;
    c.request(1, &GET, true).await;
    c.io.shutdown().await.expect("half-close");
    c.expect(HEADERS, 1).await;
    let data = c.expect(DATA, 1).await;
    assert!(data.payload.starts_with(b"anymesh: "));
    while let Some(f) = c.frame().await {
        assert_ne!(f.ty, RST_STREAM, "{f:?}");
    }
}

/// The frames in `bytes`.
fn frames_in(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(head) = bytes.first_chunk::<HEAD_LEN>() {
        let h = Head::read(head);
        let payload = Bytes::copy_from_slice(&bytes[HEAD_LEN..HEAD_LEN + h.len]);
        out.push(Frame {
            ty: h.ty,
            flags: h.flags,
            id: h.id,
            payload,
        });
        bytes = &bytes[HEAD_LEN + h.len..];
    }
    out
}

fn frame(out: &mut BytesMut, ty: u8, flags: u8, id: u32, payload: &[u8]) {
    frame_head(out, payload.len(), ty, flags, id);
    out.extend_from_slice(payload);
}

/// A POST on stream `id`, then `n` bytes of body in DATA frames.
fn post(out: &mut BytesMut, id: u32, n: usize) {
    let mut fields = GET.to_vec();
    fields[0].1 = "POST";
    frame(out, HEADERS, END_HEADERS, id, &block(&fields));
    let data = vec![b'x'; MAX_FRAME];
    let mut left = n;
    while left > 0 {
        let k = left.min(MAX_FRAME);
        frame(out, DATA, 0, id, &data[..k]);
        left -= k;
    }
}

/// DATA beyond the window this side gave is a stream error on a stream's
/// window and a connection error on the connection's (RFC 9113, 6.9.1).
/// The state runs without its driver: requests start but are never polled,
/// so no body is read and no window is credited back, whatever the timing.
#[tokio::test]
async fn data_beyond_a_window_is_a_flow_control_error() {
    let mut st = State::new(PREFACE, peer(), test_handler());
    frame(&mut st.rbuf, SETTINGS, 0, 0, &[]);
    post(&mut st.rbuf, 1, STREAM_WINDOW as usize + 1);
    assert!(st.on_input().is_ok());
    let rst: Vec<_> = frames_in(&st.wbuf)
        .into_iter()
        .filter(|f| f.ty == RST_STREAM)
        .collect();
    assert_eq!(rst.len(), 1, "{rst:?}");
    assert_eq!((rst[0].id, rst[0].code()), (1, Code::FlowControl as u32));

    let mut st = State::new(PREFACE, peer(), test_handler());
    frame(&mut st.rbuf, SETTINGS, 0, 0, &[]);
    let streams = CONN_WINDOW / STREAM_WINDOW;
    for id in (0..streams).map(|i| 2 * i + 1) {
        post(&mut st.rbuf, id, STREAM_WINDOW as usize);
    }
    assert!(
        st.on_input().is_ok(),
        "the whole connection window may be used"
    );
    post(&mut st.rbuf, 2 * streams + 1, 1);
    let err = st
        .on_input()
        .expect_err("one byte beyond the connection window");
    assert_eq!(err.0, Code::FlowControl);
}

/// A handler without routes: every request gets a local answer with a body.
pub(super) fn test_handler() -> std::sync::Arc<handoff::Handler> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(&mut registry));
    let router = std::sync::Arc::new(crate::router::Router::new());
    let settings = crate::forward::UpstreamSettings::default();
    handoff::handler(std::sync::Arc::new(crate::forward::Proxy::new(
        router, metrics, &settings,
    )))
}
