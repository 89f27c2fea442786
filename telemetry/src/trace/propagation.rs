//! Trace context propagation: W3C `traceparent`/`tracestate`, B3 (the
//! `x-b3-*` headers and the single `b3` header) and `x-request-id`.
//!
//! At the start of a request the proxy calls [`TraceContext::extract`]; the
//! [`Sampler`](super::Sampler) decides; [`Extracted::start`] opens this
//! hop's span (a new span id whose parent is the incoming span); [`inject`]
//! writes that span into the upstream request's headers.
//!
//! # What is read
//! - When several formats came in, the first valid one in the order
//!   `traceparent`, `b3`, `x-b3-*` gives the trace: W3C first because it is
//!   the standard that both OpenTelemetry and Envoy's OpenTelemetry tracer
//!   speak, then B3 single before multi as Envoy's Zipkin tracer reads them.
//!   The others are rewritten from it, so formats that disagreed agree
//!   downstream.
//! - A value that does not match its grammar exactly (zero ids, upper-case
//!   W3C hex, version `ff`, a wrong length, a header sent twice) is ignored
//!   and replaced on the upstream request, never forwarded.
//! - `tracestate` is kept opaque when `traceparent` was valid and it has at
//!   most 32 members and 512 bytes of printable ASCII; else it is dropped.
//! - `x-request-id` is kept when it is 1 to 128 visible ASCII characters;
//!   otherwise a UUID v4 replaces it (Envoy generates one when absent too).
//!
//! # What is written
//! Always `traceparent` and the B3 multi headers (`x-b3-traceid`,
//! `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags` when
//! debug), since Istio's default tracer (Envoy's Zipkin tracer) propagates
//! B3 multi and Envoy's OpenTelemetry tracer propagates `traceparent` and
//! `tracestate`: a mesh mixing either with anymesh keeps one trace. The
//! single `b3` header is written when one came in, `tracestate` when it was
//! kept. Unlike Envoy's Zipkin tracer with `shared_span_context`, the
//! server span gets its own span id (OpenTelemetry's model), so every hop
//! is a parent/child link.
//!
//! An unsampled request writes the same headers (flags `00`,
//! `x-b3-sampled: 0`). Envoy's Zipkin tracer would honour
//! `x-b3-sampled: 0` alone (it reads the sampling state apart from the ids
//! and starts an unsampled root without them), which would save two
//! inserts, but Envoy itself writes the B3 ids on unsampled requests and
//! the B3 spec asks that established ids go with a deny decision (they tag
//! logs), so a team moving from Istio keeps them.

mod parse;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;

use super::ids::{self, SpanId, TraceId};
pub use parse::{request_id_ok, REQUEST_ID_MAX_LEN};
use parse::{B3Sampling, B3Single, Parent};

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub(crate) const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub(crate) const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub(crate) const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub(crate) const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub(crate) const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub(crate) const B3: HeaderName = HeaderName::from_static("b3");
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which trace formats came in valid (and so are read, then written back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_multi: bool,
    pub b3_single: bool,
}

// Bits of the headers that were present at all, valid or not.
const SEEN_TRACEPARENT: u16 = 1;
const SEEN_TRACESTATE: u16 = 1 << 1;
const SEEN_B3_TRACE: u16 = 1 << 2;
const SEEN_B3_SPAN: u16 = 1 << 3;
const SEEN_B3_PARENT: u16 = 1 << 4;
const SEEN_B3_SAMPLED: u16 = 1 << 5;
const SEEN_B3_FLAGS: u16 = 1 << 6;
const SEEN_B3: u16 = 1 << 7;
const SEEN_REQUEST_ID: u16 = 1 << 8;
const SEEN_FORCE: u16 = 1 << 9;

/// The `SEEN_*` bit of a header name, 0 for the others. Dispatches on the
/// length first: of a usual request's headers only those of length 10, 11,
/// 12 and 17 are compared at all, each against one to three names.
#[inline]
fn classify(name: &HeaderName) -> u16 {
    let n = name.as_str().as_bytes();
    match n.len() {
        2 if n == b"b3" => SEEN_B3,
        10 if n == b"tracestate" => SEEN_TRACESTATE,
        10 if n == b"x-b3-flags" => SEEN_B3_FLAGS,
        11 if n == b"traceparent" => SEEN_TRACEPARENT,
        11 if n == b"x-b3-spanid" => SEEN_B3_SPAN,
        12 if n == b"x-b3-traceid" => SEEN_B3_TRACE,
        12 if n == b"x-b3-sampled" => SEEN_B3_SAMPLED,
        12 if n == b"x-request-id" => SEEN_REQUEST_ID,
        17 if n == b"x-b3-parentspanid" => SEEN_B3_PARENT,
        19 if n == b"x-envoy-force-trace" => SEEN_FORCE,
        _ => 0,
    }
}

