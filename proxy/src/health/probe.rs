//! The probes: HTTP/1.1 `GET`, TCP connect, gRPC `Health/Check`.
//!
//! Every probe opens a fresh connection (no pooled connection can hide a
//! listener that stopped accepting) and closes it when done. The driver
//! bounds each one with its check's timeout.

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::board::ProbeOutcome;
use super::CheckKind;

/// Answers larger than this fail the probe (a health answer is small).
const MAX_ANSWER: usize = 16 * 1024;

/// One probe to run.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) kind: CheckKind,
    /// `address:port` to connect to.
    pub(super) authority: String,
    /// The service hostname: the default `Host` and the gRPC `:authority`.
    pub(super) host: String,
}

/// A boxed probe future.
pub(super) type ProbeFuture = Pin<Box<dyn Future<Output = ProbeOutcome> + Send>>;

/// Runs probes (the network; tests put in a scripted one).
pub(super) trait Prober: Send + Sync + 'static {
    fn probe(&self, target: Target) -> ProbeFuture;
}

/// Probes over the network.
#[derive(Debug)]
pub(super) struct NetProber;

impl Prober for NetProber {
    fn probe(&self, target: Target) -> ProbeFuture {
        Box::pin(async move {
            let result = match &target.kind {
                CheckKind::Tcp => tcp(&target.authority).await,
                CheckKind::Http(check) => {
                    let host = check.host.as_deref().unwrap_or(&target.host);
                    http(
                        &target.authority,
                        host,
                        &check.path,
                        &check.expected_statuses,
                    )
                    .await
                }
                CheckKind::Grpc { service } => grpc(&target.authority, &target.host, service).await,
            };
            match result {
                Ok(()) => ProbeOutcome::Pass,
                Err(why) => ProbeOutcome::Fail(why),
            }
        })
    }
}

async fn connect(authority: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Passes when the connection is accepted.
pub(super) async fn tcp(authority: &str) -> Result<(), String> {
    connect(authority).await.map(drop)
}

/// Passes when the status of `GET path` is in `expected`.
pub(super) async fn http(
    authority: &str,
    host: &str,
    path: &str,
    expected: &[RangeInclusive<u16>],
) -> Result<(), String> {
    let mut stream = connect(authority).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: anymesh-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let status = read_status(&mut stream).await?;
    if expected.iter().any(|r| r.contains(&status)) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Reads a response head and returns its status, skipping `1xx` heads.
async fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => match response.code {
                Some(code) if (100..200).contains(&code) => {
                    let _ = buf.split_to(len);
                    continue;
                }
                Some(code) => return Ok(code),
                None => return Err("no status in the answer".into()),
            },
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("bad answer: {e}")),
        }
        if buf.len() >= MAX_ANSWER {
            return Err(format!("answer head over {MAX_ANSWER} bytes"));
        }
        let read = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("closed before the status line".into());
        }
    }
}

/// The path of the gRPC health-checking protocol's unary call.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Passes when `grpc.health.v1.Health/Check` answers `SERVING` for `service`.
pub(super) async fn grpc(authority: &str, host: &str, service: &str) -> Result<(), String> {
    let io = TokioIo::new(connect(authority).await?);
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|e| format!("http/2 handshake: {e}"))?;
    // The connection's I/O runs beside the call and ends with it.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _abort = AbortOnDrop(driver);
    let request = http::Request::post(format!("http://{host}{HEALTH_CHECK}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(grpc_frame(&health_check_request(service))))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("call: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("http status {}", response.status().as_u16()));
    }
    let (head, body) = response.into_parts();
    let collected = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?;
    // Trailers, or the headers of a trailers-only answer.
    let trailers = collected.trailers().cloned();
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match grpc_status.as_deref() {
        Some("0") => {}
        Some(code) => return Err(format!("grpc-status {code}")),
        None => return Err("no grpc-status".into()),
    }
    let body = collected.to_bytes();
    let message = grpc_message(&body)?;
    match serving_status(message)? {
        SERVING => Ok(()),
        status => Err(serving_status_name(status)),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `HealthCheckRequest { string service = 1; }` in protobuf.
pub(super) fn health_check_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// One gRPC length-prefixed message, uncompressed.
pub(super) fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The first message of a gRPC body.
pub(super) fn grpc_message(body: &[u8]) -> Result<&[u8], String> {
    let (head, rest) = body
        .split_first_chunk::<5>()
        .ok_or("answer without a message")?;
    if head[0] != 0 {
        return Err("compressed answer".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len)
        .ok_or_else(|| "answer message cut short".to_string())
}

/// `HealthCheckResponse.status` (field 1, a varint; 0 when absent).
pub(super) fn serving_status(mut message: &[u8]) -> Result<u64, String> {
    let bad = || "malformed HealthCheckResponse".to_string();
    let mut status = 0;
    while !message.is_empty() {
        let tag = take_varint(&mut message).ok_or_else(bad)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => status = take_varint(&mut message).ok_or_else(bad)?,
            (_, 0) => {
                take_varint(&mut message).ok_or_else(bad)?;
            }
            (_, 1) => message = message.get(8..).ok_or_else(bad)?,
            (_, 2) => {
                let len = take_varint(&mut message).ok_or_else(bad)?;
                let len = usize::try_from(len).map_err(|_| bad())?;
                message = message.get(len..).ok_or_else(bad)?;
            }
            (_, 5) => message = message.get(4..).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(status)
}

fn serving_status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("serving status {other}"),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}
