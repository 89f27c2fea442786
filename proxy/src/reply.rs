//! Local replies: responses the proxy makes itself, with a short body that
//! says which host or route and why, and an `x-anymesh-reason` header. The
//! status and the reason come from the [`ErrorKind`], in one place.

use http::{header, HeaderValue, Response};

use crate::body::response::ProxyBody;
use crate::error::ErrorKind;

/// Builds a local reply with a plain-text body ending in a newline.
pub(crate) fn local(kind: ErrorKind, message: impl Into<String>) -> Response<ProxyBody> {
    let mut body = message.into();
    // Policy refusals carry Envoy's bodies as they are ("RBAC: access
    // denied", "Jwt is expired"): clients and tests match them.
    if !matches!(kind, ErrorKind::Unauthenticated | ErrorKind::Forbidden) {
        body.insert_str(0, "anymesh: ");
        body.push('\n');
    }
    let mut resp = Response::new(ProxyBody::local(body));
    *resp.status_mut() = kind.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-anymesh-reason", HeaderValue::from_static(kind.reason()));
    if kind == ErrorKind::Overflow {
        // Envoy's mark of a request refused by a circuit breaker.
        h.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    resp
}
