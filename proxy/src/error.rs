//! The one error of a forwarded request.
//!
//! Every way an exchange can fail is an [`ErrorKind`]: it says where it
//! happened ([`ErrorSource`]), which local reply it maps to (status and
//! `x-anymesh-reason`, [`crate::reply`]), and the Envoy-style response flag
//! an access log or a metric shows for it (`UF`, `UC`, `UT`, `NR`, ...).
//! A [`ProxyError`] adds the detail for the reply's text and whether the
//! request may be sent again ([`Retry`]); the upstream client decides from
//! that alone whether a failed attempt is repeated.

use std::fmt;

use http::StatusCode;

/// Where an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    /// The client: it went away, or sent something unusable.
    Downstream,
    /// No connection to the upstream could be made.
    Connect,
    /// The upstream failed before a complete response head.
    UpstreamHead,
    /// The upstream failed while the response body was streaming.
    UpstreamBody,
    /// The proxy decided itself: routing, policy, limits.
    Local,
}

/// What failed. One place maps each kind to its status, reason and flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No virtual host for the authority.
    NoRoute,
    /// A virtual host, but no route matched.
    NoRouteMatch,
    /// The cluster has no eligible endpoint.
    NoHealthyEndpoint,
    /// Registries have not all answered yet and the host is not known.
    NotReady,
    /// The request itself is unusable (no authority, bad URI, broken body).
    BadRequest,
    /// A kind of request the proxy does not serve (CONNECT, protocol upgrades).
    Unsupported,
    /// The client closed or reset its connection before the exchange ended.
    DownstreamClosed,
    /// Connecting to the upstream failed or timed out.
    UpstreamConnect,
    /// The upstream closed or reset the connection without a complete answer.
    UpstreamClosed,
    /// The upstream answered something that is not valid HTTP.
    UpstreamProtocol,
    /// The route timeout passed.
    Timeout,
    /// A connection-pool limit (circuit breaker) refused the request.
    Overflow,
    /// A fault injected by the route's `fault.abort`.
    FaultAbort,
    /// An inbound request whose JWT failed verification (401).
    Unauthenticated,
    /// An inbound request authorization refused (403).
    Forbidden,
}

impl ErrorKind {
    /// Where this kind of failure happens (an upstream failure after the
    /// response head is reported by [`ProxyError::source`]).
    pub(crate) fn source(self) -> ErrorSource {
        match self {
            ErrorKind::NoRoute
            | ErrorKind::NoRouteMatch
            | ErrorKind::NoHealthyEndpoint
            | ErrorKind::NotReady
            | ErrorKind::Unsupported
            | ErrorKind::Timeout
            | ErrorKind::Overflow
            | ErrorKind::FaultAbort
            | ErrorKind::Unauthenticated
            | ErrorKind::Forbidden => ErrorSource::Local,
            ErrorKind::BadRequest | ErrorKind::DownstreamClosed => ErrorSource::Downstream,
            ErrorKind::UpstreamConnect => ErrorSource::Connect,
            ErrorKind::UpstreamClosed | ErrorKind::UpstreamProtocol => ErrorSource::UpstreamHead,
        }
    }

    /// The status of the local reply (499 for a client that left: nothing
    /// is written, the status is only recorded).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute | ErrorKind::NoRouteMatch => StatusCode::NOT_FOUND,
            // A connection closed or reset before the answer is 503 (UC),
            // as Envoy answers it; an invalid answer is 502 (UPE).
            ErrorKind::NoHealthyEndpoint
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamClosed
            | ErrorKind::NotReady
            | ErrorKind::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            // The abort's own status is set by the fault filter.
            ErrorKind::FaultAbort => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::DownstreamClosed => CLIENT_CLOSED,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The `x-anymesh-reason` of the local reply.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoRouteMatch => "no_route_match",
            ErrorKind::NoHealthyEndpoint => "no_healthy_endpoint",
            ErrorKind::UpstreamConnect => "upstream_connect_error",
            ErrorKind::UpstreamClosed | ErrorKind::UpstreamProtocol => "upstream_error",
            ErrorKind::Timeout => "upstream_timeout",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::DownstreamClosed => "downstream_closed",
            ErrorKind::Overflow => "upstream_overflow",
            ErrorKind::FaultAbort => "fault_abort",
            ErrorKind::Unauthenticated => "jwt_authn_access_denied",
            ErrorKind::Forbidden => "rbac_access_denied",
        }
    }

    /// Envoy's response flag for it (`%RESPONSE_FLAGS%`, Istio's
    /// `response_flags` label).
    pub(crate) fn response_flag(self) -> &'static str {
        match self {
            ErrorKind::NoRoute | ErrorKind::NoRouteMatch | ErrorKind::NotReady => "NR",
            ErrorKind::NoHealthyEndpoint => "UH",
            ErrorKind::UpstreamConnect => "UF",
            ErrorKind::UpstreamClosed => "UC",
            ErrorKind::UpstreamProtocol => "UPE",
            ErrorKind::Timeout => "UT",
            ErrorKind::BadRequest => "DPE",
            ErrorKind::Unsupported => "DPE",
            ErrorKind::DownstreamClosed => "DC",
            ErrorKind::Overflow => "UO",
            ErrorKind::FaultAbort => "FI",
            // Envoy marks neither its JWT nor its RBAC refusals with a flag.
            ErrorKind::Unauthenticated | ErrorKind::Forbidden => "-",
        }
    }
}

