//! Wiring: registries → catalog → compiler → router → listeners.
//!
//! ```text
//! FileRegistry ─┐ Change          Snapshot            RouteTable
//!      ...      ├──────► catalog ─────────► compile ───────────► Router ◄── outbound listener
//! routing files ┴─ (reloaded) ──────────────────┘                 ▲
//!                                                               admin listener
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use anymesh_adapter_consul::{ConsulRegistry, Interest};
use anymesh_adapter_etcd::EtcdRegistry;
use anymesh_adapter_eureka::EurekaRegistry;
use anymesh_adapter_file::FileRegistry;
use anymesh_adapter_kubernetes::KubernetesRegistry;
use anymesh_adapter_marathon::MarathonRegistry;
use anymesh_core::catalog::{self, CatalogState};
use anymesh_core::config::{self, ConfigSet, Diagnostic};
use anymesh_core::routes::compile::IncrementalCompiler;
use anymesh_core::{ChangeSink, MappedRegistry, Registry, Snapshot, SourceId, SourceView};
use anymesh_proxy::admin::{serve_admin, AdminState};
use anymesh_proxy::server::{serve_connections, Connections, ServerSettings};
use anymesh_proxy::{Metrics, Proxy, Router, UpstreamSettings};
use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::persist::StateDir;
use crate::settings::{RegistryKind, Settings};

