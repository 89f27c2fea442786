//! The hash key of a request for consistent hashing.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use anymesh_core::routes::HashKey;
use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

use super::weights::random_u64;
use super::PickContext;

/// The request's key hash (`None`: the request has no key), and a
/// `Set-Cookie` value when a hash cookie was issued for this request.
pub(super) fn hash(key: &HashKey, ctx: &PickContext<'_>) -> (Option<u64>, Option<HeaderValue>) {
    match key {
        HashKey::Header(name) => (header(ctx.headers, name), None),
        HashKey::Cookie { name, path, ttl } => match cookie(ctx.headers, name) {
            Some(value) => (Some(xxh3_64(value)), None),
            None => match ttl {
                Some(ttl) => {
                    let (hash, set_cookie) = issue_cookie(name, path.as_deref(), *ttl);
                    (Some(hash), set_cookie)
                }
                None => (None, None),
            },
        },
        HashKey::SourceIp => (ctx.source_ip.map(ip), None),
        HashKey::QueryParam(name) => (
            ctx.query
                .and_then(|q| query_param(q, name))
                .map(|v| xxh3_64(v.as_bytes())),
            None,
        ),
    }
}

/// Hash of every value of a header, joined with `,` when it is repeated.
fn header(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(xxh3_64(first.as_bytes()));
    };
    // Streaming xxh3 equals one-shot xxh3 of the concatenation.
    let mut h = Xxh3Default::new();
    h.update(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        h.update(b",");
        h.update(v.as_bytes());
    }
    Some(h.digest())
}

/// The value of the first cookie named `name` in the `Cookie` headers, with
/// surrounding double quotes removed.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            (k.trim_ascii() == name.as_bytes()).then(|| unquote(v.trim_ascii()))
        })
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// A fresh random cookie value (128 bits, hex), its hash, and the
/// `Set-Cookie` header issuing it: `name=value; Path=path; Max-Age=secs;
/// HttpOnly`. A zero ttl makes a session cookie (no `Max-Age`), as in Envoy.
/// A name that cannot appear in a header still gets a hash, but no cookie.
fn issue_cookie(name: &str, path: Option<&str>, ttl: Duration) -> (u64, Option<HeaderValue>) {
    let value = format!("{:016x}{:016x}", random_u64(), random_u64());
    let hash = xxh3_64(value.as_bytes());
    let mut header = Vec::with_capacity(name.len() + value.len() + 64);
    // Writing into a Vec cannot fail.
    let _ = write!(header, "{name}={value}");
    if let Some(path) = path {
        let _ = write!(header, "; Path={path}");
    }
    if !ttl.is_zero() {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let _ = write!(header, "; Max-Age={secs}");
    }
    header.extend_from_slice(b"; HttpOnly");
    (hash, HeaderValue::from_bytes(&header).ok())
}

/// The value of the first `name=value` pair in a query string (as sent, not
/// percent-decoded); a bare `name` counts as an empty value.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Hash of an address; an IPv4-mapped IPv6 address hashes as its IPv4 form.
fn ip(addr: IpAddr) -> u64 {
    match addr.to_canonical() {
        IpAddr::V4(v4) => xxh3_64(&v4.octets()),
        IpAddr::V6(v6) => xxh3_64(&v6.octets()),
    }
}
