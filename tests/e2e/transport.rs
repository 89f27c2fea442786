//! Transport: HTTP/2 prior knowledge, large streamed bodies, concurrency.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::*;

/// An HTTP/2 prior-knowledge client connection to the mesh's outbound listener.
async fn h2_client(mesh: &TestMesh) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(mesh.proxy())
        .await
        .expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn http2_prior_knowledge_both_sides() {
    let ups = upstreams(&["h2"]).await;
    let plain = "services:\n  - name: plain\n    ports: [{name: http, port: 80, protocol: http}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n  - name: grpcish\n    ports: [{name: grpc, port: 81, protocol: grpc}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n"
        .replace("PORT", &ups[0].addr.port().to_string());
    let mesh = TestMesh::start(&plain, "").await;
    // One prior-knowledge HTTP/2 connection to the proxy; :authority names the service.
    let mut sender = h2_client(&mesh).await;
    for (host, upstream_version) in [("plain", "HTTP/1.1"), ("grpcish", "HTTP/2.0")] {
        let req = http::Request::get(format!("http://{host}/x"))
            .body(Full::<Bytes>::default())
            .expect("req");
        let resp = sender
            .send_request(req)
            .await
            .expect("h2 request through the proxy");
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["x-seen-version"], upstream_version, "{host}");
        assert_eq!(resp.headers()["x-upstream"], "h2");
        assert_eq!(
            resp.headers()["x-seen-host"],
            host,
            "the upstream sees the service's authority"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_all_succeed() {
    let ups = upstreams(&["a", "b"]).await;
    let eps: Vec<String> = ups.iter().map(|u| endpoint(u, "version: v1")).collect();
    let mesh = TestMesh::start(&services("web", "http", &eps), "").await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let client = mesh.client.clone();
        let proxy = mesh.proxy();
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            let req = http::Request::post(format!("http://{proxy}/"))
                .header("host", "web")
                .body(Full::new(Bytes::from(format!("request {i}"))))
                .expect("req");
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status != StatusCode::OK || body != format!("request {i}").as_bytes() {
                return Err(format!("request {i}: {status} {body:?}"));
            }
            Ok(())
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.expect("task") {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

/// A 64 MiB upload streams through the real binary and back; its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_streams_with_bounded_memory() {
    const SIZE: usize = 64 << 20;
    const CHUNK: usize = 64 << 10;
    let ups = upstreams(&["echo"]).await;
    let bin = crate::cli::Binary::start(
        &services("big", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
    )
    .await;
    let baseline = bin.rss_kib();
    let chunks = futures_util::stream::iter((0..SIZE / CHUNK).map(|i| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
            (i % 251)
                as u8;
            CHUNK
        ])))
    }));
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{}/upload", bin.outbound))
        .header("host", "big")
        .body(StreamBody::new(chunks))
        .expect("req");
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut received = 0usize;
    let mut checksum = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            checksum += data.iter().map(|b| u64::from(*b)).sum::<u64>();
            received += data.len();
        }
    }
    assert_eq!(received, SIZE, "every byte came back");
    let expected: u64 = (0..SIZE / CHUNK)
        .map(|i| (i % 251) as u64 * CHUNK as u64)
        .sum();
    assert_eq!(checksum, expected, "bytes came back unchanged");
    let peak = bin.peak_rss_kib();
    eprintln!("64 MiB through the proxy: RSS before {baseline} KiB, peak {peak} KiB");
    // Buffering the body even once would add 64 MiB; allow 32 MiB over the idle baseline.
    assert!(
        peak < baseline + 32 * 1024,
        "peak RSS {peak} KiB vs baseline {baseline} KiB: the body was buffered"
    );
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let ups = upstreams(&["keep"]).await;
    let mesh = TestMesh::start(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
    )
    .await;
    for _ in 0..20 {
        assert_eq!(mesh.get("web", "/", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(
        ups[0].connections(),
        1,
        "20 sequential requests share one keep-alive connection"
    );
}

/// An upstream that answers each connection's first request head with
/// `answer` and closes it without announcing `Connection: close`: every
/// pooled connection goes stale. Returns its port.
async fn once_per_connection_upstream(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                // Close without saying so.
            });
        }
    });
    (port, server)
}