/// What the request's headers said, checked: the result of
/// [`TraceContext::extract`].
#[derive(Clone, Debug)]
pub struct Extracted {
    parent: Option<Parent>,
    /// The incoming sampling decision, if one came.
    hint: Option<bool>,
    debug: bool,
    formats: Formats,
    seen: u16,
    /// Headers that came more than once where one is allowed.
    repeated: u16,
    tracestate: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
}

/// The request id of a span: the valid one that came in, or one made here.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RequestId {
    Kept(HeaderValue),
    Generated([u8; 36]),
}

/// This hop's span context: the trace, this span's id, its parent (the
/// incoming span), the sampling decision and what to propagate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub sampled: bool,
    /// B3 debug (`x-b3-flags: 1`, `b3: …-d`), propagated as such.
    pub debug: bool,
    formats: Formats,
    seen: u16,
    tracestate: Option<HeaderValue>,
    request_id: RequestId,
}

impl Extracted {
    /// The incoming trace and span ids, when a valid context came in.
    pub fn parent(&self) -> Option<(TraceId, SpanId)> {
        self.parent.map(|p| (p.trace_id, p.span_id))
    }

    /// The sampling decision that came with the request, if any.
    pub fn sampled_hint(&self) -> Option<bool> {
        self.hint
    }

    /// B3 debug or `x-envoy-force-trace`: sample whatever the rate.
    pub fn forced(&self) -> bool {
        self.debug || self.seen & SEEN_FORCE != 0
    }

    pub fn formats(&self) -> Formats {
        self.formats
    }

    /// Whether a trace header came in but was refused (malformed, hostile,
    /// repeated); it is replaced on the upstream request.
    pub fn rejected_any(&self) -> bool {
        let seen = |bit| self.seen & bit != 0;
        (seen(SEEN_TRACEPARENT) && !self.formats.w3c)
            || (seen(SEEN_B3) && !self.formats.b3_single)
            || (seen(SEEN_B3_TRACE | SEEN_B3_SPAN) && !self.formats.b3_multi)
            || (seen(SEEN_TRACESTATE) && self.formats.w3c && self.tracestate.is_none())
            || (seen(SEEN_REQUEST_ID) && self.request_id.is_none())
            || self.repeated != 0
    }

    /// The valid incoming request id, if any.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }

    /// Opens this hop's span: a new span id, the parent and trace of the
    /// incoming context (or a new trace), the decision, and the request id
    /// (a UUID v4 from `rng` when none valid came in).
    pub fn start<R: RngCore + ?Sized>(self, sampled: bool, rng: &mut R) -> TraceContext {
        let trace_id = match self.parent {
            Some(p) => p.trace_id,
            None => TraceId::random(rng),
        };
        let request_id = match self.request_id {
            Some(v) => RequestId::Kept(v),
            None => RequestId::Generated(ids::uuid_v4(rng.next_u64(), rng.next_u64())),
        };
        TraceContext {
            trace_id,
            span_id: SpanId::random(rng),
            parent_span_id: self.parent.map(|p| p.span_id),
            sampled,
            debug: self.debug,
            formats: self.formats,
            seen: self.seen,
            tracestate: self.tracestate,
            request_id,
        }
    }
}

/// The headers of one request that matter here, borrowed.
#[derive(Default)]
struct Raw<'a> {
    traceparent: Option<&'a HeaderValue>,
    tracestate: Option<&'a HeaderValue>,
    b3_trace: Option<&'a HeaderValue>,
    b3_span: Option<&'a HeaderValue>,
    b3_parent: Option<&'a HeaderValue>,
    b3_sampled: Option<&'a HeaderValue>,
    b3_flags: Option<&'a HeaderValue>,
    b3: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
    seen: u16,
    repeated: u16,
}

