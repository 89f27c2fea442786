//! The outbound listener's own HTTP/2 server: requests and bodies through
//! real clients, and protocol violations through a client that writes frames
//! by hand and checks the error codes RFC 9113 asks for.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

mod props;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

const PROTOCOL_ERROR: u32 = 1;
const FLOW_CONTROL_ERROR: u32 = 3;
const FRAME_SIZE_ERROR: u32 = 6;
const COMPRESSION_ERROR: u32 = 9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug)]
struct Frame {
    ty: u8,
    flags: u8,
    id: u32,
    payload: Bytes,
}

/// A client that writes frames by hand.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects and sends the preface and SETTINGS with `settings`.
    async fn connect(mesh: &TestMesh, settings: &[(u16, u32)]) -> Raw {
        let mut raw = Raw::connect_bare(mesh).await;
        raw.tcp.write_all(PREFACE).await.expect("preface");
        let mut p = Vec::new();
        for (k, v) in settings {
            p.put_u16(*k);
            p.put_u32(*v);
        }
        raw.send(SETTINGS, 0, 0, &p).await;
        raw
    }

    async fn connect_bare(mesh: &TestMesh) -> Raw {
        let tcp = TcpStream::connect(mesh.proxy()).await.expect("connect");
        Raw {
            tcp,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, ty: u8, flags: u8, id: u32, payload: &[u8]) {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.put_uint(payload.len() as u64, 3);
        f.put_u8(ty);
        f.put_u8(flags);
        f.put_u32(id);
        f.extend_from_slice(payload);
        // The server may have closed already; what it sent is still read.
        let _ = self.tcp.write_all(&f).await;
    }

    /// A request's HEADERS, fields as literals.
    async fn request(&mut self, id: u32, fields: &[(&str, &str)], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, id, &block(fields)).await;
    }

    /// The next frame; `None` once the server closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16
                    | (self.buf[1] as usize) << 8
                    | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let ty = self.buf[3];
                    let flags = self.buf[4];
                    let id =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                    self.buf.advance(9);
                    let payload = self.buf.split_to(len).freeze();
                    return Some(Frame {
                        ty,
                        flags,
                        id,
                        payload,
                    });
                }
            }
            let n = tokio::time::timeout(DEADLINE, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("the server answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Skips frames until one of type `ty` (on stream `id`, when given).
    async fn expect(&mut self, ty: u8, id: Option<u32>) -> Frame {
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
            if f.ty == ty && id.is_none_or(|i| i == f.id) {
                return f;
            }
        }
    }

    /// Expects GOAWAY with `code`, then the end of the connection.
    async fn expect_goaway(&mut self, code: u32) {
        let f = self.expect(GOAWAY, None).await;
        let got = u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
        assert_eq!(
            got,
            code,
            "GOAWAY code; debug data: {:?}",
            String::from_utf8_lossy(&f.payload[8..])
        );
        while self.frame().await.is_some() {}
    }

    /// Reads to the end of the connection; the code of the last GOAWAY seen.
    async fn goaway_code(&mut self) -> Option<u32> {
        let mut code = None;
        while let Some(f) = self.frame().await {
            if f.ty == GOAWAY {
                code = Some(u32::from_be_bytes([
                    f.payload[4],
                    f.payload[5],
                    f.payload[6],
                    f.payload[7],
                ]));
            }
        }
        code
    }

    /// Expects RST_STREAM on `id` with `code`.
    async fn expect_reset(&mut self, id: u32, code: u32) {
        let f = self.expect(RST_STREAM, Some(id)).await;
        assert_eq!(
            u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]),
            code
        );
    }

    /// Reads a response to the end: its first header byte and its body.
    async fn response(&mut self, id: u32) -> (u8, Vec<u8>) {
        let head = self.expect(HEADERS, Some(id)).await;
        let mut body = Vec::new();
        if head.flags & END_STREAM == 0 {
            loop {
                let f = self.expect(DATA, Some(id)).await;
                body.extend_from_slice(&f.payload);
                if f.flags & END_STREAM != 0 {
                    break;
                }
            }
        }
        (head.payload[0], body)
    }
}

