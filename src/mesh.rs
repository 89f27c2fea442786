//! Wiring: registries → catalog → compiler → router → listeners.
//!
//! ```text
//! FileRegistry ─┐ Change          Snapshot            RouteTable
//!      ...      ├──────► catalog ─────────► compile ───────────► Router ◄── outbound listener
//! routing files ┴─ (reloaded) ──────────────────┘                 ▲
//!                                                               admin listener
//! ```
//!
//! [`Mesh::start`] runs the steps in this order, each in its own module:
//! `registries` (the registry factory, the adapters running into the catalog,
//! fail-static state from [`crate::persist`]), `routing` (the routing files,
//! reloaded when they change, and the clusters' Istio resources), `compile`
//! (catalog + routing → route table → router) and `listeners` (the threads
//! that serve traffic); the admin listener runs on the control thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anymesh_adapter_consul::Interest;
use anymesh_core::Snapshot;
use anymesh_proxy::admin::{serve_admin, AdminState};
use anymesh_proxy::{Metrics, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::Settings;

mod compile;
mod health;
mod listeners;
mod observe;
mod registries;
mod routing;
mod security;
mod telemetry;

pub use registries::{registries, registries_with_interest};
pub use routing::load_routing;

/// A running mesh.
pub struct Mesh {
    pub outbound: SocketAddr,
    /// The inbound listener's address, when the proxy fronts workloads.
    pub inbound: Option<SocketAddr>,
    /// The inbound listener's state (its counts of what became of connections).
    pub inbound_state: Option<Arc<anymesh_proxy::inbound::Inbound>>,
    pub admin: SocketAddr,
    pub router: Arc<Router>,
    pub catalog: watch::Receiver<Arc<Snapshot>>,
    /// The active health checks' view of each probed endpoint (`None`
    /// without `health_checks`).
    pub health: Option<Arc<anymesh_proxy::health::HealthBoard>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Mesh {
    /// Binds the listeners and starts every component. Fails on a bad routing config.
    pub async fn start(settings: Settings) -> anyhow::Result<Mesh> {
        let initial = routing::load_initial(&settings)?;
        let outbound = bind("outbound", settings.listeners.outbound).await?;
        let admin = bind("admin", settings.listeners.admin).await?;
        let outbound_addr = outbound.local_addr()?;
        let admin_addr = admin.local_addr()?;

        let mut tasks = JoinSet::new();
        let (shutdown_tx, stop) = watch::channel(false);
        let mut metric_registry = prometheus_client::registry::Registry::default();

        // Registries → catalog. Registries that follow only what routing
        // references (Consul) learn it from the routing config in force.
        let (interest_tx, interest_rx) = watch::channel(Interest::from_config(&initial.set));
        let catalog = registries::start(&settings, interest_rx, &mut tasks, &stop)?;
        crate::source_metrics::spawn(&mut metric_registry, catalog.clone());

        // Routing files (reloaded when they change) and clusters' resources.
        let config = routing::start(
            &settings,
            initial,
            interest_tx,
            &mut metric_registry,
            &mut tasks,
            &stop,
        )?;

        // The proxy's identity (its certificate source) and the inbound
        // side's policies, kept current with the config.
        let identity = security::start_identity(&settings, &mut tasks, &stop).await?;
        let identity_for_admin = identity.clone();
        let inbound_state = security::start_inbound(
            &settings,
            identity.clone(),
            config.set.clone(),
            &mut tasks,
            &stop,
        )?;
        let inbound = match inbound_state {
            Some(state) => Some(listeners::InboundListener {
                listener: bind("inbound", settings.inbound.listen).await?,
                inbound: state.inbound,
                router: state.router,
            }),
            None => None,
        };
        let inbound_addr = match &inbound {
            Some(i) => Some(i.listener.local_addr()?),
            None => None,
        };
        let inbound_state = inbound.as_ref().map(|i| i.inbound.clone());

        // Catalog + routing → compiler → router.
        let metrics = Arc::new(Metrics::new(&mut metric_registry));
        metrics.local.store(Arc::new(local_labels(&settings)));
        // Its Telemetry policy, kept current with the config.
        telemetry::start(
            &settings,
            config.set.clone(),
            metrics.clone(),
            &mut tasks,
            &stop,
        );
        // The proxy's own locality and default retry budget apply from the first table.
        let router = Arc::new(Router::new());
        router.set_locality(settings.locality.clone());
        router.set_default_retry_budget(settings.retry_budget.clone());
        let compiled = compile::start(
            router,
            catalog.clone(),
            config.set,
            metrics.clone(),
            &mut tasks,
            &stop,
        );

        // Listener threads serve traffic; admin runs on this (the control) thread.
        let router = compiled.router;
        let health = health::start(&settings, router.clone(), &mut tasks, &stop);
        let telemetry = observe::start(&settings, &mut tasks, &stop)?;
        listeners::start(
            &settings,
            outbound,
            inbound,
            router.clone(),
            (metrics, telemetry.clone()),
            identity,
            &mut tasks,
            &stop,
        )
        .await?;
        let admin_state = Arc::new(AdminState {
            identity: identity_for_admin,
            inbound: inbound_state.clone(),
            local: crate::explain::local_proxy(&settings),
            router: router.clone(),
            catalog: catalog.clone(),
            registry: metric_registry,
            diagnostics: config.diagnostics,
            compile_warnings: compiled.warnings,
            ready: compiled.ready,
            health: health.clone(),
            telemetry: telemetry.clone(),
        });
        tasks.spawn(serve_admin(admin, admin_state, stopped(stop)));

        tracing::info!(outbound = %outbound_addr, inbound = ?inbound_addr, admin = %admin_addr, "anymesh listening");
        Ok(Mesh {
            outbound: outbound_addr,
            inbound: inbound_addr,
            inbound_state,
            admin: admin_addr,
            router,
            catalog,
            health,
            shutdown: shutdown_tx,
            tasks,
        })
    }

    /// Stops accepting, lets running requests finish (bounded), stops every task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(
            anymesh_proxy::server::DRAIN_TIMEOUT + Duration::from_secs(1),
            drain,
        )
        .await
        .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

async fn bind(role: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {role} listener {addr}"))
}

/// Resolves once `rx` says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// This proxy's side of Istio's metric labels: its first workload (the one
/// a sidecar fronts), its principal when it has an identity, the mesh's
/// trust domain.
fn local_labels(settings: &Settings) -> anymesh_proxy::metrics::istio::LocalLabels {
    use anymesh_proxy::metrics::istio::LocalLabels;
    let td = &settings.mesh.trust_domain;
    match settings.workloads.first() {
        Some(w) => {
            let principal = settings
                .identity
                .is_some()
                .then(|| format!("spiffe://{td}/ns/{}/sa/{}", w.namespace, w.service_account));
            let labels = w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            LocalLabels::workload(
                &w.name,
                &w.namespace,
                principal.as_deref(),
                &labels,
                w.service.as_deref(),
                td,
            )
        }
        None => LocalLabels {
            trust_domain: Arc::from(td.as_str()),
            ..LocalLabels::unknown()
        },
    }
}
