//! The attempts of one forwarded request under its route's retry policy:
//! each attempt goes to the plan's endpoint (a retry re-picks one not tried
//! yet, when there is one), is bounded by the per-try timeout, and its end
//! (an error, or a response head) is judged by
//! [`crate::resilience::retry::retriable`]; a retry waits a jittered
//! backoff first. The route timeout bounds all of it from outside
//! ([`super::until`]).
//!
//! Below this loop, the upstream client still resends a request once on
//! its own when a reused keep-alive connection turns out closed
//! ([`crate::upstream::may_resend`]): that is the connection's failure, not
//! the endpoint's, and is not counted as a retry.

use std::future::Future;
use std::time::Duration;

use anymesh_core::routes::{ClusterEndpoint, RetryCondition, RetryPolicy};
use bytes::BytesMut;
use http::{HeaderMap, Response};
use tokio::time::Instant;

use super::plan::Plan;
use crate::balance::PickContext;
use crate::body::request::Tee;
use crate::error::{ErrorKind, ProxyError};
use crate::h1::codec::ResponseHead;
use crate::resilience::outlier::{AttemptOutcome, LocalFailure};
use crate::resilience::retry::{
    backoff, reads_grpc_status, retriable, AttemptResult, RetryRequest,
};
use crate::resilience::runtime::RetryTicket;
use crate::upstream::pool::{Pool, RawConn, StreamSlot};

/// A response head an attempt came back with, as retry decisions read it.
pub(crate) trait Answer {
    fn status(&self) -> u16;
    /// The head's `grpc-status`, for trailers-only gRPC answers.
    fn grpc_status(&self) -> Option<u32>;
    /// Whether the head has a field of this lower-case name.
    fn has_header(&self, name: &str) -> bool;
}

impl Answer for (RawConn, BytesMut, ResponseHead) {
    fn status(&self) -> u16 {
        self.2.status.as_u16()
    }

    fn grpc_status(&self) -> Option<u32> {
        // gRPC runs over HTTP/2 only: an HTTP/1.1 upstream's answer has none.
        None
    }

    fn has_header(&self, name: &str) -> bool {
        self.2
            .fields()
            .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

impl<B> Answer for (Response<B>, Option<StreamSlot>) {
    fn status(&self) -> u16 {
        self.0.status().as_u16()
    }

    fn grpc_status(&self) -> Option<u32> {
        self.0.grpc_status()
    }

    fn has_header(&self, name: &str) -> bool {
        self.0.has_header(name)
    }
}

impl<B> Answer for Response<B> {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }

    fn grpc_status(&self) -> Option<u32> {
        let v = self.headers().get("grpc-status")?;
        std::str::from_utf8(v.as_bytes()).ok()?.parse().ok()
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers().contains_key(name)
    }
}

/// What the retry loop knows of the request.
pub(crate) struct Retrying<'a> {
    pub policy: &'a RetryPolicy,
    pub request: RetryRequest<'a>,
    /// A streamed body's copy: the request is replayable once it is
    /// complete.
    pub replay: Option<&'a Tee>,
}

impl<'a> Retrying<'a> {
    /// A request on a route with `policy`: its method's idempotence, and
    /// whether its body (if any) is at hand to be sent again.
    pub(crate) fn new(policy: &'a RetryPolicy, idempotent: bool, replayable: bool) -> Self {
        Self {
            policy,
            request: RetryRequest {
                idempotent,
                replayable,
                ..RetryRequest::default()
            },
            replay: None,
        }
    }
    /// Whether an answer could be retried at all, before looking closer:
    /// most answers are successes no condition fires on.
    fn may_look(&self, status: u16, grpc_status: Option<u32>) -> bool {
        let c = self.policy.retry_on.conditions;
        status >= 500
            || status == 409
            || grpc_status.is_some_and(|g| g != 0)
            || !self.policy.retry_on.statuses.is_empty()
            || c.contains(RetryCondition::RetriableHeaders)
            || c.contains(RetryCondition::EnvoyRateLimited)
            || (c.contains(RetryCondition::RetriableStatusCodes)
                && self.request.retriable_status_codes.is_some())
    }
}

