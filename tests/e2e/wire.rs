//! HTTP/1.1 on the wire: raw bytes in, raw bytes out, through the outbound
//! listener's own codec. Framing that two parties could read differently
//! (request smuggling) is refused before anything reaches an upstream;
//! pipelining, chunked bodies, `Expect: 100-continue`, HEAD, close-delimited
//! and early responses behave as RFC 9112 says.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

mod props;

/// A response as a test client read it off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 client connection with its own (deliberately separate) parser.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

const DEADLINE: Duration = Duration::from_secs(10);

impl RawClient {
    async fn connect(mesh: &TestMesh) -> RawClient {
        RawClient {
            stream: TcpStream::connect(mesh.proxy()).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next line, or `None` if the connection closes first.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads one response (`head_request`: it has no body whatever it says).
    async fn response(&mut self, head_request: bool) -> Wire {
        match self.try_response(head_request).await {
            Ok(wire) => wire,
            Err(partial) => panic!("connection closed mid-response: {partial:?}"),
        }
    }

    /// Reads one response; if the connection closes before its end, what
    /// had arrived of it.
    async fn try_response(&mut self, head_request: bool) -> Result<Wire, Wire> {
        let mut wire = Wire {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let Some(status_line) = self.line().await else {
            return Err(wire);
        };
        wire.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        loop {
            let Some(line) = self.line().await else {
                return Err(wire);
            };
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("field line");
            wire.headers
                .push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let status = wire.status;
        if head_request || status < 200 || status == 204 || status == 304 {
            return Ok(wire);
        }
        if wire.header("transfer-encoding") == Some("chunked") {
            loop {
                let Some(size) = self.line().await else {
                    return Err(wire);
                };
                let size = usize::from_str_radix(&size, 16).expect("chunk size");
                if size == 0 {
                    loop {
                        match self.line().await {
                            Some(l) if l.is_empty() => break,
                            Some(_) => {}
                            None => return Err(wire),
                        }
                    }
                    break;
                }
                let Some(data) = self.take(size).await else {
                    return Err(wire);
                };
                wire.body.extend_from_slice(&data);
                match self.line().await {
                    Some(end) => assert_eq!(end, "", "CRLF after chunk data"),
                    None => return Err(wire),
                }
            }
        } else if let Some(len) = wire.header("content-length") {
            let len: usize = len.parse().expect("length");
            let Some(body) = self.take(len).await else {
                return Err(wire);
            };
            wire.body = body;
        } else {
            while self.fill().await {}
            wire.body = std::mem::take(&mut self.buf);
        }
        Ok(wire)
    }

    /// The proxy closes the connection (nothing more arrives).
    async fn expect_closed(&mut self) {
        assert!(!self.fill().await, "expected EOF, got {:?}", self.buf);
    }
}

/// An upstream that answers each request head with scripted bytes, without
/// reading any body, and remembers the heads it saw.
struct Scripted {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

/// A scripted answer: its bytes, where to cut them (each piece is written on
/// its own), and whether the connection closes after it.
struct Answer {
    bytes: Vec<u8>,
    cuts: Vec<usize>,
    close: bool,
}

/// Writes each piece on its own (no delay: one segment each, as far as the
/// kernel keeps them apart).
async fn write_in_pieces(stream: &mut TcpStream, bytes: &[u8], cuts: &[usize]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    for piece in anymesh_testkit::bytes::cut(bytes, cuts) {
        stream.write_all(piece).await?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

impl Scripted {
    /// `answer(head)` gives the response bytes and whether to close afterwards.
    async fn spawn(answer: fn(&str) -> (Vec<u8>, bool)) -> Scripted {
        Self::spawn_with(move |head| {
            let (bytes, close) = answer(head);
            Answer {
                bytes,
                cuts: Vec::new(),
                close,
            }
        })
        .await
    }

    async fn spawn_with(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let a = answer(&head);
                        seen.lock().push(head);
                        if write_in_pieces(&mut s, &a.bytes, &a.cuts).await.is_err() || a.close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, heads }
    }

    fn services(&self) -> String {
        format!(
            "services:\n  - name: raw\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints: [{{address: 127.0.0.1, port: {}}}]\n",
            self.addr.port()
        )
    }
}

async fn echo_mesh() -> (TestMesh, Vec<anymesh::upstream::Upstream>) {
    let ups = upstreams(&["echo"]).await;
    let mesh = TestMesh::start(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
    )
    .await;
    (mesh, ups)
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_any_upstream() {
    let (mesh, ups) = echo_mesh().await;
    let cases: &[(&str, u16)] = &[
        (
            "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.0\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: web\r\nContent-Length : 3\r\n\r\nabc",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: web\r\nX-Folded: a\r\n b\r\n\r\n",
            400,
        ),
        ("GET / HTTP/1.1\r\nHost: web\r\nHost: other\r\n\r\n", 400),
        // A malformed chunked body is caught while it streams.
        (
            "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            400,
        ),
    ];
    for (raw, status) in cases {
        let mut c = RawClient::connect(&mesh).await;
        c.send(raw.as_bytes()).await;
        let resp = c.response(false).await;
        assert_eq!(resp.status, *status, "{raw:?}: {resp:?}");
        assert!(
            resp.header("x-anymesh-reason").is_some(),
            "{raw:?}: local reply"
        );
        c.expect_closed().await;
    }
    // The last case reached the upstream with its head; nothing else did,
    // and no body of a refused request was taken as a request of its own.
    assert!(ups[0].received() <= 1, "{}", ups[0].received());
}

#[tokio::test]
async fn pipelined_requests_with_chunked_and_sized_bodies_answer_in_order() {
    let (mesh, ups) = echo_mesh().await;
    let mut c = RawClient::connect(&mesh).await;
    // One write: a chunked body, a sized body that looks like a request, a GET.
    c.send(
        b"POST /a HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: web\r\nContent-Length: 24\r\n\r\nGET /smuggled HTTP/1.1\r\n\
          GET /c HTTP/1.1\r\nHost: web\r\n\r\n",
    )
    .await;
    let a = c.response(false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(a.header("x-seen-path"), Some("/a"));
    let b = c.response(false).await;
    assert_eq!(
        (b.status, b.body.as_slice()),
        (200, &b"GET /smuggled HTTP/1.1\r\n"[..])
    );
    let last = c.response(false).await;
    assert_eq!((last.status, last.header("x-seen-path")), (200, Some("/c")));
    assert_eq!(ups[0].received(), 3, "three requests, no smuggled fourth");
}

#[tokio::test]
async fn expect_continue_gets_an_interim_response_then_the_answer() {
    let (mesh, _ups) = echo_mesh().await;
    let mut c = RawClient::connect(&mesh).await;
    c.send(b"POST /e HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    let resp = c.response(false).await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
    // The upstream never saw the expectation (the proxy answered it).
    assert!(!resp
        .header("x-seen-headers")
        .unwrap_or_default()
        .contains("expect"));
}

#[tokio::test]
async fn local_replies_keep_the_connection_and_http_10_closes() {
    let (mesh, _ups) = echo_mesh().await;
    let mut c = RawClient::connect(&mesh).await;
    c.send(b"GET / HTTP/1.1\r\nHost: nosuch\r\n\r\n").await;
    let miss = c.response(false).await;
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("connection"), None);
    c.send(b"HEAD / HTTP/1.1\r\nHost: nosuch\r\n\r\n").await;
    let head_miss = c.response(true).await;
    assert_eq!(head_miss.status, 404);
    c.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 200);

    let mut old = RawClient::connect(&mesh).await;
    old.send(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").await;
    let resp = old.response(false).await;
    assert_eq!(
        (resp.status, resp.header("connection")),
        (200, Some("close"))
    );
    assert_eq!(resp.body, b"echo\n");
    old.expect_closed().await;
}

#[tokio::test]
async fn close_delimited_and_head_responses_keep_the_client_connection() {
    let up = Scripted::spawn(|head| {
        if head.starts_with("HEAD") {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec(),
                false,
            )
        } else {
            // No length: the body ends when the upstream closes.
            (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello".to_vec(),
                true,
            )
        }
    })
    .await;
    let mesh = TestMesh::start(&up.services(), "").await;
    let mut c = RawClient::connect(&mesh).await;
    for _ in 0..2 {
        c.send(b"GET /x HTTP/1.1\r\nHost: raw\r\n\r\n").await;
        let resp = c.response(false).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert_eq!(resp.body, b"hello");
        c.send(b"HEAD /x HTTP/1.1\r\nHost: raw\r\n\r\n").await;
        let head = c.response(true).await;
        assert_eq!(
            (head.status, head.header("content-length")),
            (200, Some("5"))
        );
    }
    c.send(b"GET /x HTTP/1.1\r\nHost: raw\r\n\r\n").await;
    assert_eq!(c.response(false).await.body, b"hello");
    assert_eq!(up.heads.lock().len(), 5);
}

/// Sends a body of `len` bytes in full, as clients that read only after
/// sending (Python's http.client, for one) do.
async fn send_all_of(c: &mut RawClient, len: usize) -> io::Result<()> {
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        c.stream.write_all(&chunk[..n]).await?;
        left -= n;
    }
    Ok(())
}

/// A client that sends all of a body the proxy refused (a local answer, a
/// malformed head followed by more bytes) before it reads gets the answer, not a broken pipe or a reset: the proxy
/// closes in stages and drops what still comes.
#[tokio::test]
async fn a_client_sending_all_of_a_refused_body_still_reads_the_answer() {
    let (mesh, _ups) = echo_mesh().await;
    let heads: [(&[u8], u16); 2] = [
        // No route: answered by the proxy before any body is read.
        (
            b"POST / HTTP/1.1\r\nHost: nowhere\r\nContent-Length: 8000000\r\n\r\n",
            404,
        ),
        // A malformed head; the "body" is simply more bytes after it.
        (
            b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 1, 2\r\n\r\n",
            400,
        ),
    ];
    for (head, status) in heads {
        let mut c = RawClient::connect(&mesh).await;
        c.send(head).await;
        send_all_of(&mut c, 8_000_000)
            .await
            .expect("the proxy takes the rest of the body it refused");
        let resp = c.response(false).await;
        assert_eq!(resp.status, status, "{resp:?}");
        assert_eq!(resp.header("connection"), Some("close"));
        c.stream.shutdown().await.expect("close the client's side");
        c.expect_closed().await;
    }
}

/// An upstream that answers an upload early (413) and closes: the answer
/// reaches the client, whether it reads while still sending or only after
/// sending everything (the upstream's kernel then resets the connection under
/// the proxy's writes), and the proxy takes the rest of the upload.
#[tokio::test]
async fn an_early_answer_ends_the_upload_and_the_connection() {
    let up = Scripted::spawn(|_| {
        (
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!"
                .to_vec(),
            true,
        )
    })
    .await;
    let mesh = TestMesh::start(&up.services(), "").await;
    for sent_first in [1000, 8_000_000] {
        let mut c = RawClient::connect(&mesh).await;
        c.send(b"POST /upload HTTP/1.1\r\nHost: raw\r\nContent-Length: 8000000\r\n\r\n")
            .await;
        send_all_of(&mut c, sent_first)
            .await
            .expect("the proxy takes the upload");
        let resp = c.response(false).await;
        assert_eq!((resp.status, resp.body.as_slice()), (413, &b"big!"[..]));
        c.expect_closed().await;
    }
}

#[tokio::test]
async fn a_garbled_upstream_answer_is_a_502() {
    let up = Scripted::spawn(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
            true,
        )
    })
    .await;
    let mesh = TestMesh::start(&up.services(), "").await;
    let mut c = RawClient::connect(&mesh).await;
    c.send(b"GET / HTTP/1.1\r\nHost: raw\r\n\r\n").await;
    let resp = c.response(false).await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.header("x-anymesh-reason"), Some("upstream_error"));
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains("content-length values differ"), "{body}");
}

/// `listeners.header_read_timeout`: a client that starts a request head and
/// stalls is cut off once the timeout passes; a head completed in time is
/// served, even in pieces.
#[tokio::test]
async fn a_stalled_request_head_is_cut_off_after_the_header_read_timeout() {
    let ups = upstreams(&["echo"]).await;
    let mesh = TestMesh::start_with_listener(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
        "header_read_timeout: 300ms",
    )
    .await;
    let mut prompt = RawClient::connect(&mesh).await;
    prompt.send(b"GET /a HTTP/1.1\r\nHost: web\r\n").await;
    prompt.send(b"x-piece: 2\r\n\r\n").await;
    assert_eq!(prompt.response(false).await.status, 200);

    let mut stalled = RawClient::connect(&mesh).await;
    stalled.send(b"GET /b HTTP/1.1\r\nHost: we").await;
    let sent = std::time::Instant::now();
    stalled.expect_closed().await;
    // The timer starts when the proxy reads the first bytes, after the send.
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "cut off after {:?}, before the timeout",
        sent.elapsed()
    );
    // The connection that completed its head in time is still usable.
    prompt.send(b"GET /c HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(prompt.response(false).await.status, 200);
}
