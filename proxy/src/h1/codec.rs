//! HTTP/1.1 message heads and body framing (RFC 9112), strict where a lax
//! reading would let two parties disagree on where a message ends (request
//! smuggling):
//!
//! - `Transfer-Encoding` together with `Content-Length` in a request: 400;
//! - `Content-Length` values that differ, or are not plain digits: 400;
//! - a transfer coding other than exactly `chunked`: 501 (400 when `chunked`
//!   is not the final coding, or `Transfer-Encoding` comes in HTTP/1.0);
//! - chunk lines end in CRLF, never a bare LF; chunk sizes are hex digits
//!   that fit in 64 bits; extensions and trailers are bounded.
//!
//! Header values stay slices of the received head (`Bytes`), so building a
//! request's [`HeaderMap`] copies no value.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::mem::MaybeUninit;

use anymesh_core::routes::HeaderOps;

use crate::hop::is_hop_by_hop;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode, Uri, Version};

/// Largest request or response head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
pub(crate) const MAX_HEADERS: usize = 128;
/// Largest chunk extension or trailer section accepted.
const MAX_CHUNK_META: usize = 16 * 1024;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A head that cannot be accepted, with the status the peer gets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HeadError {
    #[error("message head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("message head has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed message head: {0}")]
    Malformed(String),
    #[error("ambiguous message framing: {0}")]
    Framing(&'static str),
    #[error("transfer coding {0:?} is not supported (only chunked)")]
    UnsupportedCoding(String),
    #[error("expectation {0:?} is not supported (only 100-continue)")]
    Expectation(String),
}

impl HeadError {
    /// The status a client gets for a request head with this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::Malformed(_) | HeadError::Framing(_) => StatusCode::BAD_REQUEST,
            HeadError::UnsupportedCoding(_) => StatusCode::NOT_IMPLEMENTED,
            HeadError::Expectation(_) => StatusCode::EXPECTATION_FAILED,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Method, URI, version and header fields, without `Content-Length` and
    /// `Transfer-Encoding` (the framing below replaces them).
    pub parts: Parts,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1 only).
    pub expect_continue: bool,
    /// The head exactly as received, for handing the connection to another server.
    pub raw: Bytes,
}

/// A parsed response head. Its fields are kept as received (ranges into
/// `raw`), and written on with [`write_response_head`] without building a
/// header map.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
    /// The head as received.
    raw: Bytes,
    /// Fields without `Transfer-Encoding`; `Content-Length` only for
    /// responses that have no body (HEAD, 304), where it describes another
    /// representation and is passed on unchanged.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl ResponseHead {
    /// The received fields, names as sent.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// The received fields, values as slices of the received head (no copy).
    pub(crate) fn shared_fields(&self) -> impl Iterator<Item = (&[u8], Bytes)> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], self.raw.slice(v.clone())))
    }

    /// The first value of a field.
    #[cfg(test)]
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Byte range of `part` inside `base` (both from the same buffer).
fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// What the framing-relevant fields of a head said.
#[derive(Default)]
struct FieldScan {
    content_length: Option<u64>,
    /// Transfer codings in order, lower-cased.
    codings: Vec<String>,
    has_te: bool,
    close: bool,
    keep_alive: bool,
    expect: Option<Range<usize>>,
}