#[tokio::test]
async fn stale_pooled_connections_are_retried_not_failed() {
    let (port, server) = once_per_connection_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-upstream: once\r\n\r\nok\n",
    )
    .await;
    let services = format!(
        "services:\n  - name: flaky\n    endpoints: [{{address: 127.0.0.1, port: {port}}}]\n"
    );
    let mesh = TestMesh::start(&services, "").await;
    for i in 0..30 {
        let (status, who, body) = mesh.get("flaky", "/", &[]).await;
        assert_eq!(
            (status, who.as_str()),
            (StatusCode::OK, "once"),
            "request {i}: {body}"
        );
    }
    server.abort();
}

/// A scripted HTTP/1.1 upstream for the HTTP/2-client tests: answers by
/// path with each kind of framing, and counts its connections.
async fn framing_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_string();
                    got.drain(..end + 4);
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let mut parts = line.split(' ');
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let answer: Vec<u8> = match (method, path) {
                        ("HEAD", "/len") => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-kind: len\r\n\r\n".to_vec()
                        }
                        (_, "/len") => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\nx-kind: len\r\n\r\nhello".to_vec(),
                        (_, "/chunked") => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
                        (_, "/big") => {
                            let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\nx-kind: big\r\n\r\n".to_vec();
                            a.extend((0..100_000u32).map(|i| (i % 251) as u8));
                            a
                        }
                        (_, "/close") => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nx-kind: close\r\n\r\nuntil ").await;
                            let _ = s.write_all(b"the end").await;
                            return;
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, conns)
}

/// HTTP/2 clients of an HTTP/1.1 upstream: every framing of the upstream's
/// response reaches the client intact, hop-by-hop fields do not, and
/// connections whose response ended cleanly are reused.
#[tokio::test]
async fn http2_clients_get_every_http1_framing_intact() {
    use std::sync::atomic::Ordering;
    let (port, conns) = framing_upstream().await;
    let services = format!(
        "services:\n  - name: framed\n    endpoints: [{{address: 127.0.0.1, port: {port}}}]\n"
    );
    let mesh = TestMesh::start(&services, "").await;
    let mut sender = h2_client(&mesh).await;
    let mut fetch = |method: http::Method, path: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://framed{path}"))
            .body(Full::<Bytes>::default())
            .expect("req");
        let sent = sender.send_request(req);
        async move {
            let resp = sent.await.expect("response");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            (parts, body)
        }
    };
    // Sequential requests with exact framing share one upstream connection.
    for round in 0..3 {
        let (parts, body) = fetch(http::Method::GET, "/len").await;
        assert_eq!(parts.status, StatusCode::OK, "round {round}");
        assert_eq!(&body[..], b"hello");
        assert_eq!(parts.headers["x-kind"], "len");
        assert_eq!(parts.headers["content-length"], "5");
        assert!(
            parts.headers.get("keep-alive").is_none() && parts.headers.get("connection").is_none(),
            "hop-by-hop fields are not passed on: {:?}",
            parts.headers
        );
        let (parts, body) = fetch(http::Method::GET, "/chunked").await;
        assert_eq!(&body[..], b"hello world", "chunked body decoded");
        assert_eq!(parts.headers["x-kind"], "chunked");
        assert!(parts.headers.get("transfer-encoding").is_none());
        let (parts, body) = fetch(http::Method::HEAD, "/len").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert!(body.is_empty(), "HEAD has no body");
        assert_eq!(
            parts.headers["content-length"], "5",
            "HEAD keeps the length"
        );
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "nine sequential exchanges reuse one upstream connection"
    );
    let (parts, body) = fetch(http::Method::GET, "/big").await;
    assert_eq!(parts.headers["content-length"], "100000");
    assert_eq!(body.len(), 100_000);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u32 % 251) as u8),
        "large body unchanged"
    );
    let (parts, body) = fetch(http::Method::GET, "/close").await;
    assert_eq!(parts.headers["x-kind"], "close");
    assert_eq!(
        &body[..],
        b"until the end",
        "close-delimited body read to the end"
    );
    let before = conns.load(Ordering::SeqCst);
    for _ in 0..2 {
        let (_, body) = fetch(http::Method::GET, "/len").await;
        assert_eq!(&body[..], b"hello");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        before + 1,
        "a connection whose body ended with its close is not reused; a new one is, again"
    );
}

