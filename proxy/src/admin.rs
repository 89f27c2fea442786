//! The admin listener: `/ready`, `/config`, `/explain`, `/metrics`.
//!
//! Kept on its own port so it never competes with proxied traffic for routes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use anymesh_core::Snapshot;
use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::health::HealthBoard;
use crate::metrics::ResilienceCollector;
use crate::router::Router;

mod explain;
mod security;
mod telemetry;

/// Everything the admin endpoints read.
pub struct AdminState {
    pub router: Arc<Router>,
    pub catalog: watch::Receiver<Arc<Snapshot>>,
    pub registry: Registry,
    /// Config problems from the last (re)load, one line each.
    pub diagnostics: Arc<ArcSwap<Vec<String>>>,
    /// Warnings of the last route-table compilation (e.g. a host with no service).
    pub compile_warnings: Arc<ArcSwap<Vec<String>>>,
    /// Set once every source has delivered a first view (or its persisted one) and a table is installed.
    pub ready: watch::Receiver<bool>,
    /// The active health checker's board, when checks are configured
    /// (probe details for `/explain`, probed endpoints for `/metrics`).
    pub health: Option<Arc<HealthBoard>>,
    /// The proxy's identity, when one is configured: `/ready` waits for a
    /// valid certificate; `/metrics` shows its expiry.
    pub identity: Option<Arc<anymesh_identity::Identity>>,
    /// The inbound listener, when the proxy fronts workloads (its counts in `/metrics`).
    pub inbound: Option<Arc<crate::inbound::Inbound>>,
    /// The proxy as anymesh.yaml describes it (trust domain, own identity,
    /// certificate source), for `/explain`.
    pub local: anymesh_core::explain::LocalProxy,
    /// The access log and the tracer (their counters in `/metrics`).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

#[derive(Serialize)]
struct ConfigDump<'a> {
    catalog: &'a Snapshot,
    routes: &'a anymesh_core::routes::RouteTable,
    diagnostics: &'a [String],
    compile_warnings: &'a [String],
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/ready" => {
            let certified = state
                .identity
                .as_ref()
                .is_none_or(|i| i.valid_at(std::time::SystemTime::now()));
            if *state.ready.borrow() && !certified {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: no valid certificate for mutual TLS (see the identity source's log)\n",
                )
            } else if *state.ready.borrow() {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: waiting for registries' first sync\n",
                )
            }
        }
        "/config" => {
            let snapshot = state.catalog.borrow().clone();
            let routing = state.router.current();
            let diagnostics = state.diagnostics.load();
            let compile_warnings = state.compile_warnings.load();
            let dump = ConfigDump {
                catalog: &snapshot,
                routes: &routing.table,
                diagnostics: &diagnostics,
                compile_warnings: &compile_warnings,
            };
            match serde_json::to_vec_pretty(&dump) {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot encode config: {e}\n"),
                ),
            }
        }
        "/explain" => explain::handle(state, req),
        // Istio's scrape configs look at /stats/prometheus.
        "/metrics" | "/stats/prometheus" => {
            let mut out = String::new();
            match encode_metrics(&mut out, state) {
                Ok(()) => respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot encode metrics: {e}\n"),
                ),
            }
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /ready /config /explain?host=H /metrics /stats/prometheus\n",
        ),
    }
}

/// The registered metrics, then the resilience metrics read from the
/// routing in force ([`ResilienceCollector`]).
pub(crate) fn encode_metrics(out: &mut String, state: &AdminState) -> std::fmt::Result {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    encode_registry(out, &state.registry)?;
    let mut scrape = Registry::with_prefix("anymesh");
    scrape.register_collector(Box::new(ResilienceCollector::new(
        state.router.clone(),
        state.health.clone(),
    )));
    if state.identity.is_some() || state.inbound.is_some() {
        scrape.register_collector(Box::new(security::SecurityCollector::new(
            state.identity.clone(),
            state.inbound.clone(),
        )));
    }
    scrape.register_collector(Box::new(telemetry::TelemetryCollector(
        state.telemetry.clone(),
    )));
    encode_registry(out, &scrape)?;
    encode_eof(out)
}

/// Serves the admin listener until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    // The admin port may be reachable beyond loopback: protect it from slow clients.
    let settings = crate::server::ServerSettings {
        header_read_timeout: Some(std::time::Duration::from_secs(10)),
        idle_timeout: None,
    };
    crate::server::serve(listener, settings, shutdown, move |_peer| {
        let state = state.clone();
        service_fn(move |req: Request<Incoming>| {
            let resp = handle(&state, &req);
            async move { Ok::<_, Infallible>(resp) }
        })
    })
    .await
}
