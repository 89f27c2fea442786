//! Forwarding for an HTTP/1.1 client: the exchange after the HTTP/1.1
//! server ([`crate::h1`]) read a request head. It routes the head, sends it
//! (with the body when it was read already) on a pooled raw connection, and
//! relays the response to the client's socket itself ([`crate::h1::relay`]).
//! A request routed to an HTTP/2 upstream is handed back to the transport
//! ([`Next::Handover`]), which serves the rest of the connection with hyper.

use std::sync::atomic::{AtomicU16, Ordering};

use crate::service::Peer;
use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use http::{Method, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::attempts::{self, Retrying};
use super::plan::{plan, prepare, Plan};
use super::{until, Outcome, Proxy};
use crate::error::{ErrorKind, ProxyError};
use crate::h1::codec::{self, Framing, RequestHead};
use crate::h1::relay::{respond, send_body, Respond, Responded};
use crate::h1::settings::ServerSettings;
use crate::h1::{bufs, parsed_head, read_head, write_response, NoHead};
use crate::hooks::Exchange;
use crate::mirror::MirrorBody;
use crate::resilience::outlier::AttemptOutcome;
use crate::service::Next;
use crate::upstream::h1::{read_response_head, send_buffered, UpstreamRequest};
use crate::upstream::idempotent;
use crate::upstream::pool::RawConn;

/// Serves one exchange on `client`: reads the request head with the
/// transport's [`read_head`], routes it, forwards it, relays the answer.
pub(crate) async fn exchange(
    proxy: &Proxy,
    client: &mut Stream,
    buf: &mut BytesMut,
    peer: &Peer,
    settings: &ServerSettings,
    first: bool,
    stop: &watch::Receiver<bool>,
) -> Next {
    let RequestHead {
        mut parts,
        framing,
        keep_alive,
        expect_continue,
        raw,
    } = match parsed_head(buf, first) {
        Some(head) => head,
        // Boxed: the head is almost always whole in what was read already,
        // and this path's future would otherwise be copied into every
        // exchange's.
        None => match Box::pin(read_head(client, buf, peer, settings, first)).await {
            Ok(head) => head,
            Err(NoHead { next, refused }) => {
                if let Some((status, start)) = refused {
                    proxy.hooks().on_end(&Exchange {
                        cluster: None,
                        route: None,
                        status: status.as_u16(),
                        failure: Some(ErrorKind::BadRequest),
                        delayed: false,
                        start,
                        dest: None,
                        inbound: peer.inbound.as_deref(),
                        capture: None,
                        request_bytes: 0,
                        response_bytes: 0,
                        grpc: None,
                        messages: (0, 0),
                    });
                }
                return next;
            }
        },
    };
    let start = Instant::now();
    let routing = proxy.router().current();
    let capture = proxy.hooks().capture(&parts, peer);
    let has_body = !matches!(framing, Framing::None | Framing::Length(0));
    let head_request = parts.method == Method::HEAD;
    let client_11 = parts.version == Version::HTTP_11;
    let stopping = || *stop.borrow();
    let mut plan = match plan(&mut parts, peer, &routing, proxy.hooks()) {
        Ok(p) => p,
        Err(out) => {
            // The body was not read: the connection cannot carry another request.
            let keep = keep_alive && !has_body && !stopping();
            return Box::pin(finish_local(
                client,
                proxy,
                *out,
                head_request,
                keep,
                start,
                peer.inbound.as_deref(),
                capture.as_deref(),
            ))
            .await;
        }
    };
    if plan.h2 {
        drop(plan);
        let mut prefix = BytesMut::with_capacity(raw.len() + buf.len());
        prefix.extend_from_slice(&raw);
        prefix.extend_from_slice(buf);
        buf.clear();
        return Next::Handover(prefix.freeze());
    }
    drop(raw);
    let mut tap = proxy.mirror(&routing, &plan, &parts, || match framing {
        Framing::None | Framing::Length(0) => MirrorBody::Empty,
        Framing::Length(n) if (buf.len() as u64) >= n => {
            MirrorBody::Full(bytes::Bytes::copy_from_slice(&buf[..n as usize]))
        }
        Framing::Length(n) => MirrorBody::Streaming(Some(n)),
        Framing::Chunked | Framing::Close => MirrorBody::Streaming(None),
    });
    if let Err(mut out) = prepare(&mut parts, &plan, proxy.hooks(), capture.as_deref()) {
        plan.label(&mut out);
        let keep = keep_alive && !has_body && !stopping();
        return Box::pin(finish_local(
            client,
            proxy,
            *out,
            head_request,
            keep,
            start,
            peer.inbound.as_deref(),
            capture.as_deref(),
        ))
        .await;
    }
    if expect_continue {
        // Answered here (100 Continue once the body is wanted), not upstream.
        parts.headers.remove(http::header::EXPECT);
    }
    let idempotent = idempotent(&parts.method);
    let mut out = bufs::take();
    codec::write_request_head(&mut out, &parts, framing);
    drop(parts);
    // A body already read in full goes out with the head, and can be sent again.
    let buffered = match framing {
        Framing::None => true,
        Framing::Length(n) if (buf.len() as u64) >= n => {
            out.extend_from_slice(&buf[..n as usize]);
            buf.advance(n as usize);
            true
        }
        _ => false,
    };
    let request = UpstreamRequest {
        head: &out,
        replayable: buffered && idempotent,
        head_request,
        conn: &plan.target.cluster.policy.connection_pool,
    };
    let ctx = Respond {
        route: plan.hit.route,
        target: plan.target,
        set_cookie: plan.set_cookie.take().map(|c| *c),
        head_request,
        client_11,
        keep_alive: keep_alive && !stopping(),
        written: AtomicU16::new(0),
    };
    if let Some(d) = plan.delay() {
        // Boxed: rare, and a timer would enlarge every request's future.
        Box::pin(tokio::time::sleep(d)).await;
    }
    let deadline = plan.deadline(Instant::now());
    let pool = proxy.pool();
    let retrying = Retrying::new(&plan.hit.route.retry, idempotent, buffered);
    let result = {
        let plan = &mut plan;
        let run = async {
            if buffered {
                let (hooks, request) = (proxy.hooks(), &request);
                let (mut up, mut rbuf, head) = attempts::run(plan, &retrying, |endpoint, _| {
                    send_buffered(pool, hooks, endpoint, request)
                })
                .await?;
                let r = respond(
                    client,
                    &mut up.stream,
                    &mut rbuf,
                    head,
                    &ctx,
                    tap.as_deref_mut(),
                )
                .await;
                bufs::give(rbuf);
                return r.map(|r| (r, Some(up), true));
            }
            // Boxed: bodies that stream are the rarer case, and their future is
            // large; every exchange's boxed state would carry it otherwise.
            Box::pin(send_streaming(
                client,
                buf,
                proxy,
                plan,
                &retrying,
                &request,
                expect_continue,
                framing,
                &ctx,
            ))
            .await
        };
        until(deadline, std::pin::pin!(run)).await
    };
    bufs::give(out);
    let written = ctx.written.load(Ordering::Relaxed);
    let request_bytes = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let end = |status: u16, failure: Option<ErrorKind>, sizes: (u64, u64)| {
        proxy.hooks().on_end(&Exchange {
            cluster: Some(&plan.target.cluster),
            route: Some(&plan.hit.route.name),
            status,
            failure,
            delayed: plan.delay().is_some(),
            start,
            dest: Some((&plan.endpoint.endpoint, plan.endpoint.mesh().is_some())),
            inbound: peer.inbound.as_deref(),
            capture: capture.as_deref(),
            request_bytes: sizes.0,
            response_bytes: sizes.1,
            grpc: None,
            messages: (0, 0),
        })
    };
    match result {
        Ok((done, up, body_sent)) => {
            let sizes = (done.request_bytes.max(request_bytes), done.body_bytes);
            end(done.status.as_u16(), None, sizes);
            if let Some(tap) = tap {
                tap.end();
            }
            drop(plan.guard);
            if let Some(up) = up.filter(|_| done.upstream_reusable && body_sent) {
                pool.release_raw(up);
            }
            if done.keep_client && body_sent {
                Next::KeepAlive
            } else {
                Next::Close
            }
        }
        Err(e) if written != 0 => {
            tracing::debug!(endpoint = %plan.endpoint.authority, error = %e, "exchange ended after the response head");
            end(written, Some(e.kind()), (request_bytes, 0));
            Next::Close
        }
        Err(e) if e.kind() == ErrorKind::DownstreamClosed => {
            end(
                e.kind().status().as_u16(),
                Some(e.kind()),
                (request_bytes, 0),
            );
            Next::Close
        }
        Err(e) => {
            let mut local = plan.failed(&e);
            local.delayed = plan.delay().is_some();
            // Part of the request body may be unread: never keep such a connection.
            let keep = keep_alive && !has_body && !stopping();
            Box::pin(finish_local(
                client,
                proxy,
                local,
                head_request,
                keep,
                start,
                peer.inbound.as_deref(),
                capture.as_deref(),
            ))
            .await
        }
    }
}

/// Sends a request whose body is still arriving, full duplex: the response
/// may start (or be echoed) while the body is still coming.
#[allow(clippy::too_many_arguments)]
async fn send_streaming(
    client: &mut Stream,
    buf: &mut BytesMut,
    proxy: &Proxy,
    plan: &mut Plan<'_>,
    retrying: &Retrying<'_>,
    request: &UpstreamRequest<'_>,
    expect_continue: bool,
    framing: Framing,
    ctx: &Respond<'_>,
) -> Result<(Responded, Option<RawConn>, bool), ProxyError> {
    // A body that streams from the client is never sent twice: one attempt,
    // once a connection is made.
    let mut up = attempts::connect(plan, retrying, proxy.pool()).await?;
    let endpoint = plan.endpoint;
    let started = plan.wants_latency().then(Instant::now);
    proxy.hooks().on_attempt(&endpoint.authority, 1);
    up.stream
        .write_all(request.head)
        .await
        .map_err(|e| ProxyError::upstream_closed(format!("writing the request: {e}")))?;
    if expect_continue && buf.is_empty() {
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| ProxyError::downstream_closed())?;
    }
    let mut rbuf = bufs::take();
    let outcome = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = up.stream.split();
        let send = send_body(&mut cr, buf, &mut uw, framing);
        let resp = async {
            let head = match read_response_head(&mut ur, &mut rbuf, ctx.head_request).await {
                Ok(head) => head,
                Err(e) => {
                    attempts::report_failure(plan, &e);
                    return Err(e);
                }
            };
            proxy
                .hooks()
                .on_response_head(&endpoint.authority, head.status);
            plan.report(AttemptOutcome::Response {
                status: head.status.as_u16(),
                latency: started.map(|s| s.elapsed()).unwrap_or_default(),
            });
            respond(&mut cw, &mut ur, &mut rbuf, head, ctx, None).await
        };
        tokio::pin!(send, resp);
        let first = tokio::select! {
            biased;
            s = &mut send => Ok(s),
            r = &mut resp => Err(r),
        };
        match first {
            // The upstream stopped taking the body: it may have answered
            // early and closed with the body unread, and its kernel reset
            // the connection. The answer is still there to read; the
            // response side tells.
            Ok(Err(e)) if e.kind() == ErrorKind::UpstreamClosed => Ok((resp.await, false)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(n)) => Ok((
                resp.await.map(|mut r| {
                    r.request_bytes = n;
                    r
                }),
                true,
            )),
            // Answered before the request body ended: neither connection can be reused.
            Err(r) => Ok((r, false)),
        }
    };
    bufs::give(rbuf);
    let (r, body_sent) = outcome?;
    r.map(|r| (r, Some(up), body_sent))
}

