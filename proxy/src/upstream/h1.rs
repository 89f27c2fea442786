//! HTTP/1.1 attempts on raw pooled connections: the request goes out as
//! encoded bytes, the response head is read with the codec, and the body
//! stays on the connection for the caller to relay or poll.

use bytes::BytesMut;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::pool::{Pool, RawConn};
use super::{may_resend, Attempt};
use crate::error::{ErrorKind, ProxyError, Retry};
use crate::h1::bufs;
use crate::h1::codec::{self, ResponseHead};

/// The request as it goes upstream.
pub(crate) struct UpstreamRequest<'a> {
    /// Head, plus the whole body when it was read already.
    pub head: &'a [u8],
    /// May be sent again on a new connection if a reused one turns out
    /// closed: idempotent, and its body (if any) is in `head`.
    pub replayable: bool,
    pub head_request: bool,
}

/// Sends a request whose body is in `req.head` already, and reads the
/// response head; a failed attempt is sent again when [`may_resend`] allows.
pub(crate) async fn send_buffered(
    pool: &Pool,
    endpoint: &str,
    req: &UpstreamRequest<'_>,
) -> Result<(RawConn, BytesMut, ResponseHead), ProxyError> {
    let mut count = 0;
    loop {
        count += 1;
        let conn = if count > 1 {
            Box::pin(pool.raw_fresh(endpoint)).await
        } else {
            pool.raw(endpoint).await
        };
        let mut up = conn?;
        let e = match up.stream.write_all(req.head).await {
            Err(e) => ProxyError::upstream_closed(format!("writing the request: {e}"))
                .with_retry(Retry::IfReused),
            Ok(()) => {
                let mut rbuf = bufs::take();
                match read_response_head(&mut up.stream, &mut rbuf, req.head_request).await {
                    Ok(head) => return Ok((up, rbuf, head)),
                    Err(e) => {
                        bufs::give(rbuf);
                        e
                    }
                }
            }
        };
        let attempt = Attempt {
            reused: up.reused,
            replayable: req.replayable,
            count,
        };
        if !may_resend(&e, &attempt) {
            return Err(e);
        }
    }
}

/// Reads the final response head; interim (1xx) responses are skipped.
/// A connection that closes (or resets) before any byte of an answer gives
/// [`Retry::IfReused`]: a reused one had been closed by the upstream.
pub(crate) async fn read_response_head<R: AsyncRead + Unpin>(
    up: &mut R,
    rbuf: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ProxyError> {
    let closed = |rbuf: &BytesMut| {
        let e = ProxyError::upstream_closed("connection closed before a complete response head");
        if rbuf.is_empty() {
            e.with_retry(Retry::IfReused)
        } else {
            e
        }
    };
    loop {
        match codec::parse_response(rbuf, head_request) {
            Ok(Some(h)) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    "unexpected 101 Switching Protocols",
                ))
            }
            // Interim responses (100 Continue, 103 Early Hints) are not passed on.
            Ok(Some(h)) if h.status.is_informational() => continue,
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(e) => {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("invalid response: {e}"),
                ))
            }
        }
        rbuf.reserve(bufs::BUF_SIZE);
        match up.read_buf(rbuf).await {
            Ok(0) => return Err(closed(rbuf)),
            Err(e) if rbuf.is_empty() => {
                tracing::trace!(error = %e, "upstream connection failed before answering");
                return Err(closed(rbuf));
            }
            Err(e) => {
                return Err(ProxyError::upstream_closed(format!(
                    "reading the response: {e}"
                )))
            }
            Ok(_) => {}
        }
    }
}
