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

use anymesh_core::routes::{RetryCondition, RetryPolicy};
use bytes::BytesMut;
use http::{HeaderMap, Response};

use super::plan::Plan;
use crate::balance::PickContext;
use crate::error::{ErrorKind, ProxyError};
use crate::h1::codec::ResponseHead;
use crate::resilience::retry::{backoff, retriable, AttemptResult, RetryRequest};
use crate::upstream::pool::{Pool, RawConn};

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
}

impl Retrying<'_> {
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
    mut attempt: impl FnMut(&'r str, u32) -> F,
) -> Result<T, ProxyError>
where
    T: Answer,
    F: Future<Output = Result<T, ProxyError>>,
{
    let policy = retrying.policy;
    let mut retries = 0u32;
    loop {
        let call = attempt(plan.endpoint, retries + 1);
        let result = match policy.per_try_timeout {
            None => call.await,
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => Err(per_try_timeout(t)),
            },
        };
        if retries >= policy.attempts {
            return result;
        }
        let again = match &result {
            Ok(answer) => {
                let (status, grpc_status) = (answer.status(), answer.grpc_status());
                retrying.may_look(status, grpc_status) && {
                    let header = |name: &str| answer.has_header(name);
                    let judged = AttemptResult::Answered {
                        status,
                        grpc_status,
                        header: &header,
                    };
                    retriable(policy, &judged, &retrying.request)
                }
            }
            Err(e) => retriable(
                policy,
                &AttemptResult::Failed {
                    kind: e.kind(),
                    sent: e.sent(),
                    refused_stream: e.refused_stream(),
                },
                &retrying.request,
            ),
        };
        if !again {
            return result;
        }
        retries += 1;
        let delay = backoff(policy.backoff, retries);
        // The answer (and its connection) is dropped before waiting.
        drop(result);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let headers = HeaderMap::new();
        let ctx = PickContext {
            headers: &headers,
            query: None,
            source_ip: Some(plan.source_ip),
        };
        plan.repick(&ctx, policy.ignore_previous_hosts);
    }
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
    let mut retries = 0u32;
    loop {
        let e = match pool.raw(plan.endpoint).await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
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
        retries += 1;
        let delay = backoff(policy.backoff, retries);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let headers = HeaderMap::new();
        let ctx = PickContext {
            headers: &headers,
            query: None,
            source_ip: Some(plan.source_ip),
        };
        plan.repick(&ctx, policy.ignore_previous_hosts);
    }
}
