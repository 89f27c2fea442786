//! Hop-by-hop header handling (RFC 9110 §7.6.1).
//!
//! A proxy removes the fields named in `Connection`, plus the connection-level
//! fields every implementation knows, before forwarding in either direction.

use http::header::{self, HeaderMap, HeaderName};

/// Whether a field belongs to one connection and is never passed on
/// (RFC 9110 §7.6.1: `Connection` and the fields every implementation
/// knows to be connection-level; `Proxy-Authorization` is credentials for
/// this proxy, `Proxy-Authenticate` a challenge from one), or is a framing
/// field the proxy writes itself (`Transfer-Encoding`, `Trailer`). The one
/// list, for both protocols and both directions: the HTTP/1.1 codec checks
/// received bytes with it, [`strip`] header maps. Sorted out by length
/// first; any case matches.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |h: &[u8]| name.eq_ignore_ascii_case(h);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// The part of [`is_hop_by_hop`]'s list that HTTP/2 forbids in a message
/// outright (RFC 9113 §8.2.2: a request carrying one is malformed; `TE` is
/// allowed with `trailers` only, and the proxy-authentication fields and
/// `Trailer` are ordinary fields there). `name` is lowercase, as HTTP/2
/// field names are.
pub(crate) fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Removes hop-by-hop fields. `keep_te_trailers` keeps `TE: trailers` (gRPC needs it end to end).
pub(crate) fn strip(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // One pass over the names; most messages have none or only `connection`.
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k.as_str().as_bytes()))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    // Fields named by Connection; names we cannot parse are ignored.
    for v in headers.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for name in v.split(',') {
            let name = name.trim();
            // `close` is an option, not a field; listed names are removed already.
            if name.eq_ignore_ascii_case("close") || is_hop_by_hop(name.as_bytes()) {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                present.push(n);
            }
        }
    }
    let te_trailers = keep_te_trailers
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    for name in present {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// HTTP/2 allows `cookie` split over several fields; HTTP/1.1 needs one,
/// joined with `; ` (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = http::HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_listed_and_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Custom, bad header"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn connection_specific_fields_are_hop_by_hop_ones() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_connection_specific(name.as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in ["te", "trailer", "proxy-authorization", "x-custom"] {
            assert!(!is_connection_specific(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn joins_split_cookies() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut one = HeaderMap::new();
        one.insert("cookie", HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        strip(&mut h, true);
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip"));
        strip(&mut h, true);
        assert!(!h.contains_key("te"));
    }
}
