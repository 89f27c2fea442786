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

use crate::error::{ErrorKind, ProxyError};
use crate::metrics::{Metrics, RequestLabels};

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
}
