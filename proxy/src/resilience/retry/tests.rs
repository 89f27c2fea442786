use std::time::Duration;

use anymesh_core::routes::{RetryCondition, RetryConditions, RetryOn, RetryPolicy};

use super::*;

fn policy(conditions: &[RetryCondition]) -> RetryPolicy {
    let mut set = RetryConditions::default();
    for c in conditions {
        set.insert(*c);
    }
    RetryPolicy {
        attempts: 2,
        retry_on: RetryOn {
            conditions: set,
            statuses: Vec::new(),
        },
        explicit: true,
        ..RetryPolicy::istio_default()
    }
}

const SAFE: RetryRequest<'static> = RetryRequest {
    idempotent: true,
    replayable: true,
    retriable_header_names: None,
    retriable_status_codes: None,
};

const NO_HEADERS: &dyn Fn(&str) -> bool = &|_| false;

fn failed(kind: ErrorKind, sent: bool, refused_stream: bool) -> AttemptResult<'static> {
    AttemptResult::Failed {
        kind,
        sent,
        refused_stream,
    }
}

fn answered(status: u16) -> AttemptResult<'static> {
    AttemptResult::Answered {
        status,
        grpc_status: None,
        header: NO_HEADERS,
    }
}

fn grpc(code: u32) -> AttemptResult<'static> {
    AttemptResult::Answered {
        status: 200,
        grpc_status: Some(code),
        header: NO_HEADERS,
    }
}

/// Every origin of a failure the matrix covers, by name.
fn origins() -> Vec<(&'static str, AttemptResult<'static>)> {
    vec![
        ("connect", failed(ErrorKind::UpstreamConnect, false, false)),
        (
            "reset-unsent",
            failed(ErrorKind::UpstreamClosed, false, false),
        ),
        ("reset-sent", failed(ErrorKind::UpstreamClosed, true, false)),
        (
            "protocol-sent",
            failed(ErrorKind::UpstreamProtocol, true, false),
        ),
        ("per-try-timeout", failed(ErrorKind::Timeout, true, false)),
        ("refused", failed(ErrorKind::UpstreamClosed, true, true)),
        (
            "no-endpoint",
            failed(ErrorKind::NoHealthyEndpoint, false, false),
        ),
        (
            "client-left",
            failed(ErrorKind::DownstreamClosed, true, false),
        ),
        ("200", answered(200)),
        ("404", answered(404)),
        ("409", answered(409)),
        ("429", answered(429)),
        ("500", answered(500)),
        ("501", answered(501)),
        ("502", answered(502)),
        ("503", answered(503)),
        ("504", answered(504)),
        ("grpc-1", grpc(1)),
        ("grpc-2", grpc(2)),
        ("grpc-4", grpc(4)),
        ("grpc-8", grpc(8)),
        ("grpc-13", grpc(13)),
        ("grpc-14", grpc(14)),
    ]
}

