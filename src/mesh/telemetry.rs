//! The local workload's Telemetry policy (Istio's Telemetry API), kept
//! current with the config: compiled at start and whenever the config set
//! changes, published in [`Metrics::policy`] where the standard metrics,
//! the access log and tracing read it.
//!
//! ```text
//! config set ──changed──► TelemetryPolicies::compile ──for_workload──► Metrics::set_telemetry_policy
//! ```
//!
//! The workload is the proxy's first declared one (the one its metrics
//! name). Without one, only the root namespace's Telemetry without a
//! selector (the mesh level) applies.

use std::sync::Arc;

use anymesh_core::config::ConfigSet;
use anymesh_core::model::Labels;
use anymesh_core::security::WorkloadRef;
use anymesh_core::telemetry::{TelemetryPolicies, TelemetryPolicy};
use anymesh_proxy::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::Settings;

/// Puts the policy of `config` in force in `metrics` and keeps it current
/// as the config changes, until `stop`.
pub(super) fn start(
    settings: &Settings,
    mut config: watch::Receiver<Arc<ConfigSet>>,
    metrics: Arc<Metrics>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) {
    let local = Local::new(settings);
    let set = config.borrow_and_update().clone();
    apply(&metrics, local.policy(&set));
    let mut stop = stop.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                changed = config.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let set = config.borrow_and_update().clone();
            apply(&metrics, local.policy(&set));
        }
    });
}

fn apply(metrics: &Metrics, policy: Arc<TelemetryPolicy>) {
    let sources = policy.sources.join(", ");
    if metrics.set_telemetry_policy(policy) {
        tracing::info!(telemetry = %sources, "telemetry: policy updated");
    }
}

/// What selects the local workload's Telemetry.
struct Local {
    root_namespace: String,
    /// The first workload's namespace and labels; `None` without one.
    workload: Option<(String, Labels)>,
}

impl Local {
    fn new(settings: &Settings) -> Self {
        Self {
            root_namespace: settings.mesh.root_namespace.clone(),
            workload: settings
                .workloads
                .first()
                .map(|w| (w.namespace.clone(), w.labels.clone())),
        }
    }

    /// The policy `set` gives the local workload.
    fn policy(&self, set: &ConfigSet) -> Arc<TelemetryPolicy> {
        let policies = TelemetryPolicies::compile(set, &self.root_namespace);
        let none = Labels::new();
        let workload = match &self.workload {
            Some((namespace, labels)) => WorkloadRef { namespace, labels },
            // The root namespace with no labels selects the mesh level only:
            // its own namespace level is the mesh level, and no selector
            // (at least one label) matches no labels.
            None => WorkloadRef {
                namespace: &self.root_namespace,
                labels: &none,
            },
        };
        policies.for_workload(&workload)
    }
}

#[cfg(test)]
mod tests {
    use anymesh_core::telemetry::{Side, StandardMetric};

    use super::*;

    const TELEMETRIES: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: root-selected, namespace: istio-system}
spec:
  selector: {matchLabels: {app: gateway}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        response_code: {operation: REMOVE}
";

    fn set() -> ConfigSet {
        let (set, diags) = anymesh_core::config::load_str("t.yaml", TELEMETRIES);
        assert!(diags.is_empty(), "{diags:?}");
        set
    }

    fn local(workload: Option<(&str, &[(&str, &str)])>) -> Local {
        Local {
            root_namespace: "istio-system".into(),
            workload: workload.map(|(ns, labels)| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (ns.to_string(), labels)
            }),
        }
    }

    #[test]
    fn the_first_workload_gets_its_levels_and_none_gets_the_mesh_level() {
        let set = set();
        let cart = local(Some(("shop", &[("app", "cart")]))).policy(&set);
        assert_eq!(cart.sources, ["istio-system/mesh", "shop/cart"]);
        assert!(!cart.metric_enabled(Side::Client, StandardMetric::RequestCount));
        assert!(cart
            .metric(Side::Server, StandardMetric::RequestCount)
            .removes("response_code"));

        let none = local(None).policy(&set);
        assert_eq!(none.sources, ["istio-system/mesh"]);
        assert!(!none.metric_enabled(Side::Client, StandardMetric::RequestCount));
        assert!(none.metric_enabled(Side::Server, StandardMetric::RequestDuration));

        let empty = local(None).policy(&ConfigSet::default());
        assert_eq!(*empty, TelemetryPolicy::default());
    }
}
