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

use anymesh_core::routes::Route;
use http::request::Parts;
use http::StatusCode;
use tokio::time::Instant;

use anymesh_core::model::Endpoint;

use crate::error::{ErrorKind, ProxyError};
use crate::metrics::istio::{service_labels, Reporter, RequestProtocol, SecurityPolicy, Series};
use crate::metrics::{Metrics, RequestLabels};
use crate::service::InboundConn;

/// What the end of an exchange reports.
pub(crate) struct Exchange<'a> {
    /// The destination service, when the request was routed to one.
    pub service: Option<&'a Arc<str>>,
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
}

/// The hooks of one listener's forwarding layer.
pub(crate) struct Hooks {
    metrics: Arc<Metrics>,
}

impl Hooks {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
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
            service: ex.service.cloned().unwrap_or_else(dash),
            route: ex.route.cloned().unwrap_or_else(dash),
            code: ex.status,
        };
        let took = ex.start.elapsed();
        self.metrics.record(&labels, took);
        self.record_istio(ex, took);
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

    /// Adds this proxy's workload labels for the mesh proxy the request goes
    /// to (`x-anymesh-peer`; nothing when no workload is declared).
    pub(crate) fn add_peer_metadata(&self, headers: &mut http::HeaderMap) {
        if let Some(v) = &self.metrics.local.load().peer_header {
            headers.insert(crate::metrics::istio::PEER_HEADER, v.clone());
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
                    protocol: RequestProtocol::Http,
                    code: ex.status,
                    grpc_status: None,
                    flags,
                    security: if conn.peer_id.is_some() {
                        SecurityPolicy::MutualTls
                    } else {
                        SecurityPolicy::None
                    },
                };
                self.metrics.istio.record(&series, millis, None);
            }
            None => {
                let destination = match ex.dest {
                    Some((endpoint, mtls)) => local.destination(endpoint, mtls),
                    None => local.unknown_peer.clone(),
                };
                let service = match ex.service {
                    Some(host) => service_labels(host),
                    None => local.unknown_service.clone(),
                };
                let series = Series {
                    reporter: Reporter::Source,
                    source: &local.workload,
                    destination: &destination,
                    service: &service,
                    protocol: RequestProtocol::Http,
                    code: ex.status,
                    grpc_status: None,
                    flags,
                    security: SecurityPolicy::Unknown,
                };
                self.metrics.istio.record(&series, millis, None);
            }
        }
    }
}
