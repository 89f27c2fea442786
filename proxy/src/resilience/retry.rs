//! Retry decisions: whether a finished attempt is tried again under a
//! route's [`RetryPolicy`] ([`retriable`]), how long to wait first
//! ([`backoff`]), and a client's `grpc-timeout` ([`grpc_timeout`]).
//!
//! [`retriable`] follows Envoy's router (`x-envoy-retry-on`,
//! `x-envoy-retry-grpc-on`), by the origin of the failure:
//!
//! | condition | connect failure | reset/timeout, nothing sent | reset/timeout after sending | answered |
//! |---|---|---|---|---|
//! | `5xx`, `gateway-error` | yes | yes | yes | any 5xx / 502, 503, 504 |
//! | `reset` | yes | yes | yes | no |
//! | `reset-before-request` | yes | yes | no | no |
//! | `connect-failure` | yes | no | no | no |
//! | `refused-stream` | no | HTTP/2 `REFUSED_STREAM` | `REFUSED_STREAM` | no |
//! | `retriable-4xx` | no | no | no | 409 |
//! | `retriable-status-codes` | no | no | no | a listed status |
//! | `retriable-headers` | no | no | no | a listed response header |
//! | `envoy-ratelimited` | no | no | no | `x-envoy-ratelimited` |
//! | gRPC names | no | no | no | `grpc-status` in the head |
//!
//! A response carrying `x-envoy-ratelimited` (an upstream Envoy's rate
//! limit) is retried only under `envoy-ratelimited`, whatever its status.
//! A per-try timeout counts as a reset (Envoy resets the stream).
//!
//! On top of the conditions, a safety rule (istio#50506): once the
//! upstream may have processed the request (it answered, or bytes reached
//! it and it did not refuse the stream), a non-idempotent request is
//! retried only when the operator wrote `retryOn`; a request whose body
//! cannot be replayed is retried only when nothing of it was sent.

// Called by the forwarding layer once it is wired in (issue 20); until then
// only the tests use it.

use std::time::Duration;

use anymesh_core::routes::{RetryCondition, RetryPolicy};

use crate::error::ErrorKind;

#[cfg(test)]
mod tests;

/// How one attempt ended, as [`retriable`] judges it.
pub(crate) enum AttemptResult<'a> {
    /// No response head came back.
    Failed {
        /// What failed: [`ErrorKind::UpstreamConnect`] (connect failure),
        /// [`ErrorKind::UpstreamClosed`] or [`ErrorKind::UpstreamProtocol`]
        /// (a reset or disconnect), [`ErrorKind::Timeout`] (the per-try
        /// timeout); any other kind is never retried.
        kind: ErrorKind,
        /// Some byte of the request reached the upstream (for a refused
        /// stream: some byte of its body, since the head always did).
        sent: bool,
        /// The upstream refused the HTTP/2 stream (`REFUSED_STREAM`): it
        /// did not process the request (RFC 9113 §8.7).
        refused_stream: bool,
    },
    /// A response head came back.
    Answered {
        /// The response status.
        status: u16,
        /// The `grpc-status` of the head, if it has one (trailers-only);
        /// worth looking up only when [`reads_grpc_status`] says so.
        grpc_status: Option<u32>,
        /// Whether the response has a header of this (lower-case) name.
        header: &'a dyn Fn(&str) -> bool,
    },
}

/// What [`retriable`] needs to know of the request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RetryRequest<'a> {
    /// The method is idempotent (RFC 9110 §9.2.2, as `upstream::idempotent` judges it).
    pub idempotent: bool,
    /// The body (if any) is buffered in full, under the bound, and can be
    /// sent again.
    pub replayable: bool,
    /// The value of the request's `x-envoy-retriable-header-names`
    /// (comma-separated response header names, for `retriable-headers`).
    pub retriable_header_names: Option<&'a [u8]>,
    /// The value of the request's `x-envoy-retriable-status-codes`
    /// (comma-separated statuses added to the policy's, for
    /// `retriable-status-codes`).
    pub retriable_status_codes: Option<&'a [u8]>,
}

/// Whether an attempt that ended with `result` is retried under `policy`,
/// retries remaining aside (the caller counts them against
/// `policy.attempts`) and budgets aside.
pub(crate) fn retriable(
    policy: &RetryPolicy,
    result: &AttemptResult<'_>,
    req: &RetryRequest<'_>,
) -> bool {
    if policy.attempts == 0 {
        return false;
    }
    let (fires, processed, sent) = match *result {
        AttemptResult::Failed {
            kind,
            sent,
            refused_stream,
        } => {
            let fires = match kind {
                ErrorKind::UpstreamConnect => on_connect_failure(policy),
                ErrorKind::UpstreamClosed | ErrorKind::UpstreamProtocol | ErrorKind::Timeout => {
                    on_reset(policy, sent, refused_stream)
                }
                _ => false,
            };
            let sent = sent && kind != ErrorKind::UpstreamConnect;
            (fires, sent && !refused_stream, sent)
        }
        AttemptResult::Answered {
            status,
            grpc_status,
            header,
        } => (
            on_answer(policy, status, grpc_status, header, req),
            true,
            true,
        ),
    };
    fires && (!processed || req.idempotent || policy.explicit) && (!sent || req.replayable)
}

