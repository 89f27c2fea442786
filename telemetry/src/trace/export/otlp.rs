//! Spans as OTLP messages, and the two OTLP transports: gRPC (the generated
//! `TraceService` client over a tonic channel) and HTTP (the same protobuf
//! message POSTed to `/v1/traces`).
//!
//! The generated messages of `opentelemetry-proto` are used, not the
//! `opentelemetry-otlp` exporter: that one exports the SDK's `SpanData`, so
//! it would bring the SDK's span machinery onto the request path for spans
//! that are plain values here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Uri;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span as ProtoSpan, Status,
};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use super::super::span::{LocalInfo, Span, SpanKind};
use super::ExportError;

/// The OTLP request of one batch: one resource (this proxy) and one scope.
pub fn to_request(batch: &[Span], local: &LocalInfo) -> ExportTraceServiceRequest {
    let spans = batch.iter().map(|s| to_span(s, local)).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", &local.service_name)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "anymesh".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn to_span(s: &Span, local: &LocalInfo) -> ProtoSpan {
    let start = unix_nanos(s.start);
    let end = start.saturating_add(u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX));
    let mut attributes: Vec<KeyValue> = local.tags().iter().map(|(k, v)| kv(k, v)).collect();
    attributes.extend(s.tags.iter().map(|(k, v)| kv(k, v)));
    ProtoSpan {
        trace_id: s.trace_id.to_bytes().to_vec(),
        span_id: s.span_id.to_bytes().to_vec(),
        trace_state: s.tracestate.clone().unwrap_or_default(),
        parent_span_id: s
            .parent_span_id
            .map(|p| p.to_bytes().to_vec())
            .unwrap_or_default(),
        // W3C trace flags in the low byte: sampled.
        flags: 1,
        name: s.name.clone(),
        kind: match s.kind {
            SpanKind::Client => span::SpanKind::Client,
            SpanKind::Server => span::SpanKind::Server,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: s.error.then(|| Status {
            code: status::StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// OTLP over gRPC to one collector.
pub(super) struct GrpcExporter {
    client: TraceServiceClient<Channel>,
}

impl GrpcExporter {
    /// Connects lazily: a collector that is down costs nothing until the
    /// first batch, and each export reconnects as needed.
    pub(super) fn new(uri: Uri, timeout: Duration) -> Self {
        let channel = Endpoint::from(uri)
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        Self {
            client: TraceServiceClient::new(channel),
        }
    }

    pub(super) async fn export(
        &mut self,
        req: ExportTraceServiceRequest,
    ) -> Result<(), ExportError> {
        self.client
            .export(req)
            .await
            .map(|_| ())
            .map_err(|s| ExportError::Grpc(s.code(), s.message().to_string()))
    }
}

/// The OTLP/HTTP body of a request: protobuf, as `application/x-protobuf`.
pub(super) fn http_body(req: &ExportTraceServiceRequest) -> Vec<u8> {
    req.encode_to_vec()
}
