//! The per-request hooks: the four points of a forwarded request where
//! resilience, policy and telemetry attach, called on every path (HTTP/1.1
//! and HTTP/2 clients, HTTP/1.1 and HTTP/2 upstreams).
//!
//! | hook | when | what will attach |
//! |---|---|---|
//! | [`Hooks::before_pick`] | a route matched; no endpoint picked yet | authorization, rate limits, fault injection |
//! | [`Hooks::on_attempt`] | an attempt is about to go to an endpoint | circuit breakers, per-try timeouts, retry budgets |
//! | [`Hooks::on_response_head`] | an upstream's response head arrived | retry on status, outlier detection |
//! | [`Hooks::on_end`] | the exchange is over | metrics (today), access logs, traces |
//!
//! Each is a plain method call on a value the forwarding layer owns; the
//! ones with nothing attached yet are empty and inlined away, so a hook
//! costs nothing until a feature uses it.

use std::sync::Arc;

use anymesh_core::routes::{Cluster, Route};
use http::request::Parts;
use http::StatusCode;
use tokio::time::Instant;

use anymesh_core::model::Endpoint;

use crate::body::end::{BodyEnd, GrpcMessages};
use crate::error::{ErrorKind, ProxyError};
use crate::metrics::istio::{service_labels, Reporter, RequestProtocol, SecurityPolicy, Series};
use crate::metrics::{Metrics, RequestLabels};
use crate::service::InboundConn;
use crate::telemetry::{Capture, End, Telemetry};

/// What the end of an exchange reports.
pub(crate) struct Exchange<'a> {
    /// The destination cluster (service port and subset), when the
    /// request was routed to one.
    pub cluster: Option<&'a Arc<Cluster>>,
    /// The route that matched, if any.
    pub route: Option<&'a Arc<str>>,
    /// The status the client got (499: it went away first).
    pub status: u16,
    /// Why the proxy answered or the exchange broke, if it did: the source
    /// of the access log's response flags.
    pub failure: Option<ErrorKind>,
    /// A fault delay held the request (response flag `DI`).
    pub delayed: bool,
    pub start: Instant,
    /// The endpoint the request went to, and whether with mutual TLS
    /// (Istio's destination labels on the outbound side).
    pub dest: Option<(&'a Arc<Endpoint>, bool)>,
    /// The inbound connection the request came on (the inbound side
    /// reports as `destination`); `None` on the outbound side.
    pub inbound: Option<&'a InboundConn>,
    /// The request as it arrived, when it is logged or traced.
    pub capture: Option<&'a Capture>,
    /// Body bytes received from the client and sent to it.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// A gRPC exchange (`content-type: application/grpc…`), with the
    /// `grpc-status` of its trailers (or trailers-only response), if any.
    pub grpc: Option<Option<u16>>,
    /// A gRPC exchange's messages, sent by the client and by the server.
    pub messages: (u64, u64),
}

/// The end of an exchange whose response body is still being sent: it
/// rides along with the body, counts what goes out, and reports the
/// exchange when the body is dropped (it ended, failed or the client went
/// away), so durations and sizes cover the whole body, as Envoy's do.
pub(crate) struct Finish {
    pub hooks: Arc<Hooks>,
    pub cluster: Option<Arc<Cluster>>,
    pub route: Option<Arc<str>>,
    pub status: u16,
    pub failure: Option<ErrorKind>,
    pub delayed: bool,
    pub start: Instant,
    pub dest: Option<(Arc<Endpoint>, bool)>,
    pub inbound: Option<Arc<InboundConn>>,
    pub capture: Option<Box<Capture>>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// As [`Exchange::grpc`].
    pub grpc: Option<Option<u16>>,
    /// A gRPC exchange's messages: the request's (counted by its body as
    /// it streams) and the response's.
    pub request_messages: Option<Arc<std::sync::atomic::AtomicU64>>,
    pub response_messages: GrpcMessages,
}

impl Finish {
    /// `n` more body bytes went to the client.
    #[inline]
    pub(crate) fn sent(&mut self, n: usize) {
        self.response_bytes += n as u64;
    }
}

