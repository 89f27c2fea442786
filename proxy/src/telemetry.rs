//! Access logs and traces of exchanges: what the proxy captures at the start
//! of a request for them (`Capture`), and how an exchange's end becomes a
//! log line and a span (`Telemetry::end`).
//!
//! Both are off unless anymesh.yaml configures them; then every request is
//! captured (one small allocation holding the request's method, URI and the
//! few headers a log line prints, which are reference-counted copies), its
//! trace context is extracted, decided and propagated, and `x-request-id` is
//! made when it is absent, as Envoy does. With neither configured, a request
//! pays one branch.
//!
//! The formatting of a line and the export of a span happen off the request
//! path, in `anymesh_telemetry`'s writer thread and exporter task.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anymesh_core::routes::Cluster;
use anymesh_core::telemetry::Side;
use anymesh_telemetry::access_log::{AccessLog, AccessRecord};
use anymesh_telemetry::trace::{
    inject, operation_name, HttpExchange, RoutePath, Span, SpanKind, TraceContext, Tracer,
};
use http::header::{HeaderValue, USER_AGENT};
use http::request::Parts;
use http::{HeaderName, Method, Uri, Version};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::metrics::istio::policy::LocalTelemetry;
use crate::service::Peer;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

thread_local! {
    /// Trace and span ids, request ids and sampling draws: a fast generator
    /// per thread, seeded from the OS (ids must be unique, not secret).
    static RNG: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_os_rng());
}

/// The access log and the tracer of a proxy, when configured.
#[derive(Default)]
pub struct Telemetry {
    access_log: Option<AccessLog>,
    tracer: Option<Tracer>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("access_log", &self.access_log.is_some())
            .field("tracer", &self.tracer)
            .finish()
    }
}

impl Telemetry {
    /// An access log and a tracer (each optional) for every exchange.
    pub fn new(access_log: Option<AccessLog>, tracer: Option<Tracer>) -> Self {
        Self { access_log, tracer }
    }

    /// Whether anything is logged or traced.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.access_log.is_some() || self.tracer.is_some()
    }

    /// The access log, for its counters.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// The tracer, for its counters.
    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// What the end of the exchange will need from the request that just
    /// arrived, before routing changes it; `None` when nothing is logged or
    /// traced.
    ///
    /// `policy` is the local workload's Telemetry policy: it may turn the
    /// access log off for this side, change the sampling percentage, or
    /// keep spans from being reported (the context still propagates).
    pub(crate) fn capture(
        &self,
        parts: &Parts,
        peer: &Peer,
        policy: &LocalTelemetry,
    ) -> Option<Box<Capture>> {
        let side = match peer.inbound {
            Some(_) => Side::Server,
            None => Side::Client,
        };
        let log = self.access_log.is_some() && policy.access_log_enabled(side, true);
        let tracing = &policy.side(side).tracing;
        let extracted = TraceContext::extract(&parts.headers);
        let trace = RNG.with_borrow_mut(|rng| {
            let sampled = match &self.tracer {
                Some(t) => policy
                    .switches(side)
                    .sampler
                    .as_ref()
                    .unwrap_or(t.sampler())
                    .decide(&extracted, rng.next_u32())
                    .sampled(),
                None => false,
            };
            extracted.start(sampled, rng)
        });
        let header = |name| parts.headers.get(name).cloned();
        let (local, sni) = match &peer.inbound {
            Some(conn) => (Some(conn.local), conn.sni.clone()),
            None => (None, None),
        };
        let custom_tags = if trace.sampled {
            tracing.custom_tags.clone()
        } else {
            Vec::new()
        };
        Some(Box::new(Capture {
            log,
            report_span: !tracing.span_reporting_disabled,
            custom_tags,
            wall: SystemTime::now(),
            trace,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            authority: header(http::header::HOST),
            user_agent: header(USER_AGENT),
            forwarded_for: header(X_FORWARDED_FOR),
            peer: peer.addr,
            local,
            sni,
        }))
    }

    /// Writes the capture's trace context into the request going upstream:
    /// the trace headers when tracing, else only a request id made here.
    pub(crate) fn propagate(&self, capture: &Capture, headers: &mut http::HeaderMap) {
        if self.tracer.is_some() {
            inject(&capture.trace, headers);
        } else if capture.trace.request_id_generated() {
            if let Ok(v) = HeaderValue::from_str(capture.trace.request_id()) {
                headers.insert(X_REQUEST_ID, v);
            }
        }
    }

    /// Logs and traces an exchange that ended.
    pub(crate) fn end(&self, capture: &Capture, end: &End<'_>) {
        if let (Some(log), true) = (&self.access_log, capture.log) {
            log.log(&capture.record(end));
        }
        let report = capture.trace.sampled && capture.report_span;
        if let (Some(tracer), true) = (&self.tracer, report) {
            let host = end
                .cluster
                .map(|c| c.service.as_str())
                .or_else(|| capture.authority())
                .unwrap_or("-");
            let port = end.cluster.map_or(0, |c| c.port.number);
            let url = capture.url();
            let peer = end
                .upstream
                .or((!end.outbound).then_some(capture.peer))
                .map(|a| a.to_string());
            let exchange = HttpExchange {
                kind: if end.outbound {
                    SpanKind::Client
                } else {
                    SpanKind::Server
                },
                name: operation_name(host, port, RoutePath::Any),
                start: capture.wall,
                duration: end.took,
                url: &url,
                method: capture.method.as_str(),
                protocol: protocol(capture.version),
                status: (end.status != 0).then_some(end.status),
                upstream_cluster: end.cluster_name,
                upstream_cluster_name: end.cluster_name,
                response_flags: end.flags,
                request_size: end.request_bytes,
                response_size: end.response_bytes,
                peer_address: peer.as_deref(),
                user_agent: capture.user_agent.as_ref().and_then(|v| v.to_str().ok()),
                downstream_cluster: None,
            };
            if capture.custom_tags.is_empty() {
                tracer.record_http(&capture.trace, &exchange);
            } else {
                let mut span = Span::http(&capture.trace, &exchange);
                span.tags.extend(
                    capture
                        .custom_tags
                        .iter()
                        .map(|(k, v)| (Cow::Owned(k.clone()), v.clone())),
                );
                tracer.record(span);
            }
        }
    }
}

