//! The parsers of each header, pure functions of bytes. Anything that does
//! not match its grammar exactly is `None`: the caller replaces it.

use super::super::ids::{SpanId, TraceId};

/// The most `tracestate` members W3C lets a vendor forward.
pub(crate) const TRACESTATE_MAX_MEMBERS: usize = 32;
/// The longest `tracestate` kept (W3C: propagate at least 512 bytes).
pub(crate) const TRACESTATE_MAX_LEN: usize = 512;
/// The longest `x-request-id` kept; Envoy's own are 36 (a UUID).
pub const REQUEST_ID_MAX_LEN: usize = 128;

/// A parent context read from one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
}

/// A B3 sampling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum B3Sampling {
    Accept,
    Deny,
    Debug,
}

/// `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`. A later version is read
/// by its version-00 prefix when followed by `-` or the end (W3C's forward
/// compatibility); version `ff` and upper-case hex are invalid; zero ids are
/// invalid. Returns the parent and the sampled flag.
pub(crate) fn traceparent(v: &[u8]) -> Option<(Parent, bool)> {
    if v.len() < 55 {
        return None;
    }
    let version = u8::try_from(hex2(&v[0..2])?).ok()?;
    match version {
        0 if v.len() != 55 => return None,
        0xff => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::parse_hex(&v[3..35], true)?;
    let span_id = SpanId::parse_hex(&v[36..52], true)?;
    let flags = hex2(&v[53..55])?;
    Some((Parent { trace_id, span_id }, flags & 1 == 1))
}

fn hex2(v: &[u8]) -> Option<u16> {
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(u16::from(c - b'0')),
        b'a'..=b'f' => Some(u16::from(c - b'a' + 10)),
        _ => None,
    };
    Some(d(v[0])? << 4 | d(v[1])?)
}

/// `tracestate`, kept opaque: printable ASCII, at most 512 bytes and 32
/// non-empty members, each `key=value` with a non-empty key.
pub(crate) fn tracestate_ok(v: &[u8]) -> bool {
    if v.len() > TRACESTATE_MAX_LEN {
        return false;
    }
    if !v.iter().all(|&c| c == b'\t' || (0x20..0x7f).contains(&c)) {
        return false;
    }
    let mut members = 0;
    for m in v.split(|&c| c == b',') {
        let m = m.trim_ascii();
        if m.is_empty() {
            continue;
        }
        members += 1;
        match m.iter().position(|&c| c == b'=') {
            Some(i) if i > 0 => {}
            _ => return false,
        }
    }
    members <= TRACESTATE_MAX_MEMBERS
}

/// `x-b3-sampled`: `1`/`0`, and the older `true`/`false`.
pub(crate) fn b3_sampled(v: &[u8]) -> Option<B3Sampling> {
    match v {
        b"1" | b"true" => Some(B3Sampling::Accept),
        b"0" | b"false" => Some(B3Sampling::Deny),
        _ => None,
    }
}

/// The single `b3` header: `{trace}-{span}[-{sampling}[-{parent}]]`, or a
/// sampling state alone (`0`, `1`, `d`).
pub(crate) enum B3Single {
    Context(Parent, Option<B3Sampling>),
    SamplingOnly(B3Sampling),
}

pub(crate) fn b3_single(v: &[u8]) -> Option<B3Single> {
    let state = |s: &[u8]| match s {
        b"1" => Some(B3Sampling::Accept),
        b"0" => Some(B3Sampling::Deny),
        b"d" => Some(B3Sampling::Debug),
        _ => None,
    };
    if v.len() == 1 {
        return state(v).map(B3Single::SamplingOnly);
    }
    let mut parts = v.split(|&c| c == b'-');
    let trace_id = TraceId::parse_hex(parts.next()?, false)?;
    let span_id = SpanId::parse_hex(parts.next()?, false)?;
    let sampling = match parts.next() {
        None => None,
        Some(s) => Some(state(s)?),
    };
    if let Some(parent) = parts.next() {
        SpanId::parse_hex(parent, false)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3Single::Context(Parent { trace_id, span_id }, sampling))
}

/// A request id worth keeping: 1 to 128 visible ASCII characters (no
/// spaces, no control characters), so it is safe in logs and tags.
pub fn request_id_ok(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > REQUEST_ID_MAX_LEN {
        return false;
    }
    // No early exit, so the loop vectorizes: every request's id is checked.
    let bad = v
        .iter()
        .fold(false, |bad, &c| bad | !(0x21..0x7f).contains(&c));
    !bad
}