impl BodyEnd for Finish {
    #[inline]
    fn data(&mut self, data: &[u8]) {
        self.response_bytes += data.len() as u64;
        if self.grpc.is_some() {
            self.response_messages.feed(data);
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(grpc) = &mut self.grpc {
            if let Some(status) = grpc_status(trailers) {
                *grpc = Some(status);
            }
        }
    }
}

/// A request's gRPC marking: `Some(None)` (status not known yet) when its
/// `content-type` is `application/grpc` or a `application/grpc+…` form.
pub(crate) fn grpc_request(headers: &http::HeaderMap) -> Option<Option<u16>> {
    let ct = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    let grpc =
        ct.starts_with(b"application/grpc") && matches!(ct.get(16), None | Some(b'+' | b';'));
    grpc.then_some(None)
}

/// The `grpc-status` in `headers`, when it is a number.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    v.parse().ok().filter(|s| *s <= 999)
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.hooks.on_end(&Exchange {
            cluster: self.cluster.as_ref(),
            route: self.route.as_ref(),
            status: self.status,
            failure: self.failure,
            delayed: self.delayed,
            start: self.start,
            dest: self.dest.as_ref().map(|(e, m)| (e, *m)),
            inbound: self.inbound.as_deref(),
            capture: self.capture.as_deref(),
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            grpc: self.grpc,
            messages: (
                self.request_messages
                    .as_ref()
                    .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed)),
                self.response_messages.count(),
            ),
        });
    }
}

/// The hooks of one listener's forwarding layer.
pub(crate) struct Hooks {
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
}

impl Hooks {
    pub(crate) fn new(metrics: Arc<Metrics>, telemetry: Arc<Telemetry>) -> Self {
        Self { metrics, telemetry }
    }

    /// What the access log and the tracer need of a request that just
    /// arrived (`None` when neither is configured).
    #[inline]
    pub(crate) fn capture(
        &self,
        parts: &Parts,
        peer: &crate::service::Peer,
    ) -> Option<Box<Capture>> {
        if !self.telemetry.is_on() {
            return None;
        }
        self.telemetry
            .capture(parts, peer, &self.metrics.policy.load())
    }

    /// Writes the trace context (or a request id made here) into the
    /// request going upstream.
    #[inline]
    pub(crate) fn propagate(&self, capture: Option<&Capture>, headers: &mut http::HeaderMap) {
        if let Some(c) = capture {
            self.telemetry.propagate(c, headers);
        }
    }

    /// A route matched and the request will be forwarded; no endpoint is
    /// picked yet. An error is the local reply the request gets instead.
    #[inline(always)]
    pub(crate) fn before_pick(&self, _parts: &Parts, _route: &Route) -> Result<(), ProxyError> {
        Ok(())
    }

    /// Attempt `count` (1 for the first) is about to be sent to `endpoint`.
    #[inline(always)]
    pub(crate) fn on_attempt(&self, _endpoint: &str, _count: u32) {}

    /// `endpoint` answered with a response head.
    #[inline(always)]
    pub(crate) fn on_response_head(&self, _endpoint: &str, _status: StatusCode) {}

    /// The exchange is over: for an HTTP/1.1 client when the response was
    /// relayed; for responses the transports poll (HTTP/2 clients, hyper's
    /// connections), when the response head went to the transport.
    pub(crate) fn on_end(&self, ex: &Exchange<'_>) {
        let dash = || Arc::from("-");
        let labels = RequestLabels {
            service: ex.cluster.map_or_else(dash, |c| c.service.as_arc().clone()),
            route: ex.route.cloned().unwrap_or_else(dash),
            code: ex.status,
        };
        let took = ex.start.elapsed();
        self.metrics.record(&labels, took);
        self.record_istio(ex, took);
        if let Some(capture) = ex.capture {
            self.log_and_trace(ex, capture, took);
        }
        // The access log's line, until access logs land (compiled out of
        // release builds, whose maximum level is debug).
        tracing::trace!(
            service = %labels.service,
            route = %labels.route,
            status = ex.status,
            flags = ex.failure.map_or("-", ErrorKind::response_flag),
            delay_injected = ex.delayed,
            failed_at = ?ex.failure.map(ErrorKind::source),
            ?took,
            "exchange ended"
        );
    }

