//! The access log and the tracer, started from anymesh.yaml's `telemetry`
//! key and shared by every listener thread's proxy.

use std::sync::Arc;

use anyhow::Context;
use anymesh_proxy::telemetry::Telemetry;
use anymesh_telemetry::access_log::AccessLog;
use anymesh_telemetry::trace::{LocalInfo, Tracer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::Settings;

/// Starts the access log's writer (reopened on SIGHUP) and the tracer's
/// exporter, when configured.
pub(super) fn start(
    settings: &Settings,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Arc<Telemetry>> {
    let access_log = match &settings.telemetry.access_log {
        Some(config) => {
            let (log, _writer) = AccessLog::new(config.clone())
                .with_context(|| format!("{}: telemetry.access_log", settings.file.display()))?;
            #[cfg(unix)]
            {
                let reopen = log
                    .reopen_on_sighup()
                    .context("listening for SIGHUP to reopen the access log")?;
                let mut stop = stop.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        () = reopen => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
            Some(log)
        }
        None => None,
    };
    let tracer = match &settings.telemetry.tracing {
        Some(config) => Some(
            Tracer::start(config, local_info(settings))
                .with_context(|| format!("{}: telemetry.tracing", settings.file.display()))?,
        ),
        None => None,
    };
    Ok(Arc::new(Telemetry::new(access_log, tracer)))
}

/// The tags every span of this proxy carries, as Istio sets them for a
/// sidecar: its first workload's canonical service, revision and namespace.
fn local_info(settings: &Settings) -> LocalInfo {
    let labels = super::local_labels(settings);
    let w = &labels.workload;
    let namespace = w.namespace.to_string();
    let name = settings
        .workloads
        .first()
        .map_or("anymesh", |w| w.name.as_str());
    LocalInfo {
        service_name: format!("{}.{namespace}", w.canonical_service),
        canonical_service: w.canonical_service.to_string(),
        canonical_revision: w.canonical_revision.to_string(),
        mesh_id: settings.mesh.trust_domain.clone(),
        node_id: format!(
            "sidecar~{}~{name}.{namespace}~{namespace}.svc.cluster.local",
            local_ip(settings)
        ),
        namespace,
    }
}

/// The address the inbound listener is bound to, or loopback.
fn local_ip(settings: &Settings) -> std::net::IpAddr {
    settings.inbound.listen.ip()
}