#[test]
fn each_condition_fires_on_the_origins_envoy_retries() {
    use RetryCondition::*;
    let resets = [
        "connect",
        "reset-unsent",
        "reset-sent",
        "protocol-sent",
        "per-try-timeout",
        "refused",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        resets
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    let cases: Vec<(RetryCondition, Vec<&str>)> = vec![
        (FiveXx, with(&["500", "501", "502", "503", "504"])),
        (GatewayError, with(&["502", "503", "504"])),
        (Reset, with(&[])),
        (ResetBeforeRequest, vec!["connect", "reset-unsent"]),
        (ConnectFailure, vec!["connect"]),
        (RefusedStream, vec!["refused"]),
        (Retriable4xx, vec!["409"]),
        // No statuses listed: nothing fires.
        (RetriableStatusCodes, vec![]),
        (RetriableHeaders, vec![]),
        (EnvoyRateLimited, vec![]),
        (Cancelled, vec!["grpc-1"]),
        (DeadlineExceeded, vec!["grpc-4"]),
        (ResourceExhausted, vec!["grpc-8"]),
        (Internal, vec!["grpc-13"]),
        (Unavailable, vec!["grpc-14"]),
    ];
    assert_eq!(cases.len(), RetryCondition::ALL.len());
    for (condition, expected) in cases {
        let p = policy(&[condition]);
        let fired: Vec<&str> = origins()
            .into_iter()
            .filter(|(_, r)| retriable(&p, r, &SAFE))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(fired, expected, "{condition}");
    }
}

#[test]
fn listed_statuses_fire_from_the_policy_and_from_the_request() {
    let mut p = policy(&[RetryCondition::RetriableStatusCodes]);
    p.retry_on.statuses = vec![429, 503];
    for (status, expected) in [(429, true), (503, true), (500, false), (200, false)] {
        assert_eq!(
            retriable(&p, &answered(status), &SAFE),
            expected,
            "{status}"
        );
    }
    // Bare codes in `retryOn` without the name still fire (Istio adds it).
    let mut bare = policy(&[]);
    bare.retry_on.statuses = vec![429];
    assert!(retriable(&bare, &answered(429), &SAFE));

    let req = RetryRequest {
        retriable_status_codes: Some(b" 418 ,x, 500"),
        ..SAFE
    };
    assert!(retriable(&p, &answered(418), &req));
    assert!(retriable(&p, &answered(500), &req));
    assert!(!retriable(&p, &answered(419), &req));
    // The request's list needs the condition.
    assert!(!retriable(&policy(&[]), &answered(418), &req));
}

#[test]
fn retriable_headers_are_the_requests_list_matched_in_any_case() {
    let p = policy(&[RetryCondition::RetriableHeaders]);
    let header: &dyn Fn(&str) -> bool = &|name| name == "x-upstream-retry";
    let result = AttemptResult::Answered {
        status: 200,
        grpc_status: None,
        header,
    };
    let req = |names: &'static [u8]| RetryRequest {
        retriable_header_names: Some(names),
        ..SAFE
    };
    assert!(retriable(&p, &result, &req(b"x-other, X-Upstream-Retry")));
    assert!(!retriable(&p, &result, &req(b"x-other")));
    assert!(!retriable(&p, &result, &SAFE));
    let long = [b'a'; 200];
    assert!(!retriable(
        &p,
        &result,
        &RetryRequest {
            retriable_header_names: Some(&long),
            ..SAFE
        }
    ));
    // Without the condition the list is ignored.
    assert!(!retriable(&policy(&[]), &result, &req(b"x-upstream-retry")));
}

#[test]
fn a_rate_limited_answer_is_retried_only_under_envoy_ratelimited() {
    let header: &dyn Fn(&str) -> bool = &|name| name == "x-envoy-ratelimited";
    let limited = AttemptResult::Answered {
        status: 503,
        grpc_status: Some(14),
        header,
    };
    let everything_else = policy(&[
        RetryCondition::FiveXx,
        RetryCondition::GatewayError,
        RetryCondition::Unavailable,
    ]);
    assert!(!retriable(&everything_else, &limited, &SAFE));
    let p = policy(&[RetryCondition::EnvoyRateLimited]);
    assert!(retriable(&p, &limited, &SAFE));
    assert!(!retriable(&p, &answered(429), &SAFE));
}

#[test]
fn the_upstream_having_seen_a_non_idempotent_request_needs_an_explicit_policy() {
    let post = RetryRequest {
        idempotent: false,
        ..SAFE
    };
    let mut p = policy(&[RetryCondition::FiveXx, RetryCondition::RefusedStream]);
    for explicit in [true, false] {
        p.explicit = explicit;
        // Never processed: always retried.
        for r in [
            failed(ErrorKind::UpstreamConnect, false, false),
            failed(ErrorKind::UpstreamClosed, false, false),
            failed(ErrorKind::UpstreamClosed, true, true),
        ] {
            assert!(retriable(&p, &r, &post));
        }
        // May have been processed: only when the operator asked.
        for r in [
            failed(ErrorKind::UpstreamClosed, true, false),
            failed(ErrorKind::Timeout, true, false),
            answered(503),
        ] {
            assert_eq!(retriable(&p, &r, &post), explicit);
            assert!(retriable(&p, &r, &SAFE));
        }
    }
    // Istio's default policy never replays a POST that reached an upstream.
    let default = RetryPolicy::istio_default();
    assert!(!retriable(&default, &grpc(14), &post));
    assert!(retriable(&default, &grpc(14), &SAFE));
    assert!(retriable(
        &default,
        &failed(ErrorKind::UpstreamConnect, false, false),
        &post
    ));
}

#[test]
fn a_body_that_cannot_be_replayed_is_retried_only_when_nothing_was_sent() {
    let streamed = RetryRequest {
        replayable: false,
        ..SAFE
    };
    let p = policy(&[RetryCondition::FiveXx, RetryCondition::RefusedStream]);
    assert!(retriable(
        &p,
        &failed(ErrorKind::UpstreamConnect, true, false),
        &streamed
    ));
    assert!(retriable(
        &p,
        &failed(ErrorKind::UpstreamClosed, false, false),
        &streamed
    ));
    assert!(retriable(
        &p,
        &failed(ErrorKind::UpstreamClosed, false, true),
        &streamed
    ));
    assert!(!retriable(
        &p,
        &failed(ErrorKind::UpstreamClosed, true, true),
        &streamed
    ));
    assert!(!retriable(
        &p,
        &failed(ErrorKind::Timeout, true, false),
        &streamed
    ));
    assert!(!retriable(&p, &answered(503), &streamed));
}

