//! HTTP/1.1 attempts on raw pooled connections: the request goes out as
//! encoded bytes, the response head is read with the codec, and the body
//! stays on the connection for the caller to relay or poll.

use std::future::Future;
use std::task::Poll;

use crate::stream::Stream;
use anymesh_core::routes::ClusterEndpoint;
use anymesh_core::routes::ConnectionPool;
use bytes::BytesMut;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::pool::{Pool, RawConn};
use super::upload::Sending;
use super::{may_resend, Attempt};
use crate::error::{ErrorKind, ProxyError, Retry};
use crate::h1::bufs;
use crate::h1::codec::{self, ResponseHead};
use crate::hooks::Hooks;

/// The request as it goes upstream.
pub(crate) struct UpstreamRequest<'a> {
    /// Head, plus the whole body when it was read already.
    pub head: &'a [u8],
    /// May be sent again on a new connection if a reused one turns out
    /// closed: idempotent, and its body (if any) is in `head`.
    pub replayable: bool,
    pub head_request: bool,
    /// The cluster's connection-pool settings (timeouts, connection limits).
    pub conn: &'a ConnectionPool,
}

/// Sends a request whose body is in `req.head` already, and reads the
/// response head; a failed attempt is sent again when [`may_resend`] allows.
///
/// (Plain functions around [`send`]: an async wrapper would copy its future
/// into place once per request.)
pub(crate) fn send_buffered<'a>(
    pool: &'a Pool,
    hooks: &'a Hooks,
    endpoint: &'a ClusterEndpoint,
    req: &'a UpstreamRequest<'a>,
) -> impl Future<Output = Result<(RawConn, BytesMut, ResponseHead), ProxyError>> + Send + 'a {
    send(pool, hooks, endpoint, req, None, None)
}

/// Sends a request head, then its body from `upload` while the response
/// head is read (full duplex); the rest of the body, if any, goes out as
/// the response body is polled ([`super::raw_body::RawBody`]).
///
/// `first`, when given, is the connection of the first attempt (made
/// already, perhaps after connect failures elsewhere).
pub(crate) fn send_streaming<'a>(
    pool: &'a Pool,
    hooks: &'a Hooks,
    endpoint: &'a ClusterEndpoint,
    req: &'a UpstreamRequest<'a>,
    upload: &'a mut Sending,
    first: Option<Box<RawConn>>,
) -> impl Future<Output = Result<(RawConn, BytesMut, ResponseHead), ProxyError>> + Send + 'a {
    send(pool, hooks, endpoint, req, Some(upload), first)
}

/// The attempts of one request.
async fn send(
    pool: &Pool,
    hooks: &Hooks,
    endpoint: &ClusterEndpoint,
    req: &UpstreamRequest<'_>,
    mut upload: Option<&mut Sending>,
    // Boxed: every buffered exchange's future has room for it.
    mut first: Option<Box<RawConn>>,
) -> Result<(RawConn, BytesMut, ResponseHead), ProxyError> {
    let mut count = 0;
    loop {
        count += 1;
        hooks.on_attempt(&endpoint.authority, count);
        let conn = if let Some(conn) = first.take() {
            Ok(*conn)
        } else if count > 1 {
            Box::pin(pool.raw_fresh(endpoint, req.conn)).await
        } else {
            pool.raw(endpoint, req.conn).await
        };
        let mut up = conn?;
        let e = match up.stream.write_all(req.head).await {
            Err(e) => ProxyError::upstream_closed(format!("writing the request: {e}"))
                .with_retry(Retry::Unsent),
            Ok(()) => {
                let mut rbuf = bufs::take();
                let head = match upload.as_deref_mut() {
                    None => read_response_head(&mut up.stream, &mut rbuf, req.head_request).await,
                    // Boxed: the rarer path; the buffered one stays small.
                    Some(sending) => {
                        Box::pin(head_while_uploading(
                            &mut up.stream,
                            &mut rbuf,
                            sending,
                            req.head_request,
                        ))
                        .await
                    }
                };
                match head {
                    Ok(head) => {
                        hooks.on_response_head(&endpoint.authority, head.status);
                        return Ok((up, rbuf, head));
                    }
                    Err(e) => {
                        bufs::give(rbuf);
                        e
                    }
                }
            }
        };
        let attempt = Attempt {
            reused: up.reused,
            replayable: req.replayable && upload.as_deref().is_none_or(Sending::untouched),
            count,
        };
        if !may_resend(&e, &attempt) {
            return Err(e);
        }
    }
}

/// Reads the response head while the request body goes out.
async fn head_while_uploading(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    upload: &mut Sending,
    head_request: bool,
) -> Result<ResponseHead, ProxyError> {
    std::future::poll_fn(|cx| {
        // Sent or broken alike, the answer is read next (an upstream that
        // stopped taking the body may have answered before it closed).
        let _ = upload.poll(cx, stream)?;
        // The read future keeps no state between polls: one per poll is fine.
        loop {
            if let Some(r) = parse_head(rbuf, head_request) {
                return Poll::Ready(r);
            }
            rbuf.reserve(bufs::BUF_SIZE);
            let read = std::pin::pin!(stream.read_buf(rbuf)).poll(cx);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    if let Some(e) = read_failed(r, rbuf) {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    })
    .await
}

/// Reads the final response head; interim (1xx) responses are skipped.
/// A connection that closes (or resets) before any byte of an answer gives
/// [`Retry::IfReused`]: a reused one had been closed by the upstream.
pub(crate) async fn read_response_head<R: AsyncRead + Unpin>(
    up: &mut R,
    rbuf: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ProxyError> {
    loop {
        if let Some(r) = parse_head(rbuf, head_request) {
            return r;
        }
        rbuf.reserve(bufs::BUF_SIZE);
        let read = up.read_buf(rbuf).await;
        if let Some(e) = read_failed(read, rbuf) {
            return Err(e);
        }
    }
}

/// The final response head if `rbuf` holds one (interim ones are dropped
/// from it), or why it cannot be read.
fn parse_head(rbuf: &mut BytesMut, head_request: bool) -> Option<Result<ResponseHead, ProxyError>> {
    loop {
        return match codec::parse_response(rbuf, head_request) {
            Ok(Some(h)) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                Some(Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    "unexpected 101 Switching Protocols",
                )))
            }
            // Interim responses (100 Continue, 103 Early Hints) are not passed on.
            Ok(Some(h)) if h.status.is_informational() => continue,
            Ok(Some(h)) => Some(Ok(h)),
            Ok(None) => None,
            Err(e) => Some(Err(ProxyError::new(
                ErrorKind::UpstreamProtocol,
                format!("invalid response: {e}"),
            ))),
        };
    }
}

/// The error a read of the response head ended with, if it did.
fn read_failed(read: std::io::Result<usize>, rbuf: &BytesMut) -> Option<ProxyError> {
    let closed = || {
        let e = ProxyError::upstream_closed("connection closed before a complete response head");
        if rbuf.is_empty() {
            e.with_retry(Retry::IfReused)
        } else {
            e
        }
    };
    match read {
        Ok(0) => Some(closed()),
        Err(e) if rbuf.is_empty() => {
            tracing::trace!(error = %e, "upstream connection failed before answering");
            Some(closed())
        }
        Err(e) => Some(ProxyError::upstream_closed(format!(
            "reading the response: {e}"
        ))),
        Ok(_) => None,
    }
}
