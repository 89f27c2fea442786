//! The routing config in force: the routing files, loaded at start and
//! reloaded when they change, merged with the Istio resources of Kubernetes
//! clusters when a registry asks for them ([`crate::cluster_routing`]).
//! Registries that follow only the services routing references (Consul)
//! follow the config in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anymesh_adapter_consul::Interest;
use anymesh_core::config::{self, ConfigSet, Diagnostic};
use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::Settings;

/// Loads every routing file. Errors make the set unusable; warnings do not.
pub fn load_routing(settings: &Settings) -> anyhow::Result<(ConfigSet, Vec<Diagnostic>)> {
    let files = settings.routing_files()?;
    Ok(config::load_files(&files))
}

/// The routing files as loaded at start.
pub(super) struct Initial {
    pub(super) set: ConfigSet,
    diags: Vec<Diagnostic>,
    stamps: Stamps,
}

/// Loads the routing files at start; a set with errors fails the start,
/// warnings are logged.
pub(super) fn load_initial(settings: &Settings) -> anyhow::Result<Initial> {
    // Stamped before loading, so an edit made during start-up is not missed.
    let stamps = stamp(settings);
    let (set, diags) = load_routing(settings)?;
    if config::has_errors(&diags) {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::bail!("routing config has errors:\n{}", lines.join("\n"));
    }
    for d in &diags {
        tracing::warn!("{d}");
    }
    Ok(Initial { set, diags, stamps })
}

/// The routing config in force, and what `/config` shows about it.
pub(super) struct Routing {
    pub(super) set: watch::Receiver<Arc<ConfigSet>>,
    pub(super) diagnostics: Arc<ArcSwap<Vec<String>>>,
}

/// Starts the tasks that keep the routing config in force up to date (the
/// file reloads, the clusters' resources) and the registries' `interest` in
/// step with it; each ends on `stop`.
pub(super) fn start(
    settings: &Settings,
    initial: Initial,
    interest: watch::Sender<Interest>,
    registry: &mut prometheus_client::registry::Registry,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Routing> {
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(initial.set));
    tasks.spawn(follow_interest(cfg_rx.clone(), interest, stop.clone()));
    let diagnostics = Arc::new(ArcSwap::from_pointee(
        initial
            .diags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    ));
    // Istio resources from Kubernetes clusters, merged with the files.
    let cluster =
        crate::cluster_routing::spawn(crate::cluster_routing::sources(settings)?, tasks, stop);
    tasks.spawn(reload_routing(
        settings.clone(),
        initial.stamps,
        cfg_tx,
        diagnostics.clone(),
        ReloadMetrics::new(registry),
        cluster,
        stop.clone(),
    ));
    Ok(Routing {
        set: cfg_rx,
        diagnostics,
    })
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
