//! The compile task: a new route table for every new catalog snapshot or
//! routing config, installed in the router with one swap.

use std::sync::Arc;

use anymesh_core::config::ConfigSet;
use anymesh_core::routes::compile::IncrementalCompiler;
use anymesh_core::Snapshot;
use anymesh_proxy::{Metrics, Router};
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the compile task keeps up to date.
pub(super) struct Compiled {
    pub(super) router: Arc<Router>,
    /// True once every registry has answered and its table is installed.
    pub(super) ready: watch::Receiver<bool>,
    /// The last compile's diagnostics, as `/config` shows them.
    pub(super) warnings: Arc<ArcSwap<Vec<String>>>,
}

/// Starts the compile task (it ends on `stop`), installing into `router`.
pub(super) fn start(
    router: Arc<Router>,
    snaps: watch::Receiver<Arc<Snapshot>>,
    cfg: watch::Receiver<Arc<ConfigSet>>,
    metrics: Arc<Metrics>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> Compiled {
    let (ready_tx, ready_rx) = watch::channel(false);
    let warnings = Arc::new(ArcSwap::from_pointee(Vec::new()));
    tasks.spawn(compile_loop(
        snaps,
        cfg,
        CompileOutputs {
            router: router.clone(),
            metrics,
            ready: ready_tx,
            warnings: warnings.clone(),
        },
        stop.clone(),
    ));
    Compiled {
        router,
        ready: ready_rx,
        warnings,
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