/// A header block of literals that are not indexed, without Huffman coding.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        for s in [n, v] {
            // The length, an integer with a 7-bit prefix (RFC 7541, 5.1).
            if s.len() < 127 {
                b.push(s.len() as u8);
            } else {
                b.push(127);
                let mut rest = s.len() - 127;
                while rest >= 128 {
                    b.push((rest % 128) as u8 | 0x80);
                    rest /= 128;
                }
                b.push(rest as u8);
            }
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "http".into()),
        (":authority", "web".into()),
        (":path", path.into()),
    ]
}

fn fields<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    f.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

async fn web_mesh() -> (TestMesh, Vec<anymesh::upstream::Upstream>) {
    let ups = upstreams(&["a"]).await;
    let mesh = TestMesh::start(&services("web", "http", &[endpoint(&ups[0], "")]), "").await;
    (mesh, ups)
}

#[tokio::test]
async fn requests_are_served_and_malformed_ones_reset_without_harm_to_the_connection() {
    let (mesh, _ups) = web_mesh().await;
    let mut c = Raw::connect(&mesh, &[]).await;
    // The server's SETTINGS come first.
    let s = c.frame().await.expect("settings");
    assert_eq!((s.ty, s.flags), (SETTINGS, 0));

    c.request(1, &fields(&get("/one")), true).await;
    let (status, body) = c.response(1).await;
    assert_eq!(status, 0x88, ":status 200, indexed");
    assert_eq!(body, b"a\n");

    let mut bad = get("/x");
    bad.push(("X-Upper", "1".into()));
    c.request(3, &fields(&bad), true).await;
    c.expect_reset(3, PROTOCOL_ERROR).await;

    let no_path: Vec<_> = get("/x")
        .into_iter()
        .filter(|(n, _)| *n != ":path")
        .collect();
    c.request(5, &fields(&no_path), true).await;
    c.expect_reset(5, PROTOCOL_ERROR).await;

    let mut hop = get("/x");
    hop.push(("connection", "keep-alive".into()));
    c.request(7, &fields(&hop), true).await;
    c.expect_reset(7, PROTOCOL_ERROR).await;

    let mut late = get("/x");
    late.insert(1, ("accept", "*/*".into()));
    late.push((":path", "/y".into()));
    c.request(9, &fields(&late), true).await;
    c.expect_reset(9, PROTOCOL_ERROR).await;

    // A body shorter than its content-length.
    let mut short = get("/x");
    short[0].1 = "POST".into();
    short.push(("content-length", "10".into()));
    c.request(11, &fields(&short), false).await;
    c.send(DATA, END_STREAM, 11, b"abc").await;
    c.expect_reset(11, PROTOCOL_ERROR).await;

    c.send(PING, 0, 0, b"12345678").await;
    let pong = c.expect(PING, None).await;
    assert_eq!((pong.flags, &pong.payload[..]), (1, &b"12345678"[..]));

    // A header list over 64 KiB, in HEADERS and CONTINUATION frames: 431.
    let mut huge = get("/x");
    huge.push(("x-huge", "h".repeat(70_000)));
    let b = block(&fields(&huge));
    let mut parts = b.chunks(16_384).peekable();
    c.send(HEADERS, END_STREAM, 13, parts.next().expect("first part"))
        .await;
    while let Some(p) = parts.next() {
        let last = parts.peek().is_none();
        c.send(CONTINUATION, if last { END_HEADERS } else { 0 }, 13, p)
            .await;
    }
    let head = c.expect(HEADERS, Some(13)).await;
    assert_eq!(
        &head.payload[..],
        b"\x08\x03431",
        ":status 431 as a literal"
    );
    assert_ne!(head.flags & END_STREAM, 0);

    // The connection still serves.
    c.request(15, &fields(&get("/two")), true).await;
    let (status, body) = c.response(15).await;
    assert_eq!((status, &body[..]), (0x88, &b"a\n"[..]));

    // HEADERS on a stream that completed is a connection error: a stream id
    // not above every one used (RFC 9113, 5.1.1). One this side reset would
    // be ignored: the client may not have seen the reset.
    c.request(1, &fields(&get("/x")), true).await;
    c.expect_goaway(PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn connection_errors_end_with_goaway_and_the_right_code() {
    let (mesh, _ups) = web_mesh().await;

    // A wrong preface: the connection closes.
    let mut c = Raw::connect_bare(&mesh).await;
    c.tcp
        .write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .await
        .expect("write");
    c.expect_goaway(PROTOCOL_ERROR).await;

    // The first frame is not SETTINGS.
    let mut c = Raw::connect_bare(&mesh).await;
    c.tcp.write_all(PREFACE).await.expect("preface");
    c.send(PING, 0, 0, b"12345678").await;
    c.expect_goaway(PROTOCOL_ERROR).await;

    // A frame larger than the server's SETTINGS_MAX_FRAME_SIZE.
    let mut c = Raw::connect(&mesh, &[]).await;
    c.send(DATA, 0, 1, &vec![0; 16_385]).await;
    c.expect_goaway(FRAME_SIZE_ERROR).await;

    // DATA on a stream never opened.
    let mut c = Raw::connect(&mesh, &[]).await;
    c.send(DATA, 0, 1, b"x").await;
    c.expect_goaway(PROTOCOL_ERROR).await;

    // A header block that is not HPACK: index 0.
    let mut c = Raw::connect(&mesh, &[]).await;
    c.send(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80]).await;
    c.expect_goaway(COMPRESSION_ERROR).await;

    // A connection window pushed past 2^31-1.
    let mut c = Raw::connect(&mesh, &[]).await;
    c.send(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .await;
    c.expect_goaway(FLOW_CONTROL_ERROR).await;

    // SETTINGS_MAX_FRAME_SIZE below the minimum.
    let mut c = Raw::connect(&mesh, &[(5, 100)]).await;
    c.expect_goaway(PROTOCOL_ERROR).await;

    // A header block that never ends (CONTINUATION flood).
    let mut c = Raw::connect(&mesh, &[]).await;
    let mut start = block(&fields(&get("/x")));
    start.extend(std::iter::repeat_n(0x81u8, 100));
    c.send(HEADERS, END_STREAM, 1, &start).await;
    let filler = vec![0x81u8; 16_384];
    for _ in 0..10 {
        c.send(CONTINUATION, 0, 1, &filler).await;
    }
    c.expect_goaway(ENHANCE_YOUR_CALM).await;
}

#[tokio::test]
async fn streams_reset_in_a_flood_close_the_connection() {
    let (mesh, _ups) = web_mesh().await;
    let mut c = Raw::connect(&mesh, &[]).await;
    let mut slow = get("/slow");
    slow.push(("x-delay-ms", "5000".into()));
    let mut id = 1;
    for _ in 0..1000 {
        c.request(id, &fields(&slow), true).await;
        c.send(RST_STREAM, 0, id, &8u32.to_be_bytes()).await;
        id += 2;
    }
    assert_eq!(c.goaway_code().await, Some(ENHANCE_YOUR_CALM));

    // Resets the client provokes (a body longer than its content-length)
    // count the same as resets it sends.
    let mut c = Raw::connect(&mesh, &[]).await;
    let mut post = slow.clone();
    post[0].1 = "POST".into();
    post.push(("content-length", "0".into()));
    let mut id = 1;
    for _ in 0..1000 {
        c.request(id, &fields(&post), false).await;
        c.send(DATA, 0, id, b"x").await;
        id += 2;
    }
    assert_eq!(c.goaway_code().await, Some(ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn responses_wait_for_the_clients_flow_control_window() {
    let (mesh, _ups) = web_mesh().await;
    // Stream windows of 10 bytes: a 2,000-byte echo needs WINDOW_UPDATEs to get through.
    let mut c = Raw::connect(&mesh, &[(4, 10)]).await;
    let payload: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let mut post = get("/echo");
    post[0].1 = "POST".into();
    post.push(("content-length", "2000".into()));
    c.request(1, &fields(&post), false).await;
    c.send(DATA, END_STREAM, 1, &payload).await;
    c.expect(HEADERS, Some(1)).await;
    let mut got = Vec::new();
    loop {
        let f = c.expect(DATA, Some(1)).await;
        assert!(
            f.payload.len() <= 10,
            "a DATA frame larger than the window: {}",
            f.payload.len()
        );
        got.extend_from_slice(&f.payload);
        if f.flags & END_STREAM != 0 {
            break;
        }
        // Gives back what the frame used: the window stays at 10 bytes.
        let used = f.payload.len() as u32;
        if used > 0 {
            c.send(WINDOW_UPDATE, 0, 1, &used.to_be_bytes()).await;
        }
    }
    assert_eq!(
        got, payload,
        "the body came back whole, ten bytes at a time"
    );
}

/// One echo upstream behind two services: `plain` speaks HTTP/1.1 to it,
/// `grpcish` HTTP/2.
async fn plain_and_grpcish_mesh() -> (TestMesh, Vec<anymesh::upstream::Upstream>) {
    let ups = upstreams(&["echo"]).await;
    let services = "services:\n  - name: plain\n    ports: [{name: http, port: 80, protocol: http}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n  - name: grpcish\n    ports: [{name: grpc, port: 81, protocol: grpc}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n"
        .replace("PORT", &ups[0].addr.port().to_string());
    (TestMesh::start(&services, "").await, ups)
}

/// A client with small windows sends and receives a large body through the
/// proxy; request and response trailers pass both ways with an HTTP/2 upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_trailers_stream_both_ways_under_flow_control() {
    let (mesh, _ups) = plain_and_grpcish_mesh().await;
    let tcp = TcpStream::connect(mesh.proxy()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(32 * 1024)
        .adaptive_window(false)
        .handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    const CHUNK: usize = 100_000;
    const SIZE: usize = 40 * CHUNK;
    for host in ["plain", "grpcish"] {
        let mut frames: Vec<Result<BodyFrame<Bytes>, std::convert::Infallible>> = (0..SIZE / CHUNK)
            .map(|i| Ok(BodyFrame::data(Bytes::from(vec![(i % 251) as u8; CHUNK]))))
            .collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "42".parse().expect("value"));
        frames.push(Ok(BodyFrame::trailers(trailers)));
        let req = http::Request::post(format!("http://{host}/upload"))
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .expect("req");
        let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        assert_eq!(body.len(), SIZE, "{host}: every byte came back");
        assert!(
            body.chunks(CHUNK)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b == (i % 251) as u8)),
            "{host}: bytes came back unchanged"
        );
        if host == "grpcish" {
            // Trailers travel only where both hops are HTTP/2.
            let t = trailers.expect("trailers echoed by the HTTP/2 upstream");
            assert_eq!(t["x-checksum"], "42");
        }
    }
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_running_streams_finish() {
    let (mesh, ups) = web_mesh().await;
    let mut c = Raw::connect(&mesh, &[]).await;
    let mut slow = get("/slow");
    slow.push(("x-delay-ms", "300".into()));
    c.request(1, &fields(&slow), true).await;
    // The request is in flight once the upstream has it.
    eventually("the slow request reaches the upstream", || {
        let n = ups[0].received();
        async move { (n > 0).then_some(()) }
    })
    .await;
    let stopping = tokio::spawn(async move {
        mesh.mesh.shutdown().await;
    });
    let goaway = c.expect(GOAWAY, None).await;
    assert_eq!(
        u32::from_be_bytes([
            goaway.payload[0],
            goaway.payload[1],
            goaway.payload[2],
            goaway.payload[3]
        ]),
        1,
        "GOAWAY names the last stream it will serve"
    );
    let (status, body) = c.response(1).await;
    assert_eq!((status, &body[..]), (0x88, &b"a\n"[..]));
    assert!(
        c.frame().await.is_none(),
        "the connection closes once drained"
    );
    stopping.await.expect("shutdown");
}

/// Random frames, some of them well-formed, on many connections: the server
/// answers or closes each connection, never panics, and keeps serving.
#[tokio::test]
async fn random_frames_never_panic_the_server() {
    let panics = listener_panics();
    let (mesh, _ups) = web_mesh().await;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = block(&fields(&get("/fuzz")));
    for _ in 0..2000 {
        let mut c = Raw::connect(&mesh, &[]).await;
        for _ in 0..(next() % 20) {
            let r = next();
            let ty = (r % 11) as u8;
            let flags = (r >> 8) as u8;
            let id = ((r >> 16) % 8) as u32;
            let len = ((r >> 24) % 40) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if ty == HEADERS && r % 3 == 0 {
                payload = valid.clone();
            }
            c.send(ty, flags, id, &payload).await;
        }
        // The connection either answers a PING or ends.
        c.send(PING, 0, 0, b"fuzzfuzz").await;
        while let Some(f) = c.frame().await {
            if f.ty == PING && f.flags & 1 != 0 {
                break;
            }
        }
    }
    let mut c = Raw::connect(&mesh, &[]).await;
    c.request(1, &fields(&get("/after")), true).await;
    assert_eq!(c.response(1).await.0, 0x88, "still serving");
    assert_eq!(
        panics.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a listener thread panicked"
    );
}

/// An HTTP/2 client gets an HTTP/1.1 upstream's response head re-encoded
/// from the received bytes: route header operations applied, hop-by-hop
/// fields gone, names lowercased, the length kept.
#[tokio::test]
async fn http1_upstream_heads_reach_http2_clients_with_the_routes_header_operations() {
    let ups = upstreams(&["api"]).await;
    let routes = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
    - match: [{uri: {exact: /health}}]
      directResponse: {status: 418, body: {string: "short and stout"}}
    - match: [{uri: {prefix: /v1/}}]
      headers:
        response:
          set: {x-upstream: replaced}
          add: {x-served-by: anymesh}
          remove: [x-seen-version]
      route:
        - destination: {host: api}
    - route:
        - destination: {host: api}
"#;
    let mesh = TestMesh::start(&services("api", "http", &[endpoint(&ups[0], "")]), routes).await;
    let tcp = TcpStream::connect(mesh.proxy()).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut get = |path: &str| {
        let req = http::Request::get(format!("http://api{path}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("req");
        let sent = sender.send_request(req);
        async move {
            let resp = sent.await.expect("response");
            let (parts, body) = resp.into_parts();
            (parts, body.collect().await.expect("body").to_bytes())
        }
    };
    let (parts, body) = get("/v1/items").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"api\n");
    let h = &parts.headers;
    assert_eq!(
        h["x-upstream"], "replaced",
        "set replaces the upstream's field"
    );
    assert_eq!(h["x-served-by"], "anymesh", "add");
    assert!(h.get("x-seen-version").is_none(), "remove: {h:?}");
    assert_eq!(h["x-seen-path"], "/v1/items");
    assert_eq!(h["content-length"], "4");

    let (parts, body) = get("/other").await;
    assert_eq!(
        parts.headers["x-upstream"], "api",
        "no operations on other routes"
    );
    assert_eq!(parts.headers["x-seen-version"], "HTTP/1.1");
    assert_eq!(&body[..], b"api\n");

    let (parts, body) = get("/health").await;
    assert_eq!(parts.status.as_u16(), 418);
    assert_eq!(&body[..], b"short and stout");
}
