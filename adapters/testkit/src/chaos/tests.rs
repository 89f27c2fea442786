use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::load::Load;
use super::*;

fn h1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends one request; status, headers and body (or the body's error).
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    up: &ChaosUpstream,
    method: &str,
    path: &str,
) -> (u16, hyper::HeaderMap, Result<Bytes, String>) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", up.addr()))
        .body(Full::new(Bytes::from_static(b"some body")))
        .expect("request");
    let resp = client.request(req).await.expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{e:?}"));
    (status, headers, body)
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nhost: up\r\n\r\n";

/// Reads until the peer closes or resets; what arrived and how it ended.
async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

#[tokio::test]
async fn answers_normally_with_its_name_and_an_echo_over_both_protocols() {
    let up = ChaosUpstream::start("a").await;
    for client in [h1(), h2()] {
        let (status, headers, body) = call(&client, &up, "POST", "/p?q=1").await;
        assert_eq!(status, 200);
        assert_eq!(body.expect("body"), "a");
        assert_eq!(headers["x-upstream"], "a");
        assert_eq!(headers["x-seen-method"], "POST");
        assert_eq!(headers["x-seen-path"], "/p?q=1");
        let (status, _, _) = call(&client, &up, "GET", "/").await;
        assert_eq!(status, 200);
    }
    assert_eq!(up.requests(), 4);
    assert_eq!(up.requests_by("POST"), 2);
    assert_eq!(up.requests_by("GET"), 2);
    assert_eq!(up.connections(), 2, "one connection per client, kept alive");
}

#[tokio::test]
async fn statuses_grpc_statuses_and_the_next_few_requests() {
    let up = ChaosUpstream::start("b").await;
    for client in [h1(), h2()] {
        up.set(Behaviour::Status(503));
        let (status, headers, body) = call(&client, &up, "GET", "/").await;
        assert_eq!(status, 503);
        assert_eq!(headers["x-upstream"], "b");
        assert_eq!(body.expect("body"), "b");
        up.set(Behaviour::GrpcStatus(14));
        let (status, headers, _) = call(&client, &up, "GET", "/").await;
        assert_eq!(status, 200);
        assert_eq!(headers["grpc-status"], "14");
        assert_eq!(headers["content-type"], "application/grpc");
        up.set(Behaviour::Normal);
        up.set_next(2, Behaviour::Status(500));
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(call(&client, &up, "GET", "/").await.0);
        }
        assert_eq!(seen, [500, 500, 200]);
    }
}