/// What the end of one exchange tells the access log and the tracer,
/// beside the [`Capture`].
pub(crate) struct End<'a> {
    /// The exchange was on the outbound side (a client span).
    pub outbound: bool,
    pub status: u16,
    pub flags: &'a str,
    pub took: Duration,
    pub cluster: Option<&'a Cluster>,
    /// Istio's name of the cluster: `outbound|<port>|<subset>|<host>` or
    /// `inbound|<port>||`.
    pub cluster_name: Option<&'a str>,
    pub route: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// A request as it arrived, kept for its access log line and span.
pub(crate) struct Capture {
    /// The Telemetry API leaves the access log on for this side.
    log: bool,
    /// A sampled exchange's span is exported (not `disableSpanReporting`).
    report_span: bool,
    /// The Telemetry API's literal `customTags`, for a sampled exchange.
    custom_tags: Vec<(String, String)>,
    wall: SystemTime,
    trace: TraceContext,
    method: Method,
    uri: Uri,
    version: Version,
    authority: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    sni: Option<Box<str>>,
}

impl Capture {
    fn authority(&self) -> Option<&str> {
        self.authority
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
    }

    /// `http://<authority><path>`, Envoy's `http.url` tag.
    fn url(&self) -> String {
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        format!("http://{}{path}", self.authority().unwrap_or(""))
    }

    fn record<'a>(&'a self, end: &End<'a>) -> AccessRecord<'a> {
        let text = |v: &'a Option<HeaderValue>| v.as_ref().and_then(|v| v.to_str().ok());
        let mut r = AccessRecord::new(self.wall);
        r.method = Some(self.method.as_str());
        r.path = self.uri.path_and_query().map(|p| p.as_str());
        r.protocol = Some(protocol(self.version));
        r.response_code = end.status;
        r.response_flags = end.flags;
        r.response_code_details = Some(if end.flags == "-" {
            "via_upstream"
        } else {
            "local_reply"
        });
        r.bytes_received = end.request_bytes;
        r.bytes_sent = end.response_bytes;
        r.duration_ms = end.took.as_millis() as u64;
        r.x_forwarded_for = text(&self.forwarded_for);
        r.user_agent = text(&self.user_agent);
        r.request_id = Some(self.trace.request_id());
        r.authority = self.authority();
        r.upstream_host = end.upstream;
        r.upstream_cluster = end.cluster_name;
        r.downstream_local_address = self.local;
        r.downstream_remote_address = Some(self.peer);
        r.requested_server_name = self.sni.as_deref();
        r.route_name = end.route;
        r
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