/// Runs `attempt` against the plan's endpoint, and again against re-picked
/// ones while the retry policy, the remaining attempts and a free
/// endpoint allow. The last attempt's result is returned as it is (an
/// answer that was not retried is the client's answer).
///
/// `attempt(endpoint, n)` makes attempt `n` (1 for the first).
pub(crate) async fn run<'r, T, F>(
    plan: &mut Plan<'r>,
    retrying: &Retrying<'_>,
    mut attempt: impl FnMut(&'r ClusterEndpoint, u32) -> F,
) -> Result<T, ProxyError>
where
    T: Answer,
    F: Future<Output = Result<T, ProxyError>>,
{
    let policy = retrying.policy;
    plan.admit().await?;
    let mut retries = 0u32;
    let mut tried = Tried::default();
    // The retry in flight, counted by the budget and by `maxRetries`.
    let mut _retry = None;
    loop {
        // Scoped: the attempt's future and its result are gone before the
        // backoff's wait, so the request's future holds only one of them.
        let ticket = {
            let started = plan.wants_latency().then(Instant::now);
            // Scoped too: the future is gone when its result is kept.
            // A body still streaming to the first attempt is the client's
            // pace, not the upstream's: the per-try timer starts once the
            // whole request is at hand (as Envoy), here from the retries on.
            let per_try = policy
                .per_try_timeout
                .filter(|_| retrying.replay.is_none_or(Tee::complete));
            let result = {
                let mut call = std::pin::pin!(attempt(plan.endpoint, retries + 1));
                match per_try {
                    None => call.await,
                    // Boxed: the timer would enlarge every request's future.
                    Some(t) => match Box::pin(tokio::time::timeout(t, call.as_mut())).await {
                        Ok(r) => r,
                        Err(_) => Err(per_try_timeout(t)),
                    },
                }
            };
            let latency = started.map(|s| s.elapsed()).unwrap_or_default();
            // The last retry's ticket ends with its attempt: a request's
            // own retries do not count against its next one.
            _retry = None;
            match next_step(plan, retrying, &result, retries, latency) {
                Some(ticket) => ticket,
                None => return result,
            }
        };
        _retry = Some(ticket);
        retries += 1;
        let delay = backoff(policy.backoff, retries);
        if !delay.is_zero() {
            // Boxed: the timer would enlarge every request's future.
            Box::pin(tokio::time::sleep(delay)).await;
        }
        repick(plan, &mut tried, policy);
    }
}

/// Reports how an attempt ended and decides whether it is retried: a
/// ticket for the retry, or `None` when the result is the client's.
fn next_step<T: Answer>(
    plan: &Plan<'_>,
    retrying: &Retrying<'_>,
    result: &Result<T, ProxyError>,
    retries: u32,
    latency: Duration,
) -> Option<RetryTicket> {
    let policy = retrying.policy;
    match result {
        Ok(answer) => plan.report(AttemptOutcome::Response {
            status: answer.status(),
            latency,
        }),
        Err(e) => report_failure(plan, e),
    }
    if policy.attempts == 0 {
        return None;
    }
    let mut request = retrying.request;
    if let Some(tee) = retrying.replay {
        // The body went to the first attempt: only its complete copy can
        // be sent again, whatever failed (even a connection never made).
        if !tee.complete() {
            return None;
        }
        request.replayable = true;
    }

    let again = match result {
        Ok(answer) => {
            // `grpc-status` is looked up only when a condition reads it.
            let grpc_status = reads_grpc_status(policy)
                .then(|| answer.grpc_status())
                .flatten();
            let status = answer.status();
            retrying.may_look(status, grpc_status) && {
                let header = |name: &str| answer.has_header(name);
                let judged = AttemptResult::Answered {
                    status,
                    grpc_status,
                    header: &header,
                };
                retriable(policy, &judged, &request)
            }
        }
        Err(e) => retriable(
            policy,
            &AttemptResult::Failed {
                kind: e.kind(),
                sent: e.sent(),
                refused_stream: e.refused_stream(),
            },
            &request,
        ),
    };
    if !again {
        return None;
    }
    if retries >= policy.attempts {
        plan.runtime.stats.record_limit_exceeded();
        return None;
    }
    // Budgets and `maxRetries` bound retries across the cluster; a retry
    // they refuse leaves the last answer as the client's.
    match plan.runtime.try_retry() {
        Ok(ticket) => Some(ticket),
        Err(why) => {
            tracing::debug!(cluster = %plan.target.cluster.name, ?why, "retry refused");
            None
        }
    }
}