#[tokio::test]
async fn slow_answers_after_its_delay() {
    let up = ChaosUpstream::start("s").await;
    up.set(Behaviour::Slow(Duration::from_millis(150)));
    let started = std::time::Instant::now();
    let (status, _, _) = call(&h1(), &up, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn hang_reads_the_request_and_never_answers() {
    let up = ChaosUpstream::start("h").await;
    up.set(Behaviour::Hang);
    let mut s = TcpStream::connect(up.addr()).await.expect("connect");
    s.write_all(GET).await.expect("send");
    Poll::new()
        .until("the request to arrive", || up.requests() == 1)
        .await;
    let mut buf = [0u8; 16];
    // A bounded look for an answer that must not come.
    let read = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
    assert!(read.is_err(), "a hung upstream answered: {read:?}");
    assert_eq!(up.open_connections(), 1);
    // Killing it closes the held connection.
    up.kill().await;
    let (got, end) = read_to_end(&mut s).await;
    assert!(got.is_empty(), "{got:?}");
    end.expect("closed cleanly");
    assert_eq!(up.open_connections(), 0);
}

#[tokio::test]
async fn close_before_response_closes_without_a_byte() {
    let up = ChaosUpstream::start("c").await;
    up.set(Behaviour::CloseBeforeResponse);
    let mut s = TcpStream::connect(up.addr()).await.expect("connect");
    s.write_all(GET).await.expect("send");
    let (got, end) = read_to_end(&mut s).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    end.expect("a clean close (FIN), not a reset");
    assert_eq!(up.requests(), 1, "the request was read first");
}

#[tokio::test]
async fn reset_mid_response_sends_a_partial_body_then_rst() {
    let up = ChaosUpstream::start("r").await;
    up.set(Behaviour::ResetMidResponse);
    let mut s = TcpStream::connect(up.addr()).await.expect("connect");
    s.write_all(GET).await.expect("send");
    let (got, end) = read_to_end(&mut s).await;
    let err = end.expect_err("the connection is reset, not closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    // What arrived before the reset is a prefix of the announced answer.
    let text = String::from_utf8_lossy(&got);
    let announced = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {ANNOUNCED_LENGTH}\r\nx-upstream: r\r\n\r\n{}",
        "x".repeat(PARTIAL_BODY)
    );
    assert!(announced.starts_with(&*text), "{text}");

    // Over HTTP/2 the stream is reset after the partial body.
    let (status, _, body) = call(&h2(), &up, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "the body ends in an error: {body:?}");
}

#[tokio::test]
async fn kill_refuses_connections_and_restart_listens_on_the_same_port() {
    let up = ChaosUpstream::start("k").await;
    let client = h1();
    assert_eq!(call(&client, &up, "GET", "/").await.0, 200);
    assert_eq!(up.open_connections(), 1, "kept alive by the client's pool");
    up.kill().await;
    assert!(!up.is_up());
    assert_eq!(up.open_connections(), 0);
    let refused = TcpStream::connect(up.addr()).await.expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    up.restart().await;
    assert!(up.is_up());
    let (status, _, _) = call(&h1(), &up, "GET", "/").await;
    assert_eq!(status, 200);
    assert_eq!(up.requests(), 2, "counters survive a restart");
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn the_health_path_follows_its_own_switch_and_is_counted_apart() {
    let up = ChaosUpstream::start("hc").await;
    up.set(Behaviour::Hang);
    assert_eq!(call(&h1(), &up, "GET", HEALTH_PATH).await.0, 200);
    up.set_healthy(false);
    assert_eq!(call(&h2(), &up, "GET", HEALTH_PATH).await.0, 503);
    assert_eq!(up.health_checks(), 2);
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn reads_chunked_bodies_and_keeps_the_connection() {
    let up = ChaosUpstream::start("ch").await;
    let mut s = TcpStream::connect(up.addr()).await.expect("connect");
    let req =
        b"POST /c HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    s.write_all(req).await.expect("send");
    s.write_all(b"GET /x HTTP/1.1\r\nhost: up\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let (got, end) = read_to_end(&mut s).await;
    end.expect("closed cleanly after the second answer");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(up.requests_by("POST"), 1);
    assert_eq!(up.requests_by("GET"), 1);
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_load_counts_statuses_upstreams_and_latencies() {
    let up = ChaosUpstream::start("l").await;
    up.set_next(5, Behaviour::Status(503));
    let report = Load::new(up.addr(), "l").concurrency(4).run(40).await;
    assert_eq!(report.total(), 40, "{}", report.summary());
    assert_eq!(report.status(503), 5);
    assert_eq!(report.ok(), 35);
    assert_eq!(report.by_upstream().get("l"), Some(&40));
    assert_eq!(report.failures().len(), 5);
    assert!(report.p50() <= report.p99() && report.p99() <= report.max());
    assert_eq!(up.requests(), 40);

    up.set(Behaviour::GrpcStatus(14));
    let report = Load::new(up.addr(), "l")
        .http2()
        .method(hyper::Method::POST)
        .body(b"payload")
        .run(3)
        .await;
    assert_eq!(report.status(200), 3, "{}", report.summary());
    assert!(report
        .outcomes
        .iter()
        .all(|o| o.grpc_status.as_deref() == Some("14")));
    assert_eq!(up.requests_by("POST"), 3);

    up.set(Behaviour::Hang);
    let report = Load::new(up.addr(), "l")
        .concurrency(2)
        .timeout(Duration::from_millis(100))
        .run(2)
        .await;
    assert_eq!(report.total(), 2);
    assert!(report.outcomes.iter().all(|o| o
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("no answer"))));
}

#[tokio::test]
async fn a_running_load_stops_on_demand() {
    let up = ChaosUpstream::start("r").await;
    let running = Load::new(up.addr(), "r").concurrency(3).start();
    running.wait_for(30).await;
    let mark = tokio::time::Instant::now();
    running.wait_for(10).await;
    let report = running.stop().await;
    assert!(report.total() >= 40);
    assert_eq!(report.ok(), report.total(), "{}", report.summary());
    assert!(report.since(mark).total() >= 10);
    assert_eq!(up.requests(), report.total());
}

#[test]
fn quantiles_by_nearest_rank() {
    let now = tokio::time::Instant::now();
    let outcomes = (1..=100)
        .map(|ms| load::Outcome {
            started: now,
            latency: Duration::from_millis(ms),
            status: Some(200),
            error: None,
            upstream: None,
            overloaded: false,
            grpc_status: None,
            body: String::new(),
        })
        .collect();
    let r = load::Report {
        outcomes,
        elapsed: Duration::ZERO,
    };
    assert_eq!(r.p50(), Duration::from_millis(50));
    assert_eq!(r.p99(), Duration::from_millis(99));
    assert_eq!(r.max(), Duration::from_millis(100));
    assert_eq!(r.quantile(0.0), Duration::from_millis(1));
}
