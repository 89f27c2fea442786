//! Spans: one finished span per sampled request per side, with Envoy's
//! HTTP tracing tags (`HttpTracerUtility::finalizeDownstreamSpan` and
//! `setCommonTags` in Envoy's `source/common/tracing/http_tracer_impl.cc`)
//! and the `istio.*` tags Istio adds as custom tags. The tags that are the
//! same for every span of this proxy ([`LocalInfo`]) are added by the
//! exporters, not stored in each span.
//!
//! # Names
//! Istio names a span by the route's decorator: on the outbound side
//! `<destination host>:<port><path>` where the path is `/*` for a route
//! without a path match, `<prefix>*` for a prefix match, the path for an
//! exact match and the regex for a regex match; when the route splits over
//! several destinations, the VirtualService's name replaces the host
//! (`getRouteOperation` in Istio's route builder). On the inbound side
//! `<service host>:<port>/*`. See [`operation_name`].

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use super::ids::{SpanId, TraceId};
use super::propagation::TraceContext;

/// Client (the outbound side) or server (the inbound side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Client,
    Server,
}

/// A finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub duration: Duration,
    /// B3 debug: Zipkin's `debug: true`.
    pub debug: bool,
    /// Whether the exchange failed (no response or a 5xx): `error: true`
    /// in the tags, status ERROR in OTLP.
    pub error: bool,
    pub tags: Vec<(Cow<'static, str>, String)>,
    /// The W3C `tracestate` that came with the request.
    pub tracestate: Option<String>,
}

/// This proxy's identity, the same on every span: Istio's custom tags and
/// the service name collectors group by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalInfo {
    /// Zipkin's `localEndpoint.serviceName` and OTLP's `service.name`;
    /// Istio uses `<canonical service>.<namespace>`.
    pub service_name: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub mesh_id: String,
    pub namespace: String,
    /// Envoy's node id (Istio: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    pub node_id: String,
}

impl LocalInfo {
    /// The tags every span carries, in order.
    pub fn tags(&self) -> [(&'static str, &str); 5] {
        [
            ("istio.canonical_service", &self.canonical_service),
            ("istio.canonical_revision", &self.canonical_revision),
            ("istio.mesh_id", &self.mesh_id),
            ("istio.namespace", &self.namespace),
            ("node_id", &self.node_id),
        ]
    }
}

/// The path part of a route's match, for [`operation_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutePath<'a> {
    /// No path match: `/*`.
    Any,
    Prefix(&'a str),
    Exact(&'a str),
    Regex(&'a str),
}

/// Istio's span name: `<host>:<port>/*`, `<host>:<port><prefix>*`,
/// `<host>:<port><path>` or `<host>:<port><regex>`. `host` is the single
/// destination's host, or the VirtualService's name when the route splits
/// (outbound), or the service's host (inbound).
pub fn operation_name(host: &str, port: u16, path: RoutePath<'_>) -> String {
    match path {
        RoutePath::Any => format!("{host}:{port}/*"),
        RoutePath::Prefix(p) => format!("{host}:{port}{p}*"),
        RoutePath::Exact(p) | RoutePath::Regex(p) => format!("{host}:{port}{p}"),
    }
}

/// The longest `http.url` tag: Envoy's default `max_path_tag_length`.
pub const MAX_URL_TAG_LEN: usize = 256;

/// What the proxy knows of one finished exchange, borrowed at the end of
/// the request. Envoy's tags are made from it by [`Span::http`].
#[derive(Clone, Debug)]
pub struct HttpExchange<'a> {
    pub kind: SpanKind,
    /// From [`operation_name`].
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    /// `scheme://authority/path`; cut at [`MAX_URL_TAG_LEN`].
    pub url: &'a str,
    pub method: &'a str,
    /// `HTTP/1.1`, `HTTP/2`…
    pub protocol: &'a str,
    /// `None` when no response was sent (an error, as Envoy tags it).
    pub status: Option<u16>,
    /// The cluster name (`outbound|9080||reviews.default.svc.cluster.local`).
    pub upstream_cluster: Option<&'a str>,
    /// The cluster's observability name (Istio: the same, or its alt stat name).
    pub upstream_cluster_name: Option<&'a str>,
    /// Envoy's short response flags (`-` when none, `UH`, `UF,URX`…).
    pub response_flags: &'a str,
    pub request_size: u64,
    pub response_size: u64,
    /// The downstream peer (server span) or upstream host (client span).
    pub peer_address: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// `x-envoy-downstream-service-cluster`.
    pub downstream_cluster: Option<&'a str>,
}

impl Span {
    /// The span of an exchange, with Envoy's tags. Tag values from the
    /// request have control characters replaced and are bounded, so a
    /// hostile header cannot forge structure in a collector's storage.
    pub fn http(ctx: &TraceContext, ex: &HttpExchange<'_>) -> Span {
        let error = ex.status.is_none_or(|s| s >= 500);
        let mut tags: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(16);
        let mut tag = |k: &'static str, v: &str| tags.push((Cow::Borrowed(k), clean(v, 1024)));
        tag("guid:x-request-id", ctx.request_id());
        tag("http.url", ex.url);
        tag("http.method", ex.method);
        tag("downstream_cluster", ex.downstream_cluster.unwrap_or("-"));
        tag("user_agent", ex.user_agent.unwrap_or("-"));
        tag("http.protocol", ex.protocol);
        if let Some(peer) = ex.peer_address {
            tag("peer.address", peer);
            if ex.kind == SpanKind::Client {
                tag("upstream_address", peer);
            }
        }
        tag("request_size", &ex.request_size.to_string());
        tag("response_size", &ex.response_size.to_string());
        tag("component", "proxy");
        if let Some(c) = ex.upstream_cluster {
            tag("upstream_cluster", c);
            tag(
                "upstream_cluster.name",
                ex.upstream_cluster_name.unwrap_or(c),
            );
        }
        let status = ex.status.map_or_else(|| "0".to_string(), |s| s.to_string());
        tag("http.status_code", &status);
        tag("response_flags", ex.response_flags);
        if error {
            tag("error", "true");
        }
        if let Some((_, url)) = tags.get_mut(1) {
            truncate(url, MAX_URL_TAG_LEN);
        }
        Span {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx.parent_span_id,
            name: clean(&ex.name, 1024),
            kind: ex.kind,
            start: ex.start,
            duration: ex.duration,
            debug: ctx.debug,
            error,
            tags,
            tracestate: ctx.tracestate().map(str::to_string),
        }
    }

    /// The value of a tag, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// At most `max` bytes, control characters as `?`.
fn clean(v: &str, max: usize) -> String {
    let mut s: String = v
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    truncate(&mut s, max);
    s
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_follow_istio() {
        let h = "reviews.default.svc.cluster.local";
        assert_eq!(
            operation_name(h, 9080, RoutePath::Any),
            "reviews.default.svc.cluster.local:9080/*"
        );
        assert_eq!(
            operation_name(h, 9080, RoutePath::Prefix("/api")),
            format!("{h}:9080/api*")
        );
        assert_eq!(
            operation_name(h, 9080, RoutePath::Exact("/x")),
            format!("{h}:9080/x")
        );
        assert_eq!(
            operation_name(h, 80, RoutePath::Regex("/v[0-9]+")),
            format!("{h}:80/v[0-9]+")
        );
    }

    #[test]
    fn clean_replaces_controls_and_bounds() {
        assert_eq!(clean("a\r\nb\u{7f}", 100), "a??b?");
        assert_eq!(clean("ééé", 3), "é");
        assert_eq!(clean(&"x".repeat(5000), 1024).len(), 1024);
    }
}