impl<'a> Raw<'a> {
    /// One pass over the headers (cheaper than ten hashed look-ups for the
    /// usual dozen headers).
    fn scan(headers: &'a HeaderMap) -> Self {
        let mut raw = Raw::default();
        for (name, value) in headers {
            let bit = classify(name);
            if bit == 0 {
                continue;
            }
            let slot = match bit {
                SEEN_TRACEPARENT => &mut raw.traceparent,
                SEEN_TRACESTATE => &mut raw.tracestate,
                SEEN_B3_TRACE => &mut raw.b3_trace,
                SEEN_B3_SPAN => &mut raw.b3_span,
                SEEN_B3_PARENT => &mut raw.b3_parent,
                SEEN_B3_SAMPLED => &mut raw.b3_sampled,
                SEEN_B3_FLAGS => &mut raw.b3_flags,
                SEEN_B3 => &mut raw.b3,
                SEEN_REQUEST_ID => &mut raw.request_id,
                _ => {
                    raw.seen |= bit;
                    continue;
                }
            };
            if raw.seen & bit != 0 {
                raw.repeated |= bit;
            }
            raw.seen |= bit;
            *slot = Some(value);
        }
        raw
    }

    fn once(&self, v: Option<&'a HeaderValue>, bit: u16) -> Option<&'a [u8]> {
        if self.repeated & bit != 0 {
            return None;
        }
        v.map(HeaderValue::as_bytes)
    }
}

fn sampling_of(s: B3Sampling) -> (bool, bool) {
    match s {
        B3Sampling::Accept => (true, false),
        B3Sampling::Deny => (false, false),
        B3Sampling::Debug => (true, true),
    }
}

impl TraceContext {
    /// Reads and checks the trace headers of a request. Allocates nothing
    /// unless several `tracestate` lines have to be joined.
    pub fn extract(headers: &HeaderMap) -> Extracted {
        let raw = Raw::scan(headers);
        let mut formats = Formats::default();
        let mut parent = None;
        let mut hint = None;
        let mut debug = false;

        let w3c = raw
            .once(raw.traceparent, SEEN_TRACEPARENT)
            .and_then(parse::traceparent);
        if let Some((p, sampled)) = w3c {
            formats.w3c = true;
            parent = Some(p);
            hint = Some(sampled);
        }

        match raw.once(raw.b3, SEEN_B3).and_then(parse::b3_single) {
            Some(B3Single::Context(p, sampling)) => {
                formats.b3_single = true;
                if parent.is_none() {
                    parent = Some(p);
                    if let Some(s) = sampling {
                        (hint, debug) = (Some(sampling_of(s).0), sampling_of(s).1);
                    }
                }
            }
            Some(B3Single::SamplingOnly(s)) => {
                formats.b3_single = true;
                if parent.is_none() {
                    (hint, debug) = (Some(sampling_of(s).0), sampling_of(s).1);
                }
            }
            None => {}
        }

        let b3_sampling = if raw.once(raw.b3_flags, SEEN_B3_FLAGS) == Some(b"1") {
            Some(B3Sampling::Debug)
        } else {
            raw.once(raw.b3_sampled, SEEN_B3_SAMPLED)
                .and_then(parse::b3_sampled)
        };
        let b3_ids = raw
            .once(raw.b3_trace, SEEN_B3_TRACE)
            .and_then(|t| TraceId::parse_hex(t, false))
            .zip(
                raw.once(raw.b3_span, SEEN_B3_SPAN)
                    .and_then(|s| SpanId::parse_hex(s, false)),
            );
        let b3_parent_ok = match raw.b3_parent {
            None => true,
            Some(_) => raw
                .once(raw.b3_parent, SEEN_B3_PARENT)
                .and_then(|s| SpanId::parse_hex(s, false))
                .is_some(),
        };
        if let (Some((trace_id, span_id)), true) = (b3_ids, b3_parent_ok) {
            formats.b3_multi = true;
            if parent.is_none() {
                parent = Some(Parent { trace_id, span_id });
                if let Some(s) = b3_sampling {
                    (hint, debug) = (Some(sampling_of(s).0), sampling_of(s).1);
                }
            }
        } else if parent.is_none() && hint.is_none() {
            // A sampling state alone (`x-b3-sampled: 0` with no ids) is a
            // decision without a trace, as the B3 spec allows.
            if let Some(s) = b3_sampling {
                (hint, debug) = (Some(sampling_of(s).0), sampling_of(s).1);
            }
        }

        let tracestate = if formats.w3c && raw.seen & SEEN_TRACESTATE != 0 {
            tracestate(headers, &raw)
        } else {
            None
        };
        let request_id = raw
            .once(raw.request_id, SEEN_REQUEST_ID)
            .filter(|v| parse::request_id_ok(v))
            .and(raw.request_id.cloned());

        Extracted {
            parent,
            hint,
            debug,
            formats,
            seen: raw.seen,
            repeated: raw.repeated,
            tracestate,
            request_id,
        }
    }

