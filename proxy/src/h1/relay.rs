//! Byte relays between a client and an upstream HTTP/1.1 connection: the
//! request body streamed upstream ([`send_body`]), and the response head
//! written for the client and its body relayed with the framing the client
//! needs ([`respond`]). Generic over the I/O halves; they know nothing of
//! routing beyond the header operations they apply.

use crate::mirror::PrimaryTap;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use anymesh_core::routes::{HeaderOps, Route, WeightedCluster};
use bytes::{Buf, BytesMut};
use http::header::SET_COOKIE;
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::bufs;
use super::codec::{self, ChunkedDecoder, Framing, ResponseHead};
use crate::error::{ErrorKind, ProxyError};

/// Streams the rest of the request body to the upstream.
pub(crate) async fn send_body<R, W>(
    client: &mut R,
    buf: &mut BytesMut,
    up: &mut W,
    framing: Framing,
) -> Result<u64, ProxyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut out = BytesMut::new();
    let mut sent = 0u64;
    let upstream_write =
        |e: io::Error| ProxyError::upstream_closed(format!("writing the request body: {e}"));
    loop {
        let done = match framing {
            Framing::Length(_) => {
                let take = remaining.min(buf.len() as u64) as usize;
                if take > 0 {
                    up.write_all(&buf[..take]).await.map_err(upstream_write)?;
                    buf.advance(take);
                    remaining -= take as u64;
                    sent += take as u64;
                }
                remaining == 0
            }
            Framing::Chunked => {
                let used = decoder
                    .decode(buf, |data| {
                        sent += data.len() as u64;
                        codec::write_chunk(&mut out, data)
                    })
                    .map_err(|e| ProxyError::new(ErrorKind::BadRequest, e.to_string()))?;
                buf.advance(used);
                if decoder.is_done() {
                    out.extend_from_slice(codec::LAST_CHUNK);
                }
                if !out.is_empty() {
                    up.write_all(&out).await.map_err(upstream_write)?;
                    out.clear();
                }
                decoder.is_done()
            }
            Framing::None | Framing::Close => true,
        };
        if done {
            return Ok(sent);
        }
        buf.reserve(bufs::BUF_SIZE);
        match client.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ProxyError::downstream_closed()),
            Ok(_) => {}
        }
    }
}

/// What the response side needs from the route and the request.
pub(crate) struct Respond<'a> {
    pub route: &'a Route,
    pub target: &'a WeightedCluster,
    pub set_cookie: Option<HeaderValue>,
    pub head_request: bool,
    pub client_11: bool,
    /// The client may keep the connection (asked for it; not shutting down).
    pub keep_alive: bool,
    /// The status of the response head once it went to the client (0
    /// before): from then on a failure can only close the connection.
    pub written: AtomicU16,
}

/// How a response ended.
pub(crate) struct Responded {
    pub status: StatusCode,
    pub keep_client: bool,
    pub upstream_reusable: bool,
    /// Body bytes relayed to the client.
    pub body_bytes: u64,
    /// Request body bytes sent upstream while streaming (0 when the body
    /// went with the head: its length is known from the framing).
    pub request_bytes: u64,
}

/// Writes the response head to the client and relays the body.
pub(crate) async fn respond<R, W>(
    client: &mut W,
    up: &mut R,
    rbuf: &mut BytesMut,
    head: ResponseHead,
    ctx: &Respond<'_>,
    mut tap: Option<&mut PrimaryTap>,
) -> Result<Responded, ProxyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let status = head.status;
    let in_framing = head.framing;
    let out_framing = match in_framing {
        Framing::None => Framing::None,
        Framing::Length(n) => Framing::Length(n),
        // A close-delimited body becomes chunked for an HTTP/1.1 client, so
        // its connection survives.
        Framing::Chunked | Framing::Close if ctx.client_11 => Framing::Chunked,
        Framing::Chunked | Framing::Close => Framing::Close,
    };
    let keep = ctx.keep_alive && ctx.client_11 && out_framing != Framing::Close;
    let mut w = bufs::take();
    let ops = [&ctx.target.response_headers, &ctx.route.response_headers];
    let ops: &[&HeaderOps] = if ops.iter().all(|o| o.is_empty()) {
        &[]
    } else {
        &ops
    };
    let cookie = ctx.set_cookie.as_ref().map(|c| (&SET_COOKIE, c));
    if let Some(t) = tap.as_deref_mut() {
        t.head_h1(&head);
    }
    codec::write_proxied_response_head(&mut w, &head, ops, cookie, out_framing, !keep);
    let up_keep = head.keep_alive;
    drop(head);
    ctx.written.store(status.as_u16(), Ordering::Relaxed);
    let mut body_bytes = 0;
    let exact = relay_body(
        client,
        up,
        rbuf,
        &mut w,
        (in_framing, out_framing),
        tap,
        &mut body_bytes,
    )
    .await;
    bufs::give(w);
    Ok(Responded {
        status,
        keep_client: keep,
        upstream_reusable: up_keep && exact?,
        body_bytes,
        request_bytes: 0,
    })
}

