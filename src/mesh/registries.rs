//! The registry factory, and the registries running into the catalog.
//!
//! Each configured registry becomes one adapter (Consul: one per datacenter)
//! wrapped in its mapping rules. The adapters send their changes through one
//! bounded channel to the catalog task, which starts from each source's saved
//! view when a state directory is set (fail-static, [`crate::persist`]).

use std::sync::Arc;

use anyhow::Context;
use anymesh_adapter_consul::{ConsulRegistry, Interest};
use anymesh_adapter_etcd::EtcdRegistry;
use anymesh_adapter_eureka::EurekaRegistry;
use anymesh_adapter_file::FileRegistry;
use anymesh_adapter_kubernetes::KubernetesRegistry;
use anymesh_adapter_marathon::MarathonRegistry;
use anymesh_core::catalog::{self, CatalogState};
use anymesh_core::{ChangeSink, MappedRegistry, Registry, Snapshot, SourceId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::persist::{self, StateDir};
use crate::settings::{RegistryKind, Settings};

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

/// Starts the catalog task and one task per registry adapter (each ends on
/// `stop`); returns the catalog's snapshots.
pub(super) fn start(
    settings: &Settings,
    interest: watch::Receiver<Interest>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<watch::Receiver<Arc<Snapshot>>> {
    let adapters = registries_with_interest(settings, interest)?;
    let sources: Vec<SourceId> = adapters.iter().map(|r| r.source().clone()).collect();
    let (change_tx, change_rx) = mpsc::channel(1024);
    let mut state = CatalogState::new(sources.iter().cloned());
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
        persist::restore(dir, &mut state);
    }
    // Version 0 lists every source as not yet synced, so readiness waits for them.
    let (snap_tx, snap_rx) = watch::channel(Arc::new(state.snapshot(0)));
    match state_dir {
        Some(dir) => {
            let save = persist::saver(dir, sources);
            tasks.spawn(catalog::run_with(state, change_rx, snap_tx, save));
        }
        None => {
            tasks.spawn(catalog::run(state, change_rx, snap_tx));
        }
    }
    for adapter in adapters {
        let sink = ChangeSink::new(adapter.source().clone(), change_tx.clone());
        let mut stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = adapter.run(sink) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    Ok(snap_rx)
}
