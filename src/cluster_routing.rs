//! Routing config from Kubernetes clusters: the Istio VirtualServices and
//! DestinationRules of every `type: kubernetes` registry with
//! `routing_from_cluster: true`, merged with the routing files.
//!
//! Files and cluster resources fail differently. A routing file with an
//! error refuses the whole reload (the last good files stay). A cluster
//! resource with an error is reported and left out; the others apply. The
//! checks across resources (duplicate names, unknown subsets) run on the
//! merged set and drop the offenders, whatever they came from.

use std::collections::BTreeMap;
use std::sync::Arc;

use anymesh_adapter_kubernetes::{ClusterRouting, RoutingView};
use anymesh_core::config::{ConfigSet, Diagnostic};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::{RegistryKind, Settings};

/// Each cluster's routing view, by its label (`<registry> (cluster)`).
pub type ClusterViews = BTreeMap<String, Arc<RoutingView>>;

/// The routing sources the settings name (one per registry that asks).
pub fn sources(settings: &Settings) -> anyhow::Result<Vec<ClusterRouting>> {
    let mut out = Vec::new();
    for r in &settings.registries {
        if let RegistryKind::Kubernetes(cfg) = &r.kind {
            if cfg.routing_from_cluster {
                out.push(ClusterRouting::new(&r.name, (**cfg).clone())?);
            }
        }
    }
    Ok(out)
}

/// Starts a watcher task per source; `None` when there is none (the routing
/// files alone are in force, as without this module).
pub fn spawn(
    sources: Vec<ClusterRouting>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> Option<watch::Receiver<ClusterViews>> {
    if sources.is_empty() {
        return None;
    }
    let initial: ClusterViews = sources
        .iter()
        .map(|s| (s.label().to_string(), Arc::new(RoutingView::default())))
        .collect();
    let (all_tx, all_rx) = watch::channel(initial);
    for source in sources {
        let label = source.label().to_string();
        let (tx, mut rx) = watch::channel(Arc::new(RoutingView::default()));
        let all_tx = all_tx.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let forward = async {
                while rx.changed().await.is_ok() {
                    let view = rx.borrow_and_update().clone();
                    all_tx.send_modify(|all| {
                        all.insert(label.clone(), view);
                    });
                }
            };
            tokio::select! {
                () = source.run(tx) => {}
                () = forward => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    Some(all_rx)
}

/// The routing files' set (already checked on its own) merged with every
/// cluster's resources, the checks across resources run again on the whole,
/// and the lines `/config` shows: `file_lines` first, then each cluster's
/// findings and errors, then what the merge found that the files alone did
/// not.
pub fn combine(
    files: &ConfigSet,
    file_lines: &[String],
    clusters: &ClusterViews,
) -> (ConfigSet, Vec<String>) {
    let mut set = files.clone();
    let mut lines = file_lines.to_vec();
    for (label, view) in clusters {
        set.merge(view.set.clone());
        for d in &view.diagnostics {
            lines.push(line(d));
        }
        if let Some(e) = &view.error {
            lines.push(format!(
                "error: {label}: cannot read routing resources: {e}; the last ones read stay in force"
            ));
        } else if !view.synced {
            lines.push(format!(
                "warning: {label}: routing resources not listed yet"
            ));
        }
    }
    let alone: Vec<Diagnostic> = files.validate();
    for d in set.retain_valid() {
        if !alone.contains(&d) {
            lines.push(line(&d));
        }
    }
    (set, lines)
}

/// A finding about a cluster resource; errors say the resource is skipped.
fn line(d: &Diagnostic) -> String {
    if d.is_error() {
        format!("error: {d} (resource skipped)")
    } else {
        format!("warning: {d}")
    }
}

/// Every cluster's findings as log lines, once a cluster's view changes.
pub fn log(clusters: &ClusterViews, last: &mut ClusterViews) {
    for (label, view) in clusters {
        if last.get(label) == Some(view) {
            continue;
        }
        tracing::info!(
            source = %label,
            virtual_services = view.set.virtual_services.len(),
            destination_rules = view.set.destination_rules.len(),
            skipped = view.diagnostics.iter().filter(|d| d.is_error()).count(),
            "routing resources from the cluster"
        );
    }
    last.clone_from(clusters);
}

#[cfg(test)]
mod tests {
    use super::*;
    use anymesh_core::config::{load_str, parse_str};

    const CLUSTER: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: ok}\nspec:\n  hosts: [reviews]\n  http:\n  \
         - route: [{destination: {host: reviews, subset: v1}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: nosubset}\nspec:\n  hosts: [ratings]\n  http:\n  \
         - route: [{destination: {host: reviews, subset: v9}}]\n";

    fn clusters(error: Option<&str>) -> ClusterViews {
        let (set, diagnostics) = parse_str("k8s (cluster)", CLUSTER);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let mut c = ClusterViews::new();
        c.insert(
            "k8s (cluster)".into(),
            Arc::new(RoutingView {
                set,
                diagnostics,
                synced: true,
                error: error.map(String::from),
            }),
        );
        c
    }

    #[test]
    fn cluster_resources_merge_and_cross_checks_drop_offenders() {
        let (files, diags) = load_str(
            "routes.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  \
             - {name: v1, labels: {version: v1}}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let (set, lines) = combine(&files, &[], &clusters(None));
        let names: Vec<String> = set.virtual_services.iter().map(|v| v.id()).collect();
        assert_eq!(names, vec!["default/ok"], "{lines:?}");
        assert_eq!(set.destination_rules.len(), 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("error: k8s (cluster): VirtualService default/nosubset: spec.http[0].route[0].destination.subset: unknown subset 'v9'"),
            "{lines:?}"
        );
    }

    #[test]
    fn an_unreadable_cluster_is_shown_and_its_last_resources_stay() {
        let (set, lines) = combine(
            &ConfigSet::default(),
            &["a file line".into()],
            &clusters(Some("connection refused")),
        );
        assert_eq!(lines[0], "a file line");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("cannot read routing resources: connection refused")),
            "{lines:?}"
        );
        assert_eq!(set.virtual_services.len(), 2, "{lines:?}");
    }
}