#[test]
fn no_attempts_means_no_retry() {
    let mut p = policy(&RetryCondition::ALL);
    p.attempts = 0;
    for (name, r) in origins() {
        assert!(!retriable(&p, &r, &SAFE), "{name}");
    }
    assert!(!retriable(
        &RetryPolicy::disabled(),
        &failed(ErrorKind::UpstreamConnect, false, false),
        &SAFE
    ));
}

#[test]
fn backoff_draws_cover_envoys_interval_and_stay_in_it() {
    let base = Duration::from_millis(25);
    for (retry, interval_ms) in [
        (0, 25),
        (1, 25),
        (2, 50),
        (3, 100),
        (4, 200),
        (5, 250),
        (40, 250),
    ] {
        let interval = Duration::from_millis(interval_ms);
        let draws: Vec<Duration> = (0..4000).map(|_| backoff(base, retry)).collect();
        assert!(draws.iter().all(|d| *d < interval), "retry {retry}");
        // Every tenth of the interval is hit (a miss has odds of 0.9^4000).
        for tenth in 0..10 {
            let (lo, hi) = (interval * tenth / 10, interval * (tenth + 1) / 10);
            assert!(
                draws.iter().any(|d| *d >= lo && *d < hi),
                "retry {retry}: nothing in {lo:?}..{hi:?}"
            );
        }
        let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
        let half = interval / 2;
        assert!(
            mean > half * 9 / 10 && mean < half * 11 / 10,
            "retry {retry}: mean {mean:?}"
        );
    }
    assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    assert!(backoff(Duration::MAX, 9) < Duration::MAX);
}

#[test]
fn grpc_timeouts_parse_as_the_grpc_spec_writes_them() {
    let ok = [
        (&b"1H"[..], Duration::from_secs(3600)),
        (b"2M", Duration::from_secs(120)),
        (b"30S", Duration::from_secs(30)),
        (b"250m", Duration::from_millis(250)),
        (b"7u", Duration::from_micros(7)),
        (b"99999999n", Duration::from_nanos(99_999_999)),
        (b"0S", Duration::ZERO),
        (b"99999999H", Duration::from_secs(99_999_999 * 3600)),
    ];
    for (value, expected) in ok {
        assert_eq!(grpc_timeout(value), Some(expected), "{value:?}");
    }
    for bad in [
        &b""[..],
        b"S",
        b"10",
        b"10s",
        b"123456789S",
        b"-1S",
        b"1.5S",
        b" 1S",
        b"1 S",
    ] {
        assert_eq!(grpc_timeout(bad), None, "{bad:?}");
    }
}

#[test]
fn a_plain_answer_looks_up_no_header() {
    use std::cell::Cell;
    let lookups = Cell::new(0);
    let header: &dyn Fn(&str) -> bool = &|_| {
        lookups.set(lookups.get() + 1);
        false
    };
    let ok = AttemptResult::Answered {
        status: 200,
        grpc_status: None,
        header,
    };
    assert!(!retriable(&RetryPolicy::istio_default(), &ok, &SAFE));
    assert!(!retriable(&policy(&[RetryCondition::FiveXx]), &ok, &SAFE));
    assert_eq!(lookups.get(), 0);
    // When it could change the answer, it is looked up.
    let failed = AttemptResult::Answered {
        status: 503,
        grpc_status: None,
        header,
    };
    assert!(retriable(
        &policy(&[RetryCondition::FiveXx]),
        &failed,
        &SAFE
    ));
    assert!(!retriable(
        &policy(&[RetryCondition::EnvoyRateLimited]),
        &ok,
        &SAFE
    ));
    assert_eq!(lookups.get(), 2);
}

#[test]
fn grpc_status_matters_only_to_policies_with_grpc_conditions() {
    assert!(reads_grpc_status(&RetryPolicy::istio_default()));
    assert!(reads_grpc_status(&policy(&[RetryCondition::Internal])));
    assert!(!reads_grpc_status(&policy(&[
        RetryCondition::FiveXx,
        RetryCondition::ConnectFailure
    ])));
}