/// A running mesh.
pub struct Mesh {
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub router: Arc<Router>,
    pub catalog: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Builds the registry adapters the settings name.
pub fn registries(settings: &Settings) -> anyhow::Result<Vec<Arc<dyn Registry>>> {
    let (_, interest) = watch::channel(Interest::default());
    registries_with_interest(settings, interest)
}

/// Builds the registry adapters; those that follow only what routing
/// references (Consul) follow `interest`.
pub fn registries_with_interest(
    settings: &Settings,
    interest: watch::Receiver<Interest>,
) -> anyhow::Result<Vec<Arc<dyn Registry>>> {
    let mut out = Vec::new();
    for r in &settings.registries {
        let source = SourceId::new(&r.name);
        let mapping = Arc::new(r.mapping.clone());
        let adapter: Arc<dyn Registry> = match &r.kind {
            RegistryKind::File {
                path,
                poll_interval,
            } => {
                Arc::new(FileRegistry::new(source, path.clone()).with_poll_interval(*poll_interval))
            }
            RegistryKind::Etcd(cfg) => Arc::new(
                EtcdRegistry::new(source, (**cfg).clone())
                    .with_context(|| format!("registry {}", r.name))?,
            ),
            RegistryKind::Eureka(cfg) => Arc::new(
                EurekaRegistry::new(source, (**cfg).clone())
                    .with_context(|| format!("registry {}", r.name))?,
            ),
            RegistryKind::Marathon(cfg) => Arc::new(
                MarathonRegistry::new(source, (**cfg).clone())
                    .with_context(|| format!("registry {}", r.name))?,
            ),
            RegistryKind::Kubernetes(cfg) => Arc::new(
                KubernetesRegistry::new(source, (**cfg).clone())
                    .with_context(|| format!("registry {}", r.name))?,
            ),
            RegistryKind::Consul(cfg) => {
                // One source per datacenter.
                for (source, dc) in cfg.sources(&r.name) {
                    let adapter = ConsulRegistry::new(source, (**cfg).clone(), dc)
                        .with_context(|| format!("registry {}", r.name))?
                        .with_interest(interest.clone(), mapping.clone());
                    out.push(MappedRegistry::wrap(Arc::new(adapter), mapping.clone()));
                }
                continue;
            }
        };
        out.push(MappedRegistry::wrap(adapter, mapping));
    }
    Ok(out)
}

/// Loads every routing file. Errors make the set unusable; warnings do not.
pub fn load_routing(settings: &Settings) -> anyhow::Result<(ConfigSet, Vec<Diagnostic>)> {
    let files = settings.routing_files()?;
    Ok(config::load_files(&files))
}

impl Mesh {
    /// Binds the listeners and starts every component. Fails on a bad routing config.
    pub async fn start(settings: Settings) -> anyhow::Result<Mesh> {
        // Stamped before loading, so an edit made during start-up is not missed.
        let stamps = stamp(&settings);
        let (routing, diags) = load_routing(&settings)?;
        if config::has_errors(&diags) {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            anyhow::bail!("routing config has errors:\n{}", lines.join("\n"));
        }
        for d in &diags {
            tracing::warn!("{d}");
        }
        let outbound = TcpListener::bind(settings.listeners.outbound)
            .await
            .with_context(|| {
                format!(
                    "cannot bind outbound listener {}",
                    settings.listeners.outbound
                )
            })?;
        let admin = TcpListener::bind(settings.listeners.admin)
            .await
            .with_context(|| format!("cannot bind admin listener {}", settings.listeners.admin))?;
        let outbound_addr = outbound.local_addr()?;
        let admin_addr = admin.local_addr()?;

        let mut tasks = JoinSet::new();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        // Registries → catalog. Registries that follow only what routing
        // references (Consul) learn it from the routing files.
        let (interest_tx, interest_rx) = watch::channel(Interest::from_config(&routing));
        let adapters = registries_with_interest(&settings, interest_rx)?;
        let (change_tx, change_rx) = mpsc::channel(1024);
        let mut state = CatalogState::new(adapters.iter().map(|r| r.source().clone()));
        for r in &settings.registries {
            if let Some(g) = r.guard.settings() {
                for source in r.sources() {
                    state = state.with_guard(&source, g);
                }
            }
        }
        let state_dir = match &settings.state_dir {
            Some(d) => Some(StateDir::open(d)?),
            None => None,
        };
        if let Some(dir) = &state_dir {
            restore(dir, &mut state);
        }
        // Version 0 lists every source as not yet synced, so readiness waits for them.
        let (snap_tx, snap_rx) = watch::channel(Arc::new(state.snapshot(0)));
        match state_dir {
            Some(dir) => {
                let sources: Vec<SourceId> = adapters.iter().map(|r| r.source().clone()).collect();
                tasks.spawn(catalog::run_with(
                    state,
                    change_rx,
                    snap_tx,
                    saver(dir, sources),
                ));
            }
            None => {
                tasks.spawn(catalog::run(state, change_rx, snap_tx));
            }
        }
        for adapter in adapters {
            let sink = ChangeSink::new(adapter.source().clone(), change_tx.clone());
            let mut stop = shutdown_rx.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = adapter.run(sink) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
        drop(change_tx);

        // Routing files, reloaded when they change.
        let (cfg_tx, cfg_rx) = watch::channel(Arc::new(routing));
        tasks.spawn(follow_interest(
            cfg_rx.clone(),
            interest_tx,
            shutdown_rx.clone(),
        ));
        let diagnostics = Arc::new(ArcSwap::from_pointee(
            diags.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ));
        let mut registry = prometheus_client::registry::Registry::default();
        crate::source_metrics::spawn(&mut registry, snap_rx.clone());
        // Istio resources from Kubernetes clusters, merged with the files.
        let cluster = crate::cluster_routing::spawn(
            crate::cluster_routing::sources(&settings)?,
            &mut tasks,
            &shutdown_rx,
        );
        tasks.spawn(reload_routing(
            settings.clone(),
            stamps,
            cfg_tx,
            diagnostics.clone(),
            ReloadMetrics::new(&mut registry),
            cluster,
            shutdown_rx.clone(),
        ));

        // Compiler → router.
        let metrics = Arc::new(Metrics::new(&mut registry));
        let router = Arc::new(Router::new());
        let (ready_tx, ready_rx) = watch::channel(false);
        let compile_warnings = Arc::new(ArcSwap::from_pointee(Vec::new()));
        tasks.spawn(compile_loop(
            snap_rx.clone(),
            cfg_rx,
            CompileOutputs {
                router: router.clone(),
                metrics: metrics.clone(),
                ready: ready_tx,
                warnings: compile_warnings.clone(),
            },
            shutdown_rx.clone(),
        ));

        // Listeners.
        let upstream = UpstreamSettings {
            connect_timeout: settings.upstream.connect_timeout,
            pool_idle_timeout: settings.upstream.pool_idle_timeout,
            pool_max_idle_per_host: settings.upstream.pool_max_idle_per_host,
        };
        let server = ServerSettings {
            header_read_timeout: settings.listeners.header_read_timeout,
        };
        // Listener threads, apart from this one (the control thread: registries,
        // routing reloads and compiles, admin), so that a large registry
        // change being parsed and compiled never holds up a request. Each
        // runs its own single-threaded runtime, so a connection, its tasks
        // and its upstream connections stay on one thread (as nginx's
        // workers do); the first accepts and deals the connections out in
        // turn.
        let listener = Listener {
            router: router.clone(),
            metrics,
            upstream,
            server,
            stop: shutdown_rx.clone(),
        };
        let mut others = Vec::new();
        for i in 1..settings.listeners.threads.max(1) {
            let (tx, conns) = Connections::handoff();
            others.push(tx);
            let done = listener.spawn(i, move || Ok(conns)).await?;
            // The mesh's shutdown waits for every listener thread's drain.
            tasks.spawn(done);
        }
        let outbound = outbound
            .into_std()
            .context("cannot hand the outbound listener to its thread")?;
        let done = listener
            .spawn(0, move || {
                Ok(Connections::Accept {
                    listener: TcpListener::from_std(outbound)?,
                    others,
                })
            })
            .await?;
        tasks.spawn(done);
        let admin_state = Arc::new(AdminState {
            router: router.clone(),
            catalog: snap_rx.clone(),
            registry,
            diagnostics,
            compile_warnings,
            ready: ready_rx,
        });
        tasks.spawn(serve_admin(admin, admin_state, stopped(shutdown_rx)));

        tracing::info!(outbound = %outbound_addr, admin = %admin_addr, "anymesh listening");
        Ok(Mesh {
            outbound: outbound_addr,
            admin: admin_addr,
            router,
            catalog: snap_rx,
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

/// What every listener thread serves with.
struct Listener {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    upstream: UpstreamSettings,
    server: ServerSettings,
    stop: watch::Receiver<bool>,
}

impl Listener {
    /// Starts listener thread `i`, which serves the connections `conns`
    /// gives (called on that thread, inside its runtime). Returns once the
    /// thread serves, or with the reason it cannot; the returned future ends
    /// when the thread has drained and stopped.
    async fn spawn(
        &self,
        i: usize,
        conns: impl FnOnce() -> std::io::Result<Connections> + Send + 'static,
    ) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let (router, metrics, upstream, server, stop) = (
            self.router.clone(),
            self.metrics.clone(),
            self.upstream.clone(),
            self.server,
            self.stop.clone(),
        );
        std::thread::Builder::new()
            .name(format!("anymesh-listener-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match conns() {
                        Ok(conns) => {
                            let _ = started_tx.send(Ok(()));
                            let proxy = Arc::new(Proxy::new(router, metrics, &upstream));
                            serve_connections(conns, proxy, server, stopped(stop)).await;
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(format!("cannot listen: {e}")));
                        }
                    }
                });
                drop(done_tx);
            })
            .context("cannot start a listener thread")?;
        // A mesh missing a listener thread would serve with less than it was
        // configured for, quietly: it does not start instead.
        match started_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("listener thread {i} {e}"),
            Err(_) => anyhow::bail!("listener thread {i} ended before it started serving"),
        }
        Ok(async move {
            let _ = done_rx.await;
        })
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Seeds the catalog with each source's saved view (served, marked stale,
/// until the registry answers).
fn restore(dir: &StateDir, state: &mut CatalogState) {
    let sources: Vec<SourceId> = state.sources().cloned().collect();
    for source in sources {
        match dir.load(&source) {
            Ok(Some(saved)) => {
                let endpoints = saved.view.endpoints.len();
                let saved_secs = saved
                    .saved_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                state.restore(&source, saved.view, saved.saved_at, SystemTime::now());
                tracing::warn!(
                    source = %source,
                    endpoints,
                    saved_at = saved_secs,
                    "registry not read yet: serving its last saved view (fail-static) until it answers"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(source = %source, error = %format!("{e:#}"), "ignoring the saved view")
            }
        }
    }
}

/// After each catalog batch: saves the view of every connected source whose
/// data changed. Writes happen off the catalog task, newest view wins.
fn saver(dir: StateDir, sources: Vec<SourceId>) -> impl FnMut(&CatalogState) + Send {
    let (tx, mut rx) = mpsc::channel::<(SourceId, SourceView)>(64);
    tokio::spawn(async move {
        while let Some((source, view)) = rx.recv().await {
            let dir = dir.clone();
            let result = tokio::task::spawn_blocking(move || dir.save(&source, &view)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot save a registry's view")
                }
                Err(e) => tracing::warn!(error = %e, "saving a registry's view failed"),
            }
        }
    });
    let mut saved_at_change: std::collections::HashMap<SourceId, u64> = Default::default();
    move |state: &CatalogState| {
        for source in &sources {
            let Some(info) = state.source_info(source) else {
                continue;
            };
            // Only a view the registry itself confirmed is worth keeping.
            if !(info.synced && info.connected)
                || saved_at_change.get(source) == Some(&info.change_count)
            {
                continue;
            }
            if let Some(view) = state.source_view(source) {
                if tx.try_send((source.clone(), view)).is_ok() {
                    saved_at_change.insert(source.clone(), info.change_count);
                }
            }
        }
    }
}

/// Where each compiled table goes.
struct CompileOutputs {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    ready: watch::Sender<bool>,
    warnings: Arc<ArcSwap<Vec<String>>>,
}

async fn compile_loop(
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    mut cfg: watch::Receiver<Arc<ConfigSet>>,
    out: CompileOutputs,
    mut stop: watch::Receiver<bool>,
) {
    let mut version = 0u64;
    // Recompiles only the services a catalog change touched.
    let mut compiler = IncrementalCompiler::new();
    let mut last_warnings = Vec::new();
    let (mut snaps_open, mut cfg_open) = (true, true);
    loop {
        let snap = snaps.borrow_and_update().clone();
        let config = cfg.borrow_and_update().clone();
        version += 1;
        let (table, diags) = compiler.compile(&snap, &config, version);
        let lines: Vec<String> = diags
            .iter()
            .map(|d| format!("{}: {d}", if d.is_error() { "error" } else { "warning" }))
            .collect();
        // Before every registry has answered, "host resolves to no service" is expected noise.
        if snap.all_synced() && lines != last_warnings {
            for d in &diags {
                if d.is_error() {
                    tracing::error!("{d}");
                } else {
                    tracing::warn!("{d}");
                }
            }
            out.warnings.store(Arc::new(lines.clone()));
            last_warnings = lines;
        }
        out.router.install(Arc::new(table), snap.all_synced());
        out.metrics.route_table_version.set(version as i64);
        out.metrics.route_table_swaps.inc();
        tracing::debug!(
            version,
            catalog = snap.version,
            pass = ?compiler.last_pass(),
            "route table installed"
        );
        out.ready.send_replace(snap.all_synced());
        // Wait for a change; an input whose sender is gone (e.g. no registries:
        // the catalog task has ended) just stops being watched.
        loop {
            tokio::select! {
                r = snaps.changed(), if snaps_open => match r {
                    Ok(()) => break,
                    Err(_) => snaps_open = false,
                },
                r = cfg.changed(), if cfg_open => match r {
                    Ok(()) => break,
                    Err(_) => cfg_open = false,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Keeps the interest of registries that follow only referenced services
/// in step with the routing config in force.
async fn follow_interest(
    mut cfg: watch::Receiver<Arc<ConfigSet>>,
    interest: watch::Sender<Interest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = cfg.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let next = Interest::from_config(&cfg.borrow_and_update());
        interest.send_if_modified(|cur| {
            let changed = *cur != next;
            if changed {
                *cur = next;
            }
            changed
        });
    }
}

/// Modification time and size of each routing file: a change in either means "reload".
type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamp(settings: &Settings) -> Stamps {
    settings
        .routing_files()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let m = meta.and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, m)
        })
        .collect()
}

/// Metrics of routing-file reloads.
#[derive(Clone)]
struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    /// 1 while the routing files on disk are the ones in force; 0 after a refused reload.
    in_force: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

impl ReloadMetrics {
    fn new(registry: &mut prometheus_client::registry::Registry) -> Self {
        let m = Self {
            reloads: Family::default(),
            in_force: Gauge::default(),
        };
        m.in_force.set(1);
        let r = registry.sub_registry_with_prefix("anymesh");
        r.register(
            "routing_reloads",
            "Routing-file reloads by result (ok, error)",
            m.reloads.clone(),
        );
        r.register(
            "routing_files_in_force",
            "1 when the routing files on disk are in force, 0 when the last reload was refused",
            m.in_force.clone(),
        );
        m
    }
}

/// Watches the routing files (by modification time and size) and publishes a
/// new config set when they change. A set with errors is refused: its errors
/// are logged and shown in `/config`, and the last good set stays in force.
/// With routing from clusters, the last good files are merged with the
/// clusters' resources and published again whenever either changes (see
/// [`crate::cluster_routing`]).
async fn reload_routing(
    settings: Settings,
    mut last: Stamps,
    tx: watch::Sender<Arc<ConfigSet>>,
    diagnostics: Arc<ArcSwap<Vec<String>>>,
    metrics: ReloadMetrics,
    mut cluster: Option<watch::Receiver<crate::cluster_routing::ClusterViews>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(settings.routing_reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The files in force and what `/config` shows about them.
    let mut files = tx.borrow().clone();
    let mut file_lines: Vec<String> = diagnostics.load().to_vec();
    let mut logged = crate::cluster_routing::ClusterViews::new();
    loop {
        let cluster_changed = tokio::select! {
            _ = tick.tick() => false,
            r = async { cluster.as_mut()?.changed().await.ok() }, if cluster.is_some() => {
                if r.is_none() {
                    cluster = None;
                }
                r.is_some()
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        let now = stamp(&settings);
        if now == last && !cluster_changed {
            continue;
        }
        if now != last {
            last = now;
            let refused = |lines: Vec<String>| {
                for l in &lines {
                    tracing::error!("{l}");
                }
                tracing::error!("routing config not reloaded: the previous config stays in force");
                let mut shown = vec![
                    "last reload refused; the previous routing config stays in force".to_string(),
                ];
                shown.extend(lines);
                diagnostics.store(Arc::new(shown.clone()));
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "error" })
                    .inc();
                metrics.in_force.set(0);
                shown
            };
            match load_routing(&settings) {
                Ok((set, diags)) if !config::has_errors(&diags) => {
                    for d in &diags {
                        tracing::warn!("{d}");
                    }
                    tracing::info!("routing config reloaded");
                    file_lines = diags.iter().map(ToString::to_string).collect();
                    diagnostics.store(Arc::new(file_lines.clone()));
                    metrics
                        .reloads
                        .get_or_create(&ReloadLabels { result: "ok" })
                        .inc();
                    metrics.in_force.set(1);
                    files = Arc::new(set);
                    if cluster.is_none() {
                        tx.send_replace(files.clone());
                    }
                }
                Ok((_, diags)) => {
                    file_lines = refused(
                        diags
                            .iter()
                            .filter(|d| d.is_error())
                            .map(ToString::to_string)
                            .collect(),
                    );
                }
                Err(e) => file_lines = refused(vec![format!("{e:#}")]),
            }
        }
        if let Some(c) = &mut cluster {
            let views = c.borrow_and_update().clone();
            crate::cluster_routing::log(&views, &mut logged);
            let (set, lines) = crate::cluster_routing::combine(&files, &file_lines, &views);
            diagnostics.store(Arc::new(lines));
            tx.send_replace(Arc::new(set));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener thread that cannot serve makes the start fail with the
    /// reason, instead of a mesh that runs short of a thread.
    #[tokio::test]
    async fn a_listener_thread_that_cannot_listen_fails_the_start() {
        let mut registry = prometheus_client::registry::Registry::default();
        let (_stop_tx, stop) = watch::channel(false);
        let listener = Listener {
            router: Arc::new(Router::new()),
            metrics: Arc::new(Metrics::new(&mut registry)),
            upstream: UpstreamSettings::default(),
            server: ServerSettings::default(),
            stop,
        };
        let failed = listener
            .spawn(3, || Err(std::io::Error::other("no sockets left")))
            .await;
        let err = failed.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert_eq!(err, "listener thread 3 cannot listen: no sockets left");
        let (_tx, conns) = Connections::handoff();
        let started = listener.spawn(4, move || Ok(conns)).await;
        assert!(started.is_ok(), "a thread that can serve starts");
    }
}