impl FieldScan {
    fn content_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        // A list of identical values is tolerated (RFC 9110 §8.6); anything else is not.
        for item in value.split(|&b| b == b',') {
            let item = trim(item);
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Framing("content-length is not a number"));
            }
            let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match self.content_length {
                Some(prev) if prev != n => {
                    return Err(HeadError::Framing("content-length values differ"))
                }
                _ => self.content_length = Some(n),
            }
        }
        Ok(())
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        self.has_te = true;
        for item in value.split(|&b| b == b',') {
            let item = trim(item);
            if !item.is_empty() {
                self.codings
                    .push(String::from_utf8_lossy(item).to_ascii_lowercase());
            }
        }
    }

    fn connection(&mut self, value: &[u8]) {
        for item in value.split(|&b| b == b',') {
            let item = trim(item);
            if item.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if item.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }

    /// `Some(true)` when the codings are exactly `chunked`.
    fn chunked(&self) -> Option<bool> {
        if !self.has_te {
            return None;
        }
        Some(self.codings.len() == 1 && self.codings[0] == "chunked")
    }

    fn final_chunked(&self) -> bool {
        self.codings.last().is_some_and(|c| c == "chunked")
    }

    fn persistent(&self, version: Version) -> bool {
        if self.close {
            return false;
        }
        version == Version::HTTP_11 || self.keep_alive
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A field name of a received head, owned (the read buffer is split later).
fn owned_name(name: &[u8]) -> Result<HeaderName, HeadError> {
    HeaderName::from_bytes(name)
        .map_err(|_| HeadError::Malformed(format!("invalid field name {:?}", lossy(name))))
}

/// The header map of a head, sharing its bytes (no value is copied).
fn header_map(
    head: &Bytes,
    names: SmallVec<[(HeaderName, Range<usize>); 24]>,
) -> Result<HeaderMap, HeadError> {
    let mut map = HeaderMap::with_capacity(names.len());
    for (name, value) in names {
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| HeadError::Malformed(format!("invalid value of field {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        e => HeadError::Malformed(e.to_string()),
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: more bytes are
/// needed. On success the head is removed from `buf`; what follows it (body,
/// pipelined requests) stays.
pub(crate) fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(e)),
    };
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Malformed("unsupported HTTP version".into())),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method".into()))?;
    let base: &[u8] = buf;
    let path = range_in(base, req.path.unwrap_or_default().as_bytes());
    let mut scan = FieldScan::default();
    let mut kept: SmallVec<[(HeaderName, Range<usize>); 24]> = SmallVec::new();
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            scan.content_length(f.value)?;
            continue;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            scan.transfer_encoding(f.value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            scan.connection(f.value);
        } else if name.eq_ignore_ascii_case(b"expect") {
            scan.expect = Some(range_in(base, f.value));
        }
        kept.push((owned_name(name)?, range_in(base, f.value)));
    }
    let framing = match scan.chunked() {
        Some(_) if version == Version::HTTP_10 => {
            return Err(HeadError::Framing(
                "transfer-encoding in an HTTP/1.0 request",
            ))
        }
        Some(_) if scan.content_length.is_some() => {
            return Err(HeadError::Framing(
                "both content-length and transfer-encoding",
            ))
        }
        Some(true) => Framing::Chunked,
        Some(false) if !scan.final_chunked() => {
            return Err(HeadError::Framing(
                "transfer-encoding does not end in chunked",
            ))
        }
        Some(false) => return Err(HeadError::UnsupportedCoding(scan.codings.join(", "))),
        None => match scan.content_length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        },
    };
    let expect = scan.expect.clone();
    let keep_alive = scan.persistent(version);
    let raw = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(raw.slice(path))
        .map_err(|e| HeadError::Malformed(format!("invalid request target: {e}")))?;
    let headers = header_map(&raw, kept)?;
    let expect_continue = match expect {
        Some(r) if raw[r.clone()].eq_ignore_ascii_case(b"100-continue") => {
            version == Version::HTTP_11
        }
        Some(r) => return Err(HeadError::Expectation(lossy(&raw[r]))),
        None => false,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
        raw,
    }))
}

/// Parses the response head at the start of `buf` (a response to a HEAD
/// request when `head_request`). Interim (1xx) responses are returned like
/// any other; the caller skips them.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(e)),
    };
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Malformed("unsupported HTTP version".into())),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| HeadError::Malformed("invalid status code".into()))?;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let base: &[u8] = buf;
    let mut scan = FieldScan::default();
    let mut kept: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(resp.headers.len());
    for f in resp.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            scan.transfer_encoding(f.value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if bodiless {
                // Describes the GET representation (HEAD, 304): pass it on as it is.
                if status != StatusCode::NO_CONTENT && !status.is_informational() {
                    kept.push((range_in(base, name), range_in(base, f.value)));
                }
                continue;
            }
            scan.content_length(f.value)?;
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            scan.connection(f.value);
        }
        kept.push((range_in(base, name), range_in(base, f.value)));
    }
    let mut keep_alive = scan.persistent(version);
    let framing = if bodiless {
        Framing::None
    } else if scan.has_te {
        // Transfer-Encoding overrides Content-Length; such a connection is
        // not reused (RFC 9112 §6.3).
        if scan.content_length.is_some() {
            keep_alive = false;
        }
        match scan.chunked() {
            Some(true) => Framing::Chunked,
            _ if scan.final_chunked() => {
                return Err(HeadError::UnsupportedCoding(scan.codings.join(", ")))
            }
            _ => {
                keep_alive = false;
                Framing::Close
            }
        }
    } else if let Some(n) = scan.content_length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::Close
    };
    let raw = buf.split_to(len).freeze();
    Ok(Some(ResponseHead {
        status,
        framing,
        keep_alive,
        raw,
        fields: kept,
    }))
}

