//! The mirrored request as it goes upstream: the client's head with
//! hop-by-hop fields removed, the route's request header operations and
//! rewrite applied (as the primary gets them, and as Envoy's shadow copies
//! them; the chosen destination's own header operations are the
//! primary's alone), the authority kept (or suffixed `-shadow`), framed
//! for the mirror cluster's protocol.

use anymesh_core::routes::RouteHit;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Uri, Version};

use crate::body::request::RequestBody;
use crate::h1::codec::{self, Framing};
use crate::hop;
use crate::upstream::idempotent;

/// A mirrored request ready to send.
pub(super) enum Outgoing {
    /// To an HTTP/1.1 upstream: the encoded head with the body after it.
    H1 {
        bytes: Bytes,
        head_request: bool,
        /// May go again on a new connection when a reused one turns out
        /// closed before answering (idempotent; the body is in `bytes`).
        replayable: bool,
    },
    /// To an HTTP/2 upstream (prior knowledge); boxed, as the body type is large.
    H2(Box<Request<RequestBody>>),
}

/// Builds the mirrored request from the client's head as received.
pub(super) fn build(
    head: &Parts,
    hit: RouteHit<'_>,
    h2: bool,
    shadow: bool,
    body: Option<&Bytes>,
) -> Result<Outgoing, String> {
    let route = hit.route;
    let mut headers = head.headers.clone();
    hop::strip(&mut headers, h2);
    if !h2 && head.version == Version::HTTP_2 {
        hop::join_cookies(&mut headers);
    }
    route.request_headers.apply(&mut headers);
    headers.remove(CONTENT_LENGTH);

    // The primary's rule, applied the same way.
    let path = crate::forward::plan::rewritten_path(route, hit.matched, &head.uri)?;
    let authority = match route.rewrite.as_ref().and_then(|r| r.authority.as_deref()) {
        Some(a) => a,
        None => authority(head)?,
    };
    let authority = if shadow {
        shadowed(authority)
    } else {
        authority.to_string()
    };
    let body = body.filter(|b| !b.is_empty());
    let mut parts = Request::new(()).into_parts().0;
    parts.method = head.method.clone();
    if h2 {
        let authority =
            Authority::try_from(authority).map_err(|e| format!("invalid authority: {e}"))?;
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| format!("invalid URI: {e}"))?;
        parts.version = Version::HTTP_2;
        headers.remove(HOST);
        if let Some(b) = body {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        parts.headers = headers;
        let body = RequestBody::Full(body.cloned());
        return Ok(Outgoing::H2(Box::new(Request::from_parts(parts, body))));
    }
    let host = HeaderValue::try_from(authority).map_err(|e| format!("invalid authority: {e}"))?;
    headers.insert(HOST, host);
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    // Without a body, framed as the primary's bodiless requests are.
    let framing = body.map_or(Framing::None, |b| Framing::Length(b.len() as u64));
    let mut bytes = BytesMut::with_capacity(512 + body.map_or(0, Bytes::len));
    codec::write_request_head(&mut bytes, &parts, framing);
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    Ok(Outgoing::H1 {
        bytes: bytes.freeze(),
        head_request: head.method == Method::HEAD,
        replayable: idempotent(&head.method),
    })
}

/// The authority the client asked for: the absolute URI's, else `Host`.
fn authority(head: &Parts) -> Result<&str, String> {
    if let Some(a) = head.uri.authority() {
        return Ok(a.as_str());
    }
    head.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no authority".to_string())
}

/// `-shadow` appended to the host part: `reviews:9080` →
/// `reviews-shadow:9080` (Envoy's suffix, before the port).
pub(super) fn shadowed(authority: &str) -> String {
    let split = if authority.starts_with('[') {
        authority.find(']').map(|end| end + 1)
    } else {
        authority
            .rfind(':')
            .filter(|&i| authority[i + 1..].bytes().all(|b| b.is_ascii_digit()))
    };
    let (host, port) = authority.split_at(split.unwrap_or(authority.len()));
    format!("{host}-shadow{port}")
}
