//! Request validation (RFC 9113, 8): a request's decoded fields become a
//! request head, or the reason it is malformed.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};

use super::hpack::{Field, Pseudo};
use super::limits::MAX_HEADER_LIST;
use crate::hop::is_connection_specific;

/// A field value that starts or ends with whitespace (SP or HTAB), which
/// makes a request malformed (RFC 9113, 8.2.1).
fn padded(value: &[u8]) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    value.first().is_some_and(ws) || value.last().is_some_and(ws)
}

const PADDED_VALUE: &str = "field value with whitespace at an end";

/// A request's fields as they are decoded.
#[derive(Default)]
pub(super) struct Fields {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    pub(super) headers: HeaderMap,
    /// Any pseudo-header (trailers must have none).
    pub(super) pseudo_seen: bool,
    regular_seen: bool,
    /// Why the request is malformed, if it is.
    pub(super) malformed: Option<&'static str>,
    /// The header list size (RFC 9113, 6.5.2).
    pub(super) size: usize,
}

impl Fields {
    pub(super) fn add(&mut self, f: Field) {
        if self.size > MAX_HEADER_LIST {
            // Decoding goes on for the table's sake; nothing more is kept.
            return;
        }
        match f {
            Field::Pseudo(p, v) => {
                self.size += v.len() + 32 + 8;
                self.pseudo_seen = true;
                if padded(&v) {
                    self.malformed.get_or_insert(PADDED_VALUE);
                }
                if self.regular_seen {
                    self.malformed
                        .get_or_insert("pseudo-header after a regular field");
                }
                let slot = match p {
                    Pseudo::Method => &mut self.method,
                    Pseudo::Scheme => &mut self.scheme,
                    Pseudo::Authority => &mut self.authority,
                    Pseudo::Path => &mut self.path,
                    Pseudo::Other => {
                        self.malformed
                            .get_or_insert("unknown or response pseudo-header");
                        return;
                    }
                };
                if slot.is_some() {
                    self.malformed.get_or_insert("repeated pseudo-header");
                }
                *slot = Some(v);
            }
            Field::Header(n, v) => {
                self.size += n.as_str().len() + v.len() + 32;
                self.regular_seen = true;
                if padded(v.as_bytes()) {
                    self.malformed.get_or_insert(PADDED_VALUE);
                } else if is_connection_specific(n.as_str().as_bytes()) {
                    self.malformed.get_or_insert("connection-specific field");
                } else if n == header::TE && v != "trailers" {
                    self.malformed.get_or_insert("TE other than \"trailers\"");
                }
                self.headers.append(n, v);
            }
            Field::Malformed(why) => {
                self.malformed.get_or_insert(why);
            }
        }
    }

    /// The request head, and its declared `content-length`.
    pub(super) fn request(mut self) -> Result<(Request<()>, Option<u64>), &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        let method = self.method.ok_or("no :method")?;
        let method = Method::from_bytes(&method).map_err(|_| "invalid :method")?;
        let mut parts = uri::Parts::default();
        if let Some(a) = self.authority {
            parts.authority =
                Some(Authority::from_maybe_shared(a).map_err(|_| "invalid :authority")?);
        }
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() || parts.authority.is_none() {
                return Err("CONNECT needs :authority only");
            }
        } else {
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            if path.is_empty() {
                return Err("empty :path");
            }
            let scheme = match &scheme[..] {
                b"http" => Scheme::HTTP,
                b"https" => Scheme::HTTPS,
                other => Scheme::try_from(other).map_err(|_| "invalid :scheme")?,
            };
            // A URI cannot have a scheme without an authority: the scheme is
            // dropped then, and the Host field names the target.
            if parts.authority.is_some() {
                parts.scheme = Some(scheme);
            }
            parts.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "invalid :path")?);
        }
        let uri = Uri::from_parts(parts).map_err(|_| "invalid request target")?;
        let expect_len = content_length(&self.headers)?;
        // Cookie crumbs become one field for HTTP/1.1 upstreams (RFC 9113, 8.2.3).
        if self.headers.get_all(header::COOKIE).iter().nth(1).is_some() {
            let joined: Vec<u8> = self
                .headers
                .get_all(header::COOKIE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect::<Vec<_>>()
                .join(&b"; "[..]);
            let v = HeaderValue::from_bytes(&joined).map_err(|_| "invalid cookie")?;
            self.headers.insert(header::COOKIE, v);
        }
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = self.headers;
        Ok((req, expect_len))
    }
}

/// The declared `content-length`; several fields must agree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("invalid content-length")?;
        if found.is_some_and(|f| f != n) {
            return Err("conflicting content-length");
        }
        found = Some(n);
    }
    Ok(found)
}