    /// The exchange's access log line and span.
    #[cold]
    fn log_and_trace(&self, ex: &Exchange<'_>, capture: &Capture, took: std::time::Duration) {
        let cluster_name = match (ex.inbound, ex.cluster) {
            (Some(conn), _) => Some(&*conn.cluster),
            (None, Some(c)) => Some(c.name.as_str()),
            (None, None) => None,
        };
        self.telemetry.end(
            capture,
            &End {
                outbound: ex.inbound.is_none(),
                status: ex.status,
                flags: ex.failure.map_or("-", ErrorKind::response_flag),
                took,
                cluster: ex.cluster.map(|c| &**c),
                cluster_name,
                route: ex.route.map(|r| &**r),
                upstream: upstream_addr(ex),
                request_bytes: ex.request_bytes,
                response_bytes: ex.response_bytes,
            },
        );
    }

    /// Adds this proxy's workload labels for the mesh proxy the request goes
    /// to (`x-anymesh-peer`; nothing when no workload is declared).
    pub(crate) fn add_peer_metadata(&self, headers: &mut http::HeaderMap) {
        if let Some(v) = &self.metrics.local.load().peer_header {
            headers.insert(crate::metrics::istio::PEER_HEADER, v.clone());
        }
    }

    fn record_series(&self, series: &Series<'_>, ex: &Exchange<'_>, millis: f64) {
        let sizes = Some((ex.request_bytes, ex.response_bytes));
        match ex.grpc {
            Some(_) => self
                .metrics
                .istio
                .record_grpc(series, millis, sizes, ex.messages),
            None => self.metrics.istio.record(series, millis, sizes),
        }
    }

    /// Istio's standard metrics of the exchange, from the side that saw it.
    fn record_istio(&self, ex: &Exchange<'_>, took: std::time::Duration) {
        let local = self.metrics.local.load();
        let flags = ex.failure.map_or("-", ErrorKind::response_flag);
        let millis = took.as_secs_f64() * 1000.0;
        match ex.inbound {
            Some(conn) => {
                let series = Series {
                    reporter: Reporter::Destination,
                    source: conn.peer_labels.get().unwrap_or(&conn.source),
                    destination: &local.workload,
                    service: &local.service,
                    protocol: protocol(ex),
                    code: ex.status,
                    grpc_status: ex.grpc.flatten(),
                    flags,
                    security: if conn.peer_id.is_some() {
                        SecurityPolicy::MutualTls
                    } else {
                        SecurityPolicy::None
                    },
                };
                self.record_series(&series, ex, millis);
            }
            None => {
                let destination = match ex.dest {
                    Some((endpoint, mtls)) => local.destination(endpoint, mtls),
                    None => local.unknown_peer.clone(),
                };
                let service = match ex.cluster {
                    Some(c) => service_labels(c.service.as_arc()),
                    None => local.unknown_service.clone(),
                };
                let series = Series {
                    reporter: Reporter::Source,
                    source: &local.workload,
                    destination: &destination,
                    service: &service,
                    protocol: protocol(ex),
                    code: ex.status,
                    grpc_status: ex.grpc.flatten(),
                    flags,
                    security: SecurityPolicy::Unknown,
                };
                self.record_series(&series, ex, millis);
            }
        }
    }
}

/// The address the exchange's upstream connection went to: the endpoint's
/// port for the cluster, or its mesh proxy's port with mutual TLS; the
/// local app's port on the inbound side is not known here.
fn upstream_addr(ex: &Exchange<'_>) -> Option<std::net::SocketAddr> {
    let (endpoint, mtls) = ex.dest?;
    let ip: std::net::IpAddr = endpoint.address.parse().ok()?;
    let port = match (&endpoint.mesh, mtls) {
        (Some(m), true) => m.port,
        _ => endpoint.port_for(&ex.cluster?.port)?,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

fn protocol(ex: &Exchange<'_>) -> RequestProtocol {
    match ex.grpc {
        Some(_) => RequestProtocol::Grpc,
        None => RequestProtocol::Http,
    }
}
