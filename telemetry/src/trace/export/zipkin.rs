//! Spans as Zipkin v2 JSON (`POST /api/v2/spans`), as Envoy's Zipkin
//! tracer writes them: 16 hex digits for a 64-bit trace id, 32 otherwise;
//! timestamps and durations in microseconds.

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::span::{LocalInfo, Span, SpanKind};
use super::otlp::unix_nanos;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan<'a> {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    kind: &'static str,
    name: &'a str,
    timestamp: u64,
    duration: u64,
    local_endpoint: Endpoint<'a>,
    tags: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    debug: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint<'a> {
    service_name: &'a str,
}

/// The JSON body of one batch.
pub fn to_json(batch: &[Span], local: &LocalInfo) -> Vec<u8> {
    let spans: Vec<ZipkinSpan<'_>> = batch
        .iter()
        .map(|s| {
            let hex = s.trace_id.to_hex();
            let trace = if s.trace_id.is_64bit() {
                &hex[16..]
            } else {
                &hex[..]
            };
            let mut tags: BTreeMap<&str, &str> = local.tags().into_iter().collect();
            tags.extend(s.tags.iter().map(|(k, v)| (k.as_ref(), v.as_str())));
            ZipkinSpan {
                trace_id: String::from_utf8_lossy(trace).into_owned(),
                id: s.span_id.to_string(),
                parent_id: s.parent_span_id.map(|p| p.to_string()),
                kind: match s.kind {
                    SpanKind::Client => "CLIENT",
                    SpanKind::Server => "SERVER",
                },
                name: &s.name,
                timestamp: unix_nanos(s.start) / 1000,
                // Zipkin reads 0 as "unknown".
                duration: u64::try_from(s.duration.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
                local_endpoint: Endpoint {
                    service_name: &local.service_name,
                },
                tags,
                debug: s.debug,
            }
        })
        .collect();
    // A Vec of plain structs of strings and numbers always serialises.
    serde_json::to_vec(&spans).unwrap_or_default()
}
