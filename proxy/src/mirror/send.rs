//! One mirror's task: send the copy, read the response (head and whole
//! body, hashed when comparing, else discarded), compare with the
//! primary's when asked, count, end. Everything is bounded by the mirror
//! timeout; nothing here is awaited by the primary.

use anymesh_core::routes::ConnectionPool;
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::MirrorCompare;
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::compare::{differences, Digest, DigestBuilder};
use super::head::Outgoing;
use super::Slot;
use crate::balance::InFlight;
use crate::error::{ProxyError, Retry};
use crate::h1::bufs;
use crate::metrics::MirrorResult;
use crate::upstream::h1::read_response_head;
use crate::upstream::pool::Pool;
use crate::upstream::raw_body::RawBody;
use crate::upstream::{may_resend, Attempt};
use anymesh_core::routes::ClusterEndpoint;

/// Everything a mirror task owns.
pub(super) struct Job {
    /// The proxy's mirror slot this task holds, and what tasks share.
    pub shared: Slot,
    /// The picked endpoint.
    pub endpoint: ClusterEndpoint,
    /// The endpoint's in-flight count, held until the response is read.
    pub guard: InFlight,
    pub request: Outgoing,
    pub route: Arc<str>,
    pub cluster: Arc<str>,
    /// Bounds the exchange, and then the wait for the primary.
    pub timeout: Duration,
    /// When comparing: what is compared, and the primary's digest to come.
    pub primary: Option<(Arc<MirrorCompare>, oneshot::Receiver<Arc<Digest>>)>,
}

impl Job {
    pub(super) async fn run(self) {
        let Job {
            shared,
            endpoint,
            guard,
            request,
            route,
            cluster,
            timeout,
            primary,
        } = self;
        let compare = primary.as_ref().map(|(c, _)| &**c);
        let exchange = exchange(&shared.pool, &endpoint, request, compare);
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(a) => a,
            Err(_) => Err(format!("no complete response within {timeout:?}")),
        };
        drop(guard);
        let result = match (answer, primary) {
            (Err(e), _) => {
                tracing::debug!(%route, %cluster, endpoint = %endpoint.authority, error = %e, "mirror failed");
                MirrorResult::Error
            }
            (Ok(_), None) => MirrorResult::Ok,
            (Ok(mine), Some((compare, rx))) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(theirs)) if *theirs == mine => MirrorResult::Match,
                Ok(Ok(theirs)) => {
                    if shared.logged.lock().admit(&route, Instant::now()) {
                        let what = differences(&compare, &theirs, &mine);
                        tracing::info!(%route, %cluster, differences = %what, "mirror response differs from the primary's");
                    }
                    MirrorResult::Mismatch
                }
                // The primary failed, or did not end within the timeout.
                _ => MirrorResult::Uncompared,
            },
        };
        shared.count(&route, &cluster, result);
    }
}

/// Sends the request and reads the whole response; its digest when
/// comparing (else an empty one).
async fn exchange(
    pool: &Arc<Pool>,
    endpoint: &ClusterEndpoint,
    request: Outgoing,
    compare: Option<&MirrorCompare>,
) -> Result<Digest, String> {
    match request {
        Outgoing::H1 {
            bytes,
            head_request,
            replayable,
        } => exchange_h1(pool, endpoint, &bytes, head_request, replayable, compare).await,
        Outgoing::H2(req) => {
            let resp = pool
                .send_h2(endpoint, *req, None)
                .await
                .map(|(resp, _)| resp)
                .map_err(|e| e.to_string())?;
            let mut digest = start(compare, resp.status().as_u16(), |n| {
                resp.headers().get(n).map(|v| v.as_bytes())
            });
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading the response body: {e}"))?;
                if let (Some(d), Some(data)) = (&mut digest, frame.data_ref()) {
                    d.body(data);
                }
            }
            Ok(finish(digest))
        }
    }
}

/// An HTTP/1.1 exchange on the proxy's raw pool; a reused connection
/// found closed before any answer is replaced once, as for the primary
/// ([`may_resend`]).
async fn exchange_h1(
    pool: &Arc<Pool>,
    endpoint: &ClusterEndpoint,
    bytes: &[u8],
    head_request: bool,
    replayable: bool,
    compare: Option<&MirrorCompare>,
) -> Result<Digest, String> {
    let mut count = 0;
    // Mirrors use the proxy's own connection settings, not the cluster's.
    let settings = ConnectionPool::default();
    let (conn, rbuf, head) = loop {
        count += 1;
        let mut conn = if count > 1 {
            pool.raw_fresh(endpoint, &settings).await
        } else {
            pool.raw(endpoint, &settings).await
        }
        .map_err(|e| e.to_string())?;
        let mut rbuf = bufs::take();
        let sent = match conn.stream.write_all(bytes).await {
            Err(e) => Err(
                ProxyError::upstream_closed(format!("writing the request: {e}"))
                    .with_retry(Retry::IfReused),
            ),
            Ok(()) => read_response_head(&mut conn.stream, &mut rbuf, head_request).await,
        };
        match sent {
            Ok(head) => break (conn, rbuf, head),
            Err(e) => {
                bufs::give(rbuf);
                let attempt = Attempt {
                    reused: conn.reused,
                    replayable,
                    count,
                };
                if !may_resend(&e, &attempt) {
                    return Err(e.to_string());
                }
            }
        }
    };
    let mut digest = start(compare, head.status.as_u16(), |n| {
        head.fields()
            .find(|(name, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| v)
    });
    // Reads the body where its framing says and hands the connection back
    // to the pool when it ended cleanly.
    let mut body = RawBody::new(conn, rbuf, &head, pool.clone(), None);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the response body: {e}"))?;
        if let (Some(d), Some(data)) = (&mut digest, frame.data_ref()) {
            d.body(data);
        }
    }
    Ok(finish(digest))
}

fn start<'h>(
    compare: Option<&MirrorCompare>,
    status: u16,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Option<DigestBuilder> {
    Some(DigestBuilder::new(compare?, status, header))
}

/// The digest, or (not comparing) an empty one that nobody reads.
fn finish(digest: Option<DigestBuilder>) -> Digest {
    digest.map_or(
        Digest {
            status: 0,
            headers: Vec::new(),
            body: None,
        },
        DigestBuilder::finish,
    )
}