/// Envoy's decision for a connection that could not be made.
fn on_connect_failure(policy: &RetryPolicy) -> bool {
    let c = policy.retry_on.conditions;
    c.contains(RetryCondition::ConnectFailure) || on_reset(policy, false, false)
}

/// Envoy's decision for a stream reset (or a per-try timeout, which resets it).
fn on_reset(policy: &RetryPolicy, sent: bool, refused_stream: bool) -> bool {
    use RetryCondition::*;
    let c = policy.retry_on.conditions;
    (c.contains(ResetBeforeRequest) && !sent)
        || c.contains(Reset)
        || c.contains(FiveXx)
        || c.contains(GatewayError)
        || (c.contains(RefusedStream) && refused_stream)
}

/// Envoy's decision for a response head: an upstream Envoy's rate limit
/// (`x-envoy-ratelimited`) decides alone; otherwise the status, headers
/// and gRPC status. The header is looked up only when it could change the
/// answer, so a plain success costs no header lookup.
fn on_answer(
    policy: &RetryPolicy,
    status: u16,
    grpc_status: Option<u32>,
    header: &dyn Fn(&str) -> bool,
    req: &RetryRequest<'_>,
) -> bool {
    let limited = policy
        .retry_on
        .conditions
        .contains(RetryCondition::EnvoyRateLimited);
    let fires = on_status(policy, status, grpc_status, header, req);
    if (fires || limited) && header("x-envoy-ratelimited") {
        return limited;
    }
    fires
}

/// The conditions on a response head but `envoy-ratelimited`.
fn on_status(
    policy: &RetryPolicy,
    status: u16,
    grpc_status: Option<u32>,
    header: &dyn Fn(&str) -> bool,
    req: &RetryRequest<'_>,
) -> bool {
    use RetryCondition::*;
    let c = policy.retry_on.conditions;
    if c.contains(FiveXx) && (500..600).contains(&status) {
        return true;
    }
    if c.contains(GatewayError) && matches!(status, 502..=504) {
        return true;
    }
    if c.contains(Retriable4xx) && status == 409 {
        return true;
    }
    // Istio adds `retriable-status-codes` whenever `retryOn` lists codes.
    let statuses = &policy.retry_on.statuses;
    if (c.contains(RetriableStatusCodes) || !statuses.is_empty()) && statuses.contains(&status) {
        return true;
    }
    if c.contains(RetriableStatusCodes)
        && list(req.retriable_status_codes).any(|code| parse_u16(code) == Some(status))
    {
        return true;
    }
    if c.contains(RetriableHeaders) && list(req.retriable_header_names).any(|n| has(header, n)) {
        return true;
    }
    match grpc_status {
        Some(1) => c.contains(Cancelled),
        Some(4) => c.contains(DeadlineExceeded),
        Some(8) => c.contains(ResourceExhausted),
        Some(13) => c.contains(Internal),
        Some(14) => c.contains(Unavailable),
        _ => false,
    }
}

/// The non-empty, trimmed items of a comma-separated header value.
fn list(value: Option<&[u8]>) -> impl Iterator<Item = &[u8]> {
    value
        .unwrap_or_default()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

fn parse_u16(digits: &[u8]) -> Option<u16> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether the response has the header `name` (any case), lower-cased on
/// the stack; a name too long for a header this proxy accepts is absent.
fn has(header: &dyn Fn(&str) -> bool, name: &[u8]) -> bool {
    let mut buf = [0u8; 128];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return false;
    };
    for (to, from) in lower.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    std::str::from_utf8(lower).is_ok_and(header)
}

/// Whether a policy has a gRPC condition, so a response head's
/// `grpc-status` matters to [`retriable`] (Istio's default policy has).
pub(crate) fn reads_grpc_status(policy: &RetryPolicy) -> bool {
    use RetryCondition::*;
    let c = policy.retry_on.conditions;
    [
        Cancelled,
        DeadlineExceeded,
        Internal,
        ResourceExhausted,
        Unavailable,
    ]
    .into_iter()
    .any(|g| c.contains(g))
}

/// The wait before retry `retry` (1 for the first retry): Envoy's fully
/// jittered exponential backoff, a uniform draw in
/// `[0, min(2^(retry-1) × base, 10 × base))`.
///
/// Envoy's documentation gives `[0, (2^N − 1) × base)`; its code
/// (`JitteredExponentialBackOffStrategy`) draws below an interval that
/// starts at `base` and doubles up to the cap, which is followed here.
pub(crate) fn backoff(base: Duration, retry: u32) -> Duration {
    let base = base.as_nanos().min(u128::from(u64::MAX / 16)) as u64;
    let cap = base * 10;
    let doublings = retry.saturating_sub(1).min(4);
    let interval = (base << doublings).min(cap);
    if interval == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(crate::balance::random_below(interval))
}

/// Parses a `grpc-timeout` value (gRPC over HTTP/2: one to eight digits
/// and a unit among `H M S m u n`); `None` when it is not one.
pub(crate) fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}