/// Writes a local reply (routing miss, upstream failure) and records it.
#[allow(clippy::too_many_arguments)]
async fn finish_local(
    client: &mut Stream,
    proxy: &Proxy,
    out: Outcome,
    head_request: bool,
    keep: bool,
    start: Instant,
    inbound: Option<&crate::service::InboundConn>,
    capture: Option<&crate::telemetry::Capture>,
) -> Next {
    let mut out = out;
    if let Some(d) = out.delay {
        // Boxed: rare, and a timer would enlarge every request's future.
        Box::pin(tokio::time::sleep(d)).await;
        out.delayed = true;
    }
    let code = out.resp.status().as_u16();
    let size = http_body::Body::size_hint(out.resp.body()).exact();
    // After a malformed request, what follows on the connection cannot be trusted.
    let keep = keep && out.resp.status() != StatusCode::BAD_REQUEST;
    let written = write_response(client, out.resp, head_request, keep).await;
    proxy.hooks().on_end(&Exchange {
        cluster: out.cluster.as_ref(),
        route: out.route.as_ref(),
        status: code,
        failure: out.failure,
        delayed: out.delayed,
        start,
        dest: out.dest.as_ref().map(|(e, m)| (e, *m)),
        inbound,
        capture,
        request_bytes: 0,
        response_bytes: if head_request { 0 } else { size.unwrap_or(0) },
        grpc: None,
        messages: (0, 0),
    });
    match written {
        Ok(()) if keep => Next::KeepAlive,
        _ => Next::Close,
    }
}
