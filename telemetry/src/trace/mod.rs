//! Distributed tracing: propagation, sampling, spans and their exporters.
//!
//! The request path, on each side of a hop:
//!
//! ```text
//!  request start:   let ex = TraceContext::extract(req.headers());
//!                   let d = tracer.sampler().decide(&ex, rng.next_u32());
//!                   let ctx = ex.start(d.sampled(), &mut rng);
//!  upstream request: inject(&ctx, upstream_req.headers_mut());
//!  exchange end:    tracer.record_http(&ctx, &HttpExchange { .. });
//! ```
//!
//! An unsampled request does no span work: `record_http` returns at once,
//! and extract, decide and inject allocate one buffer for the header
//! values. Spans are exported off the request path ([`export`]).

mod config;
pub mod export;
mod ids;
pub mod propagation;
mod sampling;
mod span;

pub use config::TracingConfig;
pub use export::{ExportError, TraceError, Tracer, TracerStats};
pub use ids::{SpanId, TraceId};
pub use propagation::{inject, Extracted, Formats, TraceContext};
pub use sampling::{Decision, Sampler, DEFAULT_SAMPLING_PERCENT};
pub use span::{
    operation_name, HttpExchange, LocalInfo, RoutePath, Span, SpanKind, MAX_URL_TAG_LEN,
};