/// Writes the fields of `headers`, except the framing ones: the framing
/// written beside them is the only one (a header operation naming
/// `content-length` must not contradict it).
fn write_fields(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn write_framing(out: &mut BytesMut, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
}

/// `fmt::Write` over a `BytesMut`.
struct Fmt<'a>(&'a mut BytesMut);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Writes an HTTP/1.1 request head for `parts` (origin-form URI expected).
pub(crate) fn write_request_head(out: &mut BytesMut, parts: &Parts, framing: Framing) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, &parts.headers);
    write_framing(out, framing);
    out.extend_from_slice(b"\r\n");
}

/// Writes the head of a proxied response: the upstream's fields as received,
/// minus hop-by-hop ones (and those its `Connection` names), with the route's
/// header operations applied in order and `extra` (a `Set-Cookie`) appended.
pub(crate) fn write_proxied_response_head(
    out: &mut BytesMut,
    head: &ResponseHead,
    ops: &[&HeaderOps],
    extra: Option<(&HeaderName, &HeaderValue)>,
    framing: Framing,
    close: bool,
) {
    write_status_line(out, head.status);
    if ops.is_empty() && extra.is_none() {
        // Kept fields go out as received, one copy per run of adjacent lines.
        head.kept_lines(|lines| out.extend_from_slice(lines));
    } else {
        proxied_fields(head, ops, extra, |name, value| {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        });
    }
    write_framing(out, framing);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The fields of a proxied response, in order, framing fields aside: the
/// upstream's as received (names as sent), minus hop-by-hop ones (and those
/// its `Connection` names), with the route's header operations applied in
/// order and `extra` (a `Set-Cookie`) appended.
pub(crate) fn proxied_fields(
    head: &ResponseHead,
    ops: &[&HeaderOps],
    extra: Option<(&HeaderName, &HeaderValue)>,
    mut emit: impl FnMut(&[u8], &[u8]),
) {
    let hop = hop_by_hop(head);
    // Names the operations replace or remove: received fields with them go.
    let replaced = |name: &[u8]| {
        ops.iter().any(|o| {
            o.set
                .iter()
                .any(|(n, _)| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
                || o.remove
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
        })
    };
    for (name, value) in head.fields() {
        if hop(name) || (!ops.is_empty() && replaced(name)) {
            continue;
        }
        emit(name, value);
    }
    if ops.is_empty() && extra.is_none() {
        return;
    }
    // The operations' own fields, as HeaderOps::apply would leave them.
    let mut added: Vec<(&HeaderName, &HeaderValue)> = Vec::new();
    for o in ops {
        for (n, v) in &o.set {
            added.retain(|(a, _)| *a != n);
            added.push((n, v));
        }
        added.extend(o.add.iter().map(|(n, v)| (n, v)));
        for n in &o.remove {
            added.retain(|(a, _)| *a != n);
        }
    }
    for (name, value) in added.into_iter().chain(extra) {
        if *name == header::CONTENT_LENGTH || is_hop_by_hop(name.as_str().as_bytes()) {
            continue;
        }
        emit(name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Whether a received field of `head` belongs to the connection only: a
/// hop-by-hop name, or one its `Connection` field names.
fn hop_by_hop(head: &ResponseHead) -> impl Fn(&[u8]) -> bool + '_ {
    // The names `Connection` adds to the fixed list (usually none but
    // `close`: its usual tokens are `keep-alive` and `close`).
    let named: SmallVec<[&[u8]; 4]> = head
        .fields()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty() && !is_hop_by_hop(t))
        .collect();
    move |name: &[u8]| is_hop_by_hop(name) || named.iter().any(|t| t.eq_ignore_ascii_case(name))
}

impl ResponseHead {
    /// The received fields that are passed on unchanged (no header
    /// operations), as runs of adjacent lines of the received head: each
    /// slice is whole `name: value\r\n` lines, copied as they came.
    fn kept_lines(&self, mut emit: impl FnMut(&[u8])) {
        let hop = hop_by_hop(self);
        let raw = &self.raw[..];
        // A run ends with its CRLF, taken from the head when it is there.
        let mut flush = |r: Range<usize>| match raw.get(r.end..r.end + 2) {
            Some(b"\r\n") => emit(&raw[r.start..r.end + 2]),
            _ => {
                emit(&raw[r]);
                emit(b"\r\n");
            }
        };
        // The run being gathered: from its first name to its last value.
        let mut run: Option<Range<usize>> = None;
        for (n, v) in &self.fields {
            if hop(&raw[n.clone()]) {
                continue;
            }
            run = match run {
                // The field's line starts right after the run's CRLF.
                Some(r) if n.start == r.end + 2 && &raw[r.end..n.start] == b"\r\n" => {
                    Some(r.start..v.end)
                }
                Some(r) => {
                    flush(r);
                    Some(n.start..v.end)
                }
                None => Some(n.start..v.end),
            };
        }
        if let Some(r) = run {
            flush(r);
        }
    }
}

/// Writes an HTTP/1.1 response head. `close` adds `connection: close`.
pub(crate) fn write_response_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
) {
    write_status_line(out, status);
    write_fields(out, headers);
    write_framing(out, framing);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_status_line(out: &mut BytesMut, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Frames `data` as one chunk.
pub(crate) fn write_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(Fmt(out), "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A malformed chunked body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body: {0}")]
pub(crate) struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    Size,
    /// After the size: optional whitespace, then `;` extensions, then CRLF.
    Ext,
    /// Saw CR at the end of a size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf,
    /// Saw CR at the start of a line: the end of the trailer section.
    EndLf,
    Done,
}

/// Decodes a chunked body incrementally.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u8,
    meta: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        Self {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            meta: 0,
        }
    }

    /// The last chunk and the trailer section have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, calling `on_data` for each piece of body data.
    /// Returns the number of bytes consumed: all of `input`, or up to the end
    /// of the body (what follows belongs to the next message).
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        use ChunkState as S;
        let mut i = 0;
        while i < input.len() && self.state != S::Done {
            let b = input[i];
            match self.state {
                S::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.size) as usize;
                    on_data(&input[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = S::DataCr;
                    }
                    continue;
                }
                S::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size = (self.size << 4) | u64::from(d);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => return Err(ChunkError("chunk size missing")),
                    b'\r' => self.state = S::SizeLf,
                    b' ' | b'\t' | b';' => {
                        self.state = S::Ext;
                        self.meta = 0;
                    }
                    _ => return Err(ChunkError("invalid character in chunk size")),
                },
                S::Ext => match b {
                    b'\r' => self.state = S::SizeLf,
                    b'\n' => return Err(ChunkError("bare LF in chunk line")),
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {
                        self.meta += 1;
                        if self.meta > MAX_CHUNK_META {
                            return Err(ChunkError("chunk extension too long"));
                        }
                    }
                    _ => return Err(ChunkError("control character in chunk extension")),
                },
                S::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = S::TrailerStart;
                        self.meta = 0;
                    } else {
                        self.state = S::Data;
                    }
                }
                S::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    self.state = S::DataLf;
                }
                S::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    self.state = S::Size;
                }
                S::TrailerStart => match b {
                    b'\r' => self.state = S::EndLf,
                    b'\n' => return Err(ChunkError("bare LF in trailer section")),
                    _ => {
                        self.state = S::Trailer;
                        continue;
                    }
                },
                S::Trailer => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(ChunkError("trailer section too long"));
                    }
                    match b {
                        b'\r' => self.state = S::TrailerLf,
                        b'\n' => return Err(ChunkError("bare LF in trailer section")),
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError("control character in trailer")),
                    }
                }
                S::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("trailer line not ended by CRLF"));
                    }
                    self.state = S::TrailerStart;
                }
                S::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunked body not ended by CRLF"));
                    }
                    self.state = S::Done;
                }
                S::Done => {}
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
