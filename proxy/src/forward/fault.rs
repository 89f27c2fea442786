//! Fault injection (VirtualService `http[].fault`): a delay before the
//! request is forwarded, or an abort answered by the proxy itself. Faults
//! are decided once per request, before any attempt, so they are never
//! retried (as Envoy: its fault filter runs before the router).

use std::time::Duration;

use anymesh_core::routes::{AbortStatus, FaultPolicy};
use http::{header, HeaderValue, Response, StatusCode};

use super::Outcome;
use crate::body::response::ProxyBody;
use crate::error::ErrorKind;

/// What a route's fault policy does to one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Injected {
    /// Wait this long before forwarding (response flag `DI`).
    pub delay: Option<Duration>,
    /// Answer with this instead of forwarding (response flag `FI`).
    pub abort: Option<AbortStatus>,
}

/// Draws whether the request is delayed and whether it is aborted, each
/// with its own percentage.
pub(crate) fn draw(policy: &FaultPolicy) -> Injected {
    Injected {
        delay: policy
            .delay
            .as_ref()
            .filter(|d| hit(d.percentage))
            .map(|d| d.fixed),
        abort: policy
            .abort
            .as_ref()
            .filter(|a| hit(a.percentage))
            .map(|a| a.status),
    }
}

/// A draw that succeeds `percentage` percent of the time (0..=100, with
/// the precision of a millionth of a percent).
fn hit(percentage: f64) -> bool {
    const SCALE: f64 = 100_000_000.0;
    if percentage >= 100.0 {
        return true;
    }
    if percentage.is_nan() || percentage <= 0.0 {
        return false;
    }
    let threshold = (percentage / 100.0 * SCALE) as u64;
    crate::balance::random_below(SCALE as u64) < threshold
}

/// The local reply of an injected abort: the HTTP status with Envoy's body,
/// or for a gRPC status a trailers-only gRPC response (HTTP 200 with
/// `grpc-status` in the head).
pub(crate) fn abort_reply(status: AbortStatus) -> Outcome {
    let resp = match status {
        AbortStatus::Http(code) => {
            let mut resp = Response::new(ProxyBody::local("fault filter abort"));
            *resp.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
        AbortStatus::Grpc(code) => {
            let mut resp = Response::new(ProxyBody::empty());
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            resp
        }
    };
    let mut out = Outcome::response(resp);
    out.failure = Some(ErrorKind::FaultAbort);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anymesh_core::routes::{FaultAbort, FaultDelay};

    fn policy(delay: f64, abort: f64) -> FaultPolicy {
        FaultPolicy {
            delay: Some(FaultDelay {
                fixed: Duration::from_millis(5),
                percentage: delay,
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::Http(503),
                percentage: abort,
            }),
        }
    }

    #[test]
    fn full_and_zero_percentages_are_exact() {
        for _ in 0..1000 {
            let i = draw(&policy(100.0, 0.0));
            assert_eq!(i.delay, Some(Duration::from_millis(5)));
            assert_eq!(i.abort, None);
            let i = draw(&policy(0.0, 100.0));
            assert_eq!(i.delay, None);
            assert_eq!(i.abort, Some(AbortStatus::Http(503)));
        }
    }

    /// Each part is drawn on its own with its share: 20 000 draws at 30 %
    /// and 0.5 % stay within five standard deviations of the expectation.
    #[test]
    fn partial_percentages_hit_their_share() {
        let n = 20_000u32;
        let p = policy(30.0, 0.5);
        let (mut delayed, mut aborted, mut both) = (0u32, 0u32, 0u32);
        for _ in 0..n {
            let i = draw(&p);
            delayed += u32::from(i.delay.is_some());
            aborted += u32::from(i.abort.is_some());
            both += u32::from(i.delay.is_some() && i.abort.is_some());
        }
        let within = |count: u32, share: f64| {
            let mean = f64::from(n) * share;
            let sd = (mean * (1.0 - share)).sqrt();
            (f64::from(count) - mean).abs() <= 5.0 * sd
        };
        assert!(within(delayed, 0.30), "delayed {delayed} of {n}");
        assert!(within(aborted, 0.005), "aborted {aborted} of {n}");
        // Independent draws: both happen about 0.15 % of the time.
        assert!(within(both, 0.0015), "both {both} of {n}");
    }

    #[test]
    fn aborts_answer_http_or_grpc() {
        let out = abort_reply(AbortStatus::Http(418));
        assert_eq!(out.resp.status().as_u16(), 418);
        assert_eq!(out.failure, Some(ErrorKind::FaultAbort));
        let out = abort_reply(AbortStatus::Grpc(14));
        assert_eq!(out.resp.status(), StatusCode::OK);
        assert_eq!(out.resp.headers()["grpc-status"], "14");
        assert_eq!(out.resp.headers()["content-type"], "application/grpc");
    }
}