/// An HTTP/2 client's bodiless requests survive upstream connections that
/// were closed while pooled (the request is sent again on a new one).
#[tokio::test]
async fn http2_clients_survive_stale_pooled_connections() {
    let (port, server) =
        once_per_connection_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
    let services = format!(
        "services:\n  - name: flaky\n    endpoints: [{{address: 127.0.0.1, port: {port}}}]\n"
    );
    let mesh = TestMesh::start(&services, "").await;
    let mut sender = h2_client(&mesh).await;
    for i in 0..30 {
        let req = http::Request::get("http://flaky/")
            .body(Full::<Bytes>::default())
            .expect("req");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok\n", "request {i}");
    }
    server.abort();
}

/// `--workers 3`: the accepting thread deals client connections out in turn,
/// and each listener thread keeps its own upstream pool. Six kept-alive
/// client connections used one after another therefore reach the upstream
/// over exactly three connections (one thread would reuse one); HTTP/1.1 and
/// HTTP/2 both work on every thread, and shutdown drains them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_threads_share_the_connections_each_with_its_own_pool() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ups = upstreams(&["keep"]).await;
    let mesh = TestMesh::start_with_threads(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        "",
        3,
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = tokio::net::TcpStream::connect(mesh.proxy())
            .await
            .expect("connect");
        for round in 0..2 {
            c.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
                .await
                .expect("write");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The echo upstream's answer is small and has a content-length;
            // read until the head and the whole body are in.
            let complete = |got: &[u8]| {
                let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                got.len() >= end + 4 + len
            };
            while !complete(&got) {
                let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
                    .await
                    .expect("answer in time")
                    .expect("read");
                assert!(n > 0, "connection {i} closed in round {round}");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "connection {i} round {round}: {}",
                String::from_utf8_lossy(&got)
            );
        }
        clients.push(c);
    }
    assert_eq!(
        ups[0].connections(),
        3,
        "six client connections over three listener threads, one upstream connection per thread"
    );
    // HTTP/2 prior knowledge on connections dealt to each of the threads.
    for i in 0..3 {
        let mut sender = h2_client(&mesh).await;
        let req = http::Request::get("http://web/h2")
            .body(Full::<Bytes>::default())
            .expect("req");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), StatusCode::OK, "h2 connection {i}");
    }
    drop(clients);
    tokio::time::timeout(Duration::from_secs(30), mesh.mesh.shutdown())
        .await
        .expect("every listener thread drains and stops");
}

/// The control plane (registries, routing, compiles, admin) runs on the
/// thread that started the mesh, here the test's own single-threaded
/// runtime; traffic is served by listener threads apart from it. So while
/// that thread is held up (here by a blocking read; in production by parsing
/// and compiling a large registry change), requests are still answered. Were
/// the listener on this thread, the read below would wait for its own
/// thread and time out.
#[tokio::test]
async fn requests_are_served_while_the_control_thread_is_busy() {
    use std::io::{Read, Write};
    let mesh = TestMesh::start_with_threads("services: []\n", "", 1).await;
    let mut c = std::net::TcpStream::connect(mesh.proxy()).expect("connect");
    c.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    // No service is named `nowhere`: the listener answers 404 by itself.
    c.write_all(b"GET / HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    let read = c.read_to_string(&mut got);
    assert!(
        read.is_ok(),
        "no answer while the control thread was busy: {read:?}"
    );
    assert!(got.starts_with("HTTP/1.1 404"), "{got}");
    mesh.mesh.shutdown().await;
}

/// HTTP/2 clients get the same local replies as HTTP/1.1 ones when the
/// HTTP/1.1 upstream cannot be reached (503) or answers garbage (502).
#[tokio::test]
async fn http2_clients_get_local_replies_for_failed_http1_upstreams() {
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (garbled, server) =
        once_per_connection_upstream(b"this is not an HTTP response\r\n\r\n").await;
    let services = format!(
        "services:\n  - name: gone\n    endpoints: [{{address: 127.0.0.1, port: {closed}}}]\n  - name: garbled\n    endpoints: [{{address: 127.0.0.1, port: {garbled}}}]\n"
    );
    let mesh = TestMesh::start(&services, "").await;
    let mut sender = h2_client(&mesh).await;
    for (host, status) in [
        ("gone", StatusCode::SERVICE_UNAVAILABLE),
        ("garbled", StatusCode::BAD_GATEWAY),
    ] {
        let req = http::Request::get(format!("http://{host}/"))
            .body(Full::<Bytes>::default())
            .expect("req");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), status, "{host}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains(host),
            "the reply names the upstream: {}",
            String::from_utf8_lossy(&body)
        );
    }
    server.abort();
}
