//! The probes against real listeners on loopback.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::probe::{self, NetProber, Prober, Target};
use super::super::{CheckKind, HttpCheck};
use super::*;

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// An address where nothing listens.
async fn closed_port() -> String {
    let (l, addr) = listener().await;
    drop(l);
    addr
}

#[tokio::test]
async fn tcp_passes_when_accepted_and_fails_when_refused() {
    let (_l, addr) = listener().await;
    assert_eq!(probe::tcp(&addr).await, Ok(()));
    let err = probe::tcp(&closed_port().await).await.unwrap_err();
    assert!(err.starts_with("connect: "), "{err}");
}

/// Answers each connection's request with `status`, once, and hands the
/// request head back.
async fn http_server(status: u16) -> (String, tokio::sync::mpsc::Receiver<String>) {
    let (l, addr) = listener().await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok"
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned()).await;
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn http_sends_a_closing_get_and_judges_the_status() {
    let (addr, mut heads) = http_server(204).await;
    let ok = [200..=299];
    assert_eq!(
        probe::http(&addr, "svc.local", "/healthz?deep=1", &ok).await,
        Ok(())
    );
    let head = heads.recv().await.unwrap();
    assert!(
        head.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nHost: svc.local\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");

    let (addr, _heads) = http_server(503).await;
    let err = probe::http(&addr, "svc", "/", &ok).await.unwrap_err();
    assert_eq!(err, "status 503");
    let several = [200..=200, 500..=503];
    assert_eq!(probe::http(&addr, "svc", "/", &several).await, Ok(()));
}

#[tokio::test]
async fn http_fails_on_a_refused_connection_or_an_answer_that_is_not_http() {
    let ok = [200..=399];
    let err = probe::http(&closed_port().await, "svc", "/", &ok)
        .await
        .unwrap_err();
    assert!(err.starts_with("connect: "), "{err}");
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
    });
    let err = probe::http(&addr, "svc", "/", &ok).await.unwrap_err();
    assert!(err.starts_with("bad answer"), "{err}");
}

#[tokio::test]
async fn the_net_prober_uses_the_checks_host_or_the_service() {
    let (addr, mut heads) = http_server(200).await;
    let mut check = HttpCheck::new("/h");
    let target = |kind| Target {
        kind,
        authority: addr.clone(),
        host: "reviews.shop".into(),
    };
    let got = NetProber
        .probe(target(CheckKind::Http(check.clone())))
        .await;
    assert_eq!(got, ProbeOutcome::Pass);
    assert!(heads
        .recv()
        .await
        .unwrap()
        .contains("Host: reviews.shop\r\n"));
    check.host = Some("health.internal".into());
    NetProber.probe(target(CheckKind::Http(check))).await;
    assert!(heads
        .recv()
        .await
        .unwrap()
        .contains("Host: health.internal\r\n"));
}

type GrpcBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A gRPC server answering `Health/Check`: `SERVING` for the services in
/// `serving`, `NOT_SERVING` for the others; `grpc-status 12` for other paths.
async fn grpc_server(serving: &'static [&'static str]) -> String {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                let path = req.uri().path().to_string();
                let content_type = req.headers().get("content-type").cloned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut trailers = HeaderMap::new();
                let mut frames = Vec::new();
                if path == "/grpc.health.v1.Health/Check"
                    && content_type
                        .as_ref()
                        .is_some_and(|c| c == "application/grpc")
                {
                    let msg = probe::grpc_message(&body).unwrap();
                    // HealthCheckRequest: field 1, the service name.
                    let service = msg
                        .get(2..)
                        .map(|s| String::from_utf8_lossy(s).into_owned());
                    let service = service.unwrap_or_default();
                    let status = if serving.contains(&service.as_str()) {
                        1u8
                    } else {
                        2
                    };
                    frames.push(Ok(Frame::data(probe::grpc_frame(&[0x08, status]))));
                    trailers.insert("grpc-status", "0".parse().unwrap());
                } else {
                    trailers.insert("grpc-status", "12".parse().unwrap());
                }
                frames.push(Ok(Frame::trailers(trailers)));
                let body: GrpcBody = StreamBody::new(futures_util::stream::iter(frames));
                let mut resp = Response::new(body);
                resp.headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

#[tokio::test]
async fn grpc_passes_only_on_serving() {
    let addr = grpc_server(&["", "payments"]).await;
    assert_eq!(probe::grpc(&addr, "svc", "").await, Ok(()));
    assert_eq!(probe::grpc(&addr, "svc", "payments").await, Ok(()));
    assert_eq!(
        probe::grpc(&addr, "svc", "ledger").await,
        Err("NOT_SERVING".into())
    );
    let err = probe::grpc(&closed_port().await, "svc", "")
        .await
        .unwrap_err();
    assert!(err.starts_with("connect: "), "{err}");
}

#[tokio::test]
async fn grpc_fails_on_an_http1_server_or_an_error_status() {
    // An HTTP/1.1-only server does not speak the HTTP/2 preface.
    let (addr, _heads) = http_server(200).await;
    assert!(probe::grpc(&addr, "svc", "").await.is_err());
    // A server that does not implement the health service.
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = service_fn(|_req: Request<Incoming>| async {
                let mut resp = Response::new(http_body_util::Empty::<Bytes>::new());
                resp.headers_mut()
                    .insert("grpc-status", "12".parse().unwrap());
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    assert_eq!(
        probe::grpc(&addr, "svc", "").await,
        Err("grpc-status 12".into())
    );
}
