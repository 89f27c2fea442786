//! Local replies: responses the proxy makes itself, with a short body that
//! says which host or route and why, and an `x-anymesh-reason` header.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// Why the proxy answered instead of an upstream. One place maps each to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No virtual host for the authority.
    NoRoute,
    /// A virtual host, but no route matched.
    NoRouteMatch,
    /// The cluster has no eligible endpoint.
    NoHealthyEndpoint,
    /// Connecting to the upstream failed.
    UpstreamConnect,
    /// The upstream failed after connecting (reset, protocol error).
    UpstreamError,
    /// The route timeout elapsed before response headers arrived.
    Timeout,
    /// The request itself is unusable (no authority, bad URI).
    BadRequest,
    /// A kind of request the proxy does not serve (CONNECT, protocol upgrades).
    Unsupported,
    /// Registries have not all answered yet and the host is not known.
    NotReady,
}

impl Reason {
    pub fn status(self) -> StatusCode {
        match self {
            Reason::NoRoute | Reason::NoRouteMatch => StatusCode::NOT_FOUND,
            Reason::NoHealthyEndpoint | Reason::UpstreamConnect | Reason::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reason::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Reason::UpstreamError => StatusCode::BAD_GATEWAY,
            Reason::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no_route",
            Reason::NoRouteMatch => "no_route_match",
            Reason::NoHealthyEndpoint => "no_healthy_endpoint",
            Reason::UpstreamConnect => "upstream_connect_error",
            Reason::UpstreamError => "upstream_error",
            Reason::Timeout => "upstream_timeout",
            Reason::BadRequest => "bad_request",
            Reason::Unsupported => "unsupported",
            Reason::NotReady => "not_ready",
        }
    }
}

/// Builds a local reply with a plain-text body ending in a newline.
pub fn local(reason: Reason, message: impl Into<String>) -> Response<ProxyBody> {
    let mut body = message.into();
    body.insert_str(0, "anymesh: ");
    body.push('\n');
    let mut resp = Response::new(ProxyBody::local(body));
    *resp.status_mut() = reason.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-anymesh-reason",
        HeaderValue::from_static(reason.as_str()),
    );
    resp
}