/// Relays the response body (the head is already in `w`). Returns true when
/// the body ended exactly where its framing said, so the upstream connection
/// can be reused. `sent` counts the body bytes relayed.
async fn relay_body<R, W>(
    client: &mut W,
    up: &mut R,
    rbuf: &mut BytesMut,
    w: &mut BytesMut,
    (in_framing, out_framing): (Framing, Framing),
    mut tap: Option<&mut PrimaryTap>,
    sent: &mut u64,
) -> Result<bool, ProxyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let chunked_out = out_framing == Framing::Chunked;
    let mut remaining = match in_framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    loop {
        let done = match in_framing {
            Framing::None => true,
            Framing::Length(_) => {
                let take = remaining.min(rbuf.len() as u64) as usize;
                if let Some(t) = tap.as_deref_mut() {
                    t.body(&rbuf[..take]);
                }
                if w.is_empty() && take > 0 {
                    // Large bodies go straight from the read buffer.
                    client
                        .write_all(&rbuf[..take])
                        .await
                        .map_err(|_| ProxyError::downstream_closed())?;
                } else {
                    w.extend_from_slice(&rbuf[..take]);
                }
                rbuf.advance(take);
                remaining -= take as u64;
                *sent += take as u64;
                remaining == 0
            }
            Framing::Chunked => {
                let used = decoder
                    .decode(rbuf, |data| {
                        *sent += data.len() as u64;
                        if let Some(t) = tap.as_deref_mut() {
                            t.body(data);
                        }
                        if chunked_out {
                            codec::write_chunk(w, data);
                        } else {
                            w.extend_from_slice(data);
                        }
                    })
                    .map_err(|e| {
                        ProxyError::new(ErrorKind::UpstreamProtocol, e.to_string()).in_body()
                    })?;
                rbuf.advance(used);
                decoder.is_done()
            }
            Framing::Close => {
                *sent += rbuf.len() as u64;
                if let Some(t) = tap.as_deref_mut() {
                    t.body(rbuf);
                }
                if chunked_out {
                    codec::write_chunk(w, rbuf);
                } else {
                    w.extend_from_slice(rbuf);
                }
                rbuf.clear();
                false
            }
        };
        if done && chunked_out {
            w.extend_from_slice(codec::LAST_CHUNK);
        }
        if !w.is_empty() {
            client
                .write_all(w)
                .await
                .map_err(|_| ProxyError::downstream_closed())?;
            w.clear();
        }
        if done {
            // Bytes past the end of the response: the upstream is confused; do not reuse.
            return Ok(rbuf.is_empty());
        }
        rbuf.reserve(bufs::BUF_SIZE);
        match up.read_buf(rbuf).await {
            Ok(0) if in_framing == Framing::Close => {
                if chunked_out {
                    client
                        .write_all(codec::LAST_CHUNK)
                        .await
                        .map_err(|_| ProxyError::downstream_closed())?;
                }
                return Ok(false);
            }
            Ok(0) => return Err(ProxyError::upstream_closed("response body ended early").in_body()),
            Err(e) => {
                return Err(
                    ProxyError::upstream_closed(format!("reading the response body: {e}"))
                        .in_body(),
                )
            }
            Ok(_) => {}
        }
    }
}
