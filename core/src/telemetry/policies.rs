//! [`TelemetryPolicies`]: every Telemetry of a [`ConfigSet`] indexed by
//! level, with each combination that can apply to a workload merged once.

use std::collections::HashMap;
use std::sync::Arc;

use super::merge::merge;
use super::TelemetryPolicy;
use crate::config::telemetry::Telemetry;
use crate::config::{ConfigSet, Resource};
use crate::security::WorkloadRef;

/// The Telemetry resources of one namespace, by position in the config.
#[derive(Debug, Clone, Default)]
struct Namespace {
    /// The first without a selector (Istio: the oldest).
    wide: Option<usize>,
    /// Those with a selector, in load order (the first that matches applies).
    selected: Vec<usize>,
}

/// The compiled Telemetry policies of a config.
#[derive(Debug, Clone, Default)]
pub struct TelemetryPolicies {
    root_namespace: String,
    telemetries: Vec<Resource<Telemetry>>,
    namespaces: HashMap<String, Namespace>,
    /// (namespace level, workload level) → merged policy; the root level is
    /// the same for every workload.
    merged: HashMap<(Option<usize>, Option<usize>), Arc<TelemetryPolicy>>,
}

impl TelemetryPolicies {
    /// Compiles the accepted Telemetry resources of `config` (see
    /// [`ConfigSet::retain_valid`]); `root_namespace` is the mesh's root
    /// namespace ([`crate::security::DEFAULT_ROOT_NAMESPACE`] unless
    /// configured). Every policy a workload can get is merged here.
    pub fn compile(config: &ConfigSet, root_namespace: &str) -> TelemetryPolicies {
        let mut namespaces: HashMap<String, Namespace> = HashMap::new();
        for (i, t) in config.telemetries.iter().enumerate() {
            let ns = namespaces.entry(t.namespace.clone()).or_default();
            if t.spec.has_selector() {
                ns.selected.push(i);
            } else if ns.wide.is_none() {
                ns.wide = Some(i);
            }
        }
        let mut out = TelemetryPolicies {
            root_namespace: root_namespace.to_string(),
            telemetries: config.telemetries.clone(),
            namespaces,
            merged: HashMap::new(),
        };
        let mut keys = vec![(None, None)];
        for (name, ns) in &out.namespaces {
            let wide = out.namespace_level(name, ns);
            keys.push((wide, None));
            keys.extend(ns.selected.iter().map(|j| (wide, Some(*j))));
        }
        for key in keys {
            if !out.merged.contains_key(&key) {
                let policy = Arc::new(out.merge_levels(key));
                out.merged.insert(key, policy);
            }
        }
        out
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// Whether no Telemetry resource was given (every workload gets the
    /// default policy).
    pub fn is_empty(&self) -> bool {
        self.telemetries.is_empty()
    }

    /// The policy of a local workload. Cheap (a scan of its namespace's
    /// selectors and an `Arc` clone); still, call it once per config change
    /// per workload, not per request.
    pub fn for_workload(&self, w: &WorkloadRef<'_>) -> Arc<TelemetryPolicy> {
        let key = match self.namespaces.get(w.namespace) {
            None => (None, None),
            Some(ns) => (
                self.namespace_level(w.namespace, ns),
                ns.selected.iter().copied().find(|j| {
                    self.telemetries[*j]
                        .spec
                        .selector
                        .as_ref()
                        .is_some_and(|s| s.matches(w.labels))
                }),
            ),
        };
        match self.merged.get(&key) {
            Some(p) => Arc::clone(p),
            // Every reachable key was merged in `compile`; merge anyway
            // rather than fail.
            None => Arc::new(self.merge_levels(key)),
        }
    }

    /// The namespace level of a namespace: its first Telemetry without a
    /// selector, except in the root namespace, whose one is the mesh level.
    fn namespace_level(&self, name: &str, ns: &Namespace) -> Option<usize> {
        (name != self.root_namespace).then_some(ns.wide).flatten()
    }

    fn merge_levels(
        &self,
        (namespace, workload): (Option<usize>, Option<usize>),
    ) -> TelemetryPolicy {
        let root = self
            .namespaces
            .get(&self.root_namespace)
            .and_then(|ns| ns.wide);
        let levels: Vec<_> = [root, namespace, workload]
            .into_iter()
            .flatten()
            .filter_map(|i| self.telemetries.get(i))
            .map(|r| (r.id(), &r.spec))
            .collect();
        merge(&levels)
    }
}