/// The endpoints a request's attempts went to; allocated at the first
/// retry only.
#[derive(Default)]
struct Tried(Vec<usize>);

/// Picks the endpoint of the next attempt, away from those tried when the
/// policy says so (Istio's `retryIgnorePreviousHosts`) and another is
/// available, and from their localities with `retryRemoteLocalities`.
fn repick(plan: &mut Plan<'_>, tried: &mut Tried, policy: &RetryPolicy) {
    let avoid = policy.ignore_previous_hosts || policy.retry_remote_localities;
    tried.0.push(plan.index);
    // Hashing keys (headers, cookie, source address) are not looked at
    // again: a retry goes where the balancer's draw (or the next free
    // endpoint) says.
    let headers = HeaderMap::new();
    let ctx = PickContext {
        headers: &headers,
        query: None,
        source_ip: None,
    };
    let avoided = if avoid { tried.0.as_slice() } else { &[] };
    plan.repick(&ctx, avoided, policy.retry_remote_localities);
}

/// Reports an attempt that ended without a response head, when the
/// endpoint is to blame (not the client, not a local decision).
pub(crate) fn report_failure(plan: &Plan<'_>, e: &ProxyError) {
    let failure = match e.kind() {
        ErrorKind::UpstreamConnect => LocalFailure::Connect,
        ErrorKind::UpstreamClosed | ErrorKind::UpstreamProtocol => LocalFailure::Reset,
        ErrorKind::Timeout => LocalFailure::Timeout,
        _ => return,
    };
    plan.report(AttemptOutcome::LocalOrigin(failure));
}

/// The error of an attempt that outlived the per-try timeout.
fn per_try_timeout(after: Duration) -> ProxyError {
    ProxyError::new(
        ErrorKind::Timeout,
        format!("no response within the per-try timeout of {after:?}"),
    )
}

/// A connection for a request whose body streams from the client: such a
/// request is never sent twice, but while no connection could be made
/// nothing of it left the proxy, so a connect failure is retried (on
/// another endpoint) as the policy allows.
pub(crate) async fn connect(
    plan: &mut Plan<'_>,
    retrying: &Retrying<'_>,
    pool: &Pool,
) -> Result<RawConn, ProxyError> {
    let policy = retrying.policy;
    plan.admit().await?;
    let mut retries = 0u32;
    let mut tried = Tried::default();
    let mut _ticket = None;
    loop {
        let e = match pool
            .raw(plan.endpoint, &plan.target.cluster.policy.connection_pool)
            .await
        {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        report_failure(plan, &e);
        let again = retries < policy.attempts && {
            let unsent = AttemptResult::Failed {
                kind: e.kind(),
                sent: false,
                refused_stream: false,
            };
            retriable(policy, &unsent, &retrying.request)
        };
        if !again {
            return Err(e);
        }
        // Held until the next connect is known, as a retry's ticket is.
        match plan.runtime.try_retry() {
            Ok(ticket) => _ticket = Some(ticket),
            Err(_) => return Err(e),
        }
        retries += 1;
        let delay = backoff(policy.backoff, retries);
        if !delay.is_zero() {
            // Boxed: the timer would enlarge every request's future.
            Box::pin(tokio::time::sleep(delay)).await;
        }
        repick(plan, &mut tried, policy);
    }
}