    /// The request id (`guid:x-request-id`).
    pub fn request_id(&self) -> &str {
        match &self.request_id {
            // Checked visible ASCII when kept.
            RequestId::Kept(v) => v.to_str().unwrap_or("-"),
            RequestId::Generated(b) => std::str::from_utf8(b).unwrap_or("-"),
        }
    }

    /// Whether the request id was made here (absent or invalid on the way in).
    pub fn request_id_generated(&self) -> bool {
        matches!(self.request_id, RequestId::Generated(_))
    }

    /// The `tracestate` kept, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_ref().and_then(|v| v.to_str().ok())
    }

    pub fn formats(&self) -> Formats {
        self.formats
    }
}

/// The `tracestate` lines joined (W3C allows several), if within bounds.
fn tracestate(headers: &HeaderMap, raw: &Raw<'_>) -> Option<HeaderValue> {
    if raw.repeated & SEEN_TRACESTATE == 0 {
        let v = raw.tracestate?;
        return parse::tracestate_ok(v.as_bytes()).then(|| v.clone());
    }
    let mut joined = Vec::new();
    for v in headers.get_all(TRACESTATE) {
        if joined.len() + v.len() > parse::TRACESTATE_MAX_LEN {
            return None;
        }
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if !parse::tracestate_ok(&joined) {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Writes `ctx` into an upstream request's headers: `traceparent` and B3
/// multi always, `b3` when one came in, `tracestate` when kept, and
/// `x-request-id` when made here (or when kept but absent from `headers`).
/// Headers that came in but were refused are removed (they may still be in
/// `headers` when it is the incoming map forwarded), and a header present
/// more than once becomes one.
///
/// One pass over `headers` replaces the values of the trace headers already
/// there in place (no hashing); only those missing are inserted (and the
/// rare refused ones removed), each a hashed operation of the map. Each
/// value written is its own small allocation, freed without atomic
/// operations when the request is dropped.
pub fn inject(ctx: &TraceContext, headers: &mut HeaderMap) {
    let out = Rendered::new(ctx);
    let mut shared = None;
    let mut want = SEEN_TRACEPARENT | SEEN_B3_TRACE | SEEN_B3_SPAN | SEEN_B3_SAMPLED;
    if ctx.parent_span_id.is_some() {
        want |= SEEN_B3_PARENT;
    }
    if ctx.debug {
        want |= SEEN_B3_FLAGS;
    }
    if out.single_len != 0 {
        want |= SEEN_B3;
    }
    if ctx.tracestate.is_some() {
        want |= SEEN_TRACESTATE;
    }
    // A kept request id is the one in a forwarded map: left as it is.
    let replace = match ctx.request_id {
        RequestId::Generated(_) => want | SEEN_REQUEST_ID,
        RequestId::Kept(_) => want,
    };
    want |= SEEN_REQUEST_ID;

    let mut present = 0u16;
    let mut repeated = 0u16;
    for (name, value) in headers.iter_mut() {
        let bit = classify(name);
        if bit == 0 || bit == SEEN_FORCE {
            continue;
        }
        if present & bit != 0 {
            repeated |= bit;
            continue;
        }
        present |= bit;
        if replace & bit != 0 {
            if let Some(v) = out.value(&mut shared, ctx, bit) {
                *value = v;
            }
        }
    }

    // Missing, or there more than once (an insert leaves one).
    let mut insert = want & (!present | repeated);
    while insert != 0 {
        let bit = insert & insert.wrapping_neg();
        insert &= !bit;
        if let (Some(name), Some(v)) = (name_of(bit), out.value(&mut shared, ctx, bit)) {
            headers.insert(name, v);
        }
    }
    let mut remove = present & !want & !SEEN_FORCE;
    while remove != 0 {
        let bit = remove & remove.wrapping_neg();
        remove &= !bit;
        if let Some(name) = name_of(bit) {
            headers.remove(name);
        }
    }
}

/// The name of a `SEEN_*` bit.
fn name_of(bit: u16) -> Option<HeaderName> {
    Some(match bit {
        SEEN_TRACEPARENT => TRACEPARENT,
        SEEN_TRACESTATE => TRACESTATE,
        SEEN_B3_TRACE => B3_TRACE_ID,
        SEEN_B3_SPAN => B3_SPAN_ID,
        SEEN_B3_PARENT => B3_PARENT,
        SEEN_B3_SAMPLED => B3_SAMPLED,
        SEEN_B3_FLAGS => B3_FLAGS,
        SEEN_B3 => B3,
        SEEN_REQUEST_ID => REQUEST_ID,
        _ => return None,
    })
}

/// The values `inject` writes, formatted on the stack in one buffer: the
/// B3 ids are slices of `traceparent`.
#[derive(Clone, Copy)]
struct Rendered {
    buf: [u8; RENDERED_LEN],
    single_len: usize,
}

// Where each value sits in `Rendered::buf`.
const TP: std::ops::Range<usize> = 0..55;
const TP_TRACE: usize = 3;
const TP_SPAN: std::ops::Range<usize> = 36..52;
const PARENT: std::ops::Range<usize> = 55..71;
const SINGLE: usize = 71;
const RID: std::ops::Range<usize> = 139..175;
const RENDERED_LEN: usize = 175;

impl AsRef<[u8]> for Rendered {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Rendered {
    fn new(ctx: &TraceContext) -> Self {
        let mut buf = [b'-'; RENDERED_LEN];
        buf[..2].copy_from_slice(b"00");
        ids::write_hex(&ctx.trace_id.to_bytes(), &mut buf[TP_TRACE..TP_TRACE + 32]);
        ids::write_hex(&ctx.span_id.to_bytes(), &mut buf[TP_SPAN]);
        buf[TP.end - 2..TP.end].copy_from_slice(if ctx.sampled { b"01" } else { b"00" });
        if let Some(p) = ctx.parent_span_id {
            ids::write_hex(&p.to_bytes(), &mut buf[PARENT]);
        }
        if let RequestId::Generated(id) = &ctx.request_id {
            buf[RID].copy_from_slice(id);
        }
        let mut single_len = 0;
        if ctx.seen & SEEN_B3 != 0 {
            let trace = Self::b3_trace(ctx);
            let mut at = SINGLE;
            buf.copy_within(trace.clone(), at);
            at += trace.len() + 1;
            buf.copy_within(TP_SPAN, at);
            at += 17;
            buf[at] = match (ctx.debug, ctx.sampled) {
                (true, _) => b'd',
                (false, true) => b'1',
                (false, false) => b'0',
            };
            at += 1;
            if ctx.parent_span_id.is_some() {
                buf.copy_within(PARENT, at + 1);
                at += 17;
            }
            single_len = at - SINGLE;
        }
        Self { buf, single_len }
    }

    /// The B3 trace id's place: 16 digits when it fits in 64 bits (it came
    /// from a 64-bit B3 id), else 32.
    fn b3_trace(ctx: &TraceContext) -> std::ops::Range<usize> {
        if ctx.trace_id.is_64bit() {
            TP_TRACE + 16..TP_TRACE + 32
        } else {
            TP_TRACE..TP_TRACE + 32
        }
    }

    /// The value of the header of `bit`: a constant, a value of `ctx`, or
    /// a slice of `buf` (moved into one shared allocation on first use).
    #[inline]
    fn value(
        &self,
        shared: &mut Option<Bytes>,
        ctx: &TraceContext,
        bit: u16,
    ) -> Option<HeaderValue> {
        let range = match bit {
            SEEN_TRACEPARENT => TP,
            SEEN_B3_TRACE => Self::b3_trace(ctx),
            SEEN_B3_SPAN => TP_SPAN,
            SEEN_B3_PARENT => PARENT,
            SEEN_B3 => SINGLE..SINGLE + self.single_len,
            SEEN_REQUEST_ID => match &ctx.request_id {
                RequestId::Generated(_) => RID,
                RequestId::Kept(v) => return Some(v.clone()),
            },
            SEEN_B3_SAMPLED => {
                let v = if ctx.sampled { "1" } else { "0" };
                return Some(HeaderValue::from_static(v));
            }
            SEEN_B3_FLAGS => return Some(HeaderValue::from_static("1")),
            SEEN_TRACESTATE => return ctx.tracestate.clone(),
            _ => return None,
        };
        // One allocation holds every value; each header's value is a
        // reference-counted slice of it. (Hex digits, dashes and a
        // lower-case UUID: always a valid value.)
        let bytes = shared.get_or_insert_with(|| Bytes::from_owner(*self));
        HeaderValue::from_maybe_shared(bytes.slice(range)).ok()
    }
}
