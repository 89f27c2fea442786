//! Transport: HTTP/2 prior knowledge, large streamed bodies, concurrency.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::*;

#[tokio::test]
async fn http2_prior_knowledge_both_sides() {
    let ups = upstreams(&["h2"]).await;
    let plain = "services:\n  - name: plain\n    ports: [{name: http, port: 80, protocol: http}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n  - name: grpcish\n    ports: [{name: grpc, port: 81, protocol: grpc}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n"
        .replace("PORT", &ups[0].addr.port().to_string());
    let mesh = TestMesh::start(&plain, "").await;
    // One prior-knowledge HTTP/2 connection to the proxy; :authority names the service.
    let tcp = tokio::net::TcpStream::connect(mesh.proxy())
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
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

/// An upstream that answers once per connection and closes it without
/// announcing `Connection: close`: every pooled connection goes stale.
#[tokio::test]
async fn stale_pooled_connections_are_retried_not_failed() {
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
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-upstream: once\r\n\r\nok\n",
                    )
                    .await;
                // Close without saying so.
            });
        }
    });
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
