//! Registry source state as Prometheus metrics, updated from each catalog
//! snapshot. Labels are the configured source names (bounded).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anymesh_core::Snapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Default)]
struct SourceMetrics {
    connected: Family<SourceLabels, Gauge>,
    stale: Family<SourceLabels, Gauge>,
    restored: Family<SourceLabels, Gauge>,
    stale_since: Family<SourceLabels, FloatGauge>,
    last_full_sync: Family<SourceLabels, FloatGauge>,
    changes: Family<SourceLabels, Counter>,
    endpoints: Family<SourceLabels, Gauge>,
    held: Family<SourceLabels, Gauge>,
}

fn secs(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Registers the metrics and keeps them current until the catalog stops.
pub fn spawn(registry: &mut Registry, mut catalog: watch::Receiver<Arc<Snapshot>>) {
    let m = SourceMetrics::default();
    let r = registry.sub_registry_with_prefix("anymesh_registry");
    r.register(
        "connected",
        "1 while the registry answers",
        m.connected.clone(),
    );
    r.register(
        "stale",
        "1 while the last good view is served because the registry fails",
        m.stale.clone(),
    );
    r.register(
        "restored",
        "1 while the view is one saved before a restart, not yet confirmed",
        m.restored.clone(),
    );
    r.register(
        "stale_since_seconds",
        "Unix time the source became stale (0: not stale)",
        m.stale_since.clone(),
    );
    r.register(
        "last_full_sync_seconds",
        "Unix time of the last full list (0: never)",
        m.last_full_sync.clone(),
    );
    r.register("changes", "Changes to the source's view", m.changes.clone());
    r.register(
        "endpoints",
        "Endpoints the registry lists",
        m.endpoints.clone(),
    );
    r.register(
        "held_endpoints",
        "Endpoints removed by the registry but held by the guard",
        m.held.clone(),
    );
    tokio::spawn(async move {
        let mut counted: HashMap<String, u64> = HashMap::new();
        loop {
            let snap = catalog.borrow_and_update().clone();
            for info in &snap.sources {
                let l = SourceLabels {
                    source: info.source.to_string(),
                };
                m.connected.get_or_create(&l).set(i64::from(info.connected));
                m.stale
                    .get_or_create(&l)
                    .set(i64::from(info.stale_since.is_some()));
                m.restored
                    .get_or_create(&l)
                    .set(i64::from(info.restored_from.is_some()));
                m.stale_since.get_or_create(&l).set(secs(info.stale_since));
                m.last_full_sync
                    .get_or_create(&l)
                    .set(secs(info.last_full_sync));
                m.endpoints.get_or_create(&l).set(info.endpoints as i64);
                m.held.get_or_create(&l).set(info.held_endpoints as i64);
                let seen = counted.entry(l.source.clone()).or_insert(0);
                if info.change_count > *seen {
                    m.changes
                        .get_or_create(&l)
                        .inc_by(info.change_count - *seen);
                    *seen = info.change_count;
                }
            }
            if catalog.changed().await.is_err() {
                return;
            }
        }
    });
}