/// The status recorded for a client that went away (nginx's 499).
pub(crate) const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Whether a failed attempt may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The upstream may have seen (part of) the request: never replayed by
    /// the proxy on its own.
    No,
    /// The request never reached the upstream: no connection could be
    /// made, or writing its head failed (the upstream cannot have
    /// processed a request it did not receive whole).
    Unsent,
    /// A reused keep-alive connection turned out closed before any byte of
    /// an answer: the upstream had closed it, so the request was not
    /// processed, if it is idempotent and its body is buffered.
    IfReused,
}

/// A forwarded request that failed.
#[derive(Debug)]
pub(crate) struct ProxyError {
    kind: ErrorKind,
    /// After the response head: only the body's stream can fail now.
    after_head: bool,
    retry: Retry,
    /// An HTTP/2 upstream refused the stream (`REFUSED_STREAM`): it did
    /// not process the request (RFC 9113 §8.7).
    refused_stream: bool,
    detail: String,
}

impl ProxyError {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let retry = match kind {
            ErrorKind::UpstreamConnect => Retry::Unsent,
            _ => Retry::No,
        };
        Self {
            kind,
            after_head: false,
            retry,
            refused_stream: false,
            detail: detail.into(),
        }
    }

    /// The client went away.
    pub(crate) fn downstream_closed() -> Self {
        Self::new(
            ErrorKind::DownstreamClosed,
            "the client closed the connection",
        )
    }

    /// The upstream closed a connection before answering.
    pub(crate) fn upstream_closed(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::UpstreamClosed, detail)
    }

    pub(crate) fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Marks the failure as one of the response body's stream.
    pub(crate) fn in_body(mut self) -> Self {
        self.after_head = true;
        self.retry = Retry::No;
        self
    }

    pub(crate) fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn source(&self) -> ErrorSource {
        match self.kind.source() {
            ErrorSource::UpstreamHead if self.after_head => ErrorSource::UpstreamBody,
            s => s,
        }
    }

    pub(crate) fn retry(&self) -> Retry {
        self.retry
    }

    /// Marks an HTTP/2 stream the upstream refused.
    pub(crate) fn refused(mut self) -> Self {
        self.refused_stream = true;
        self
    }

    pub(crate) fn refused_stream(&self) -> bool {
        self.refused_stream
    }

    /// Some byte of the request may have reached the upstream.
    pub(crate) fn sent(&self) -> bool {
        self.retry != Retry::Unsent
    }

    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ProxyError {}

/// Errors a proxied body can end with.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The route timeout passed while the response body was still streaming.
#[derive(Debug, thiserror::Error)]
#[error("route timeout passed while streaming the response body")]
pub(crate) struct BodyTimeout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_status_reason_flag_and_source() {
        let connect = ProxyError::new(ErrorKind::UpstreamConnect, "refused");
        assert_eq!(connect.kind().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(connect.kind().reason(), "upstream_connect_error");
        assert_eq!(connect.kind().response_flag(), "UF");
        assert_eq!(connect.source(), ErrorSource::Connect);
        assert_eq!(connect.retry(), Retry::Unsent);

        let closed = ProxyError::upstream_closed("closed").with_retry(Retry::IfReused);
        assert_eq!(closed.kind().status(), StatusCode::SERVICE_UNAVAILABLE);
        let garbled = ProxyError::new(ErrorKind::UpstreamProtocol, "not HTTP");
        assert_eq!(garbled.kind().status(), StatusCode::BAD_GATEWAY);
        assert_eq!(closed.source(), ErrorSource::UpstreamHead);
        assert_eq!(closed.retry(), Retry::IfReused);
        let body = closed.in_body();
        assert_eq!(body.source(), ErrorSource::UpstreamBody);
        assert_eq!(body.retry(), Retry::No);

        let gone = ProxyError::downstream_closed();
        assert_eq!(gone.kind().status().as_u16(), 499);
        assert_eq!(gone.source(), ErrorSource::Downstream);
        assert_eq!(ErrorKind::Timeout.response_flag(), "UT");
        assert_eq!(ErrorKind::NoHealthyEndpoint.response_flag(), "UH");
    }
}
