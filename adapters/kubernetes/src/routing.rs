//! [`ClusterRouting`]: Istio VirtualServices and DestinationRules
//! (`networking.istio.io`) watched in the cluster as routing config.
//!
//! One kube-runtime watcher per kind and namespace scope, on
//! [`DynamicObject`]s (no generated types: the custom resources are read as
//! the routing files are). Each object is turned into the document a
//! routing file would hold (`apiVersion`, `kind`, `metadata.name`,
//! `metadata.namespace`, `spec`) and parsed on its own by
//! [`anymesh_core::config::parse_str`], so it gets the same checks and
//! warnings as file config, with diagnostics that name it
//! (`<registry> (cluster): VirtualService ns/name: spec.http[0]…`). An
//! object with an error is left out; the others apply. The checks across
//! resources run where the set is merged with the routing files.
//!
//! Nothing is published until every watcher has listed once. On an API
//! error the last published resources stay, the error is published beside
//! them, and the watchers restart after a backoff (410 Gone relists as in
//! the registry).

use std::sync::Arc;

use anymesh_core::config::{self, ConfigSet, Diagnostic};
use futures_util::stream::{self, BoxStream, StreamExt};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::KubernetesConfig;
use crate::error::KubernetesError;
use crate::registry::{chain, connect, gone, Gone, Mirror, Step};
use anymesh_core::backoff::Backoff;

/// The API group of the resources read.
pub const ISTIO_GROUP: &str = "networking.istio.io";

/// The kinds read, with their plural (the URL segment).
const KINDS: [(&str, &str); 2] = [
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
];

/// What the cluster's routing resources amount to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingView {
    /// The resources that passed their own checks, VirtualServices then
    /// DestinationRules, each by `namespace/name`. The checks across
    /// resources are still to run (with the files).
    pub set: ConfigSet,
    /// Findings about the resources; a resource with an error is not in `set`.
    pub diagnostics: Vec<Diagnostic>,
    /// Every watcher has listed once.
    pub synced: bool,
    /// The last list or watch failure, until the watchers list again; `set`
    /// is then the last one read.
    pub error: Option<String>,
}

/// Watches one cluster's VirtualServices and DestinationRules.
#[derive(Debug, Clone)]
pub struct ClusterRouting {
    label: String,
    config: KubernetesConfig,
}

/// One object parsed on its own.
type Parsed = (ConfigSet, Vec<Diagnostic>);
type Item = (usize, Result<watcher::Event<DynamicObject>, watcher::Error>);

impl ClusterRouting {
    /// Routing read through the registry `registry`'s connection and
    /// namespaces, at its `istio_version`.
    pub fn new(registry: &str, config: KubernetesConfig) -> Result<Self, KubernetesError> {
        config.validate()?;
        Ok(Self {
            label: label(registry),
            config,
        })
    }

    /// What diagnostics name as their file: `<registry> (cluster)`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Lists and watches until the task is cancelled, publishing every
    /// change to `out`. Never returns.
    pub async fn run(&self, out: watch::Sender<Arc<RoutingView>>) {
        let mut backoff = self.config.backoff.start();
        loop {
            match self.session(&out, &mut backoff).await {
                Ok(reason) => {
                    tracing::info!(%reason, "istio resources: watch expired; listing again");
                }
                Err(message) => {
                    tracing::warn!(error = %message, "istio resources unavailable; the last ones read stay in force");
                    out.send_modify(|v| {
                        let mut next = (**v).clone();
                        next.error = Some(message);
                        *v = Arc::new(next);
                    });
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Lists every resource once (for `anymesh check`): the view a watcher
    /// would publish after its first list.
    pub async fn list_once(&self) -> Result<RoutingView, KubernetesError> {
        let client = connect(&self.config.connection).await?;
        let mut view = RoutingView {
            synced: true,
            ..RoutingView::default()
        };
        for (kind, plural) in KINDS {
            let ar = self.api_resource(kind, plural);
            for scope in self.scopes() {
                let api = dynamic_api(&client, &scope, &ar);
                let what = watch_name(plural, &scope);
                let list = api
                    .list(&kube::api::ListParams::default())
                    .await
                    .map_err(|e| KubernetesError::Watch {
                        resource: what,
                        message: chain(&e),
                    })?;
                let mut items: Vec<DynamicObject> = list.items;
                items.sort_by_key(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()));
                for o in &items {
                    let (set, diags) =
                        parse_object(&self.label, kind, &self.config.istio_version, o);
                    view.set.merge(set);
                    view.diagnostics.extend(diags);
                }
            }
        }
        Ok(view)
    }

    fn scopes(&self) -> Vec<Option<String>> {
        if self.config.namespaces.is_empty() {
            vec![None]
        } else {
            self.config.namespaces.iter().cloned().map(Some).collect()
        }
    }

    fn api_resource(&self, kind: &str, plural: &str) -> ApiResource {
        let gvk = GroupVersionKind::gvk(ISTIO_GROUP, &self.config.istio_version, kind);
        ApiResource::from_gvk_with_plural(&gvk, plural)
    }

    /// Lists and watches until something needs a restart: `Ok` for a
    /// quiet relist (410), `Err` with the failure otherwise.
    async fn session(
        &self,
        out: &watch::Sender<Arc<RoutingView>>,
        backoff: &mut Backoff,
    ) -> Result<String, String> {
        let client = connect(&self.config.connection)
            .await
            .map_err(|e| e.to_string())?;
        let (streams, names) = self.watchers(&client);
        let per_kind = streams.len() / KINDS.len();
        let mut events = stream::select_all(streams);
        let mut mirrors: Vec<Mirror<Parsed>> = names.iter().map(|_| Mirror::new()).collect();
        while let Some((i, item)) = events.next().await {
            let what = names.get(i).cloned().unwrap_or_default();
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => match gone(&e) {
                    Gone::InStream => {
                        tracing::info!(watch = %what, "istio resources: watch expired (410); relisting");
                        continue;
                    }
                    Gone::Status => return Ok(format!("{what}: {e}")),
                    Gone::No => {
                        return Err(KubernetesError::Watch {
                            resource: what,
                            message: chain(&e),
                        }
                        .to_string())
                    }
                },
            };
            let Some(mirror) = mirrors.get_mut(i) else {
                continue;
            };
            // As many watchers per kind, VirtualServices first.
            let kind = KINDS[usize::from(i >= per_kind)].0;
            let label = &self.label;
            let version = &self.config.istio_version;
            let step = mirror.apply(ev, |o| parse_object(label, kind, version, &o));
            if step == Step::Nothing || !mirrors.iter().all(|m| m.synced) {
                continue;
            }
            if step == Step::Relisted {
                backoff.reset();
            }
            let view = merge(&mirrors);
            let before = out.borrow().clone();
            for d in &view.diagnostics {
                if before.diagnostics.contains(d) {
                    continue;
                }
                if d.is_error() {
                    tracing::error!("{d} (resource skipped)");
                } else {
                    tracing::warn!("{d}");
                }
            }
            out.send_if_modified(|cur| {
                let changed = **cur != view;
                if changed {
                    *cur = Arc::new(view);
                }
                changed
            });
        }
        Err("every istio resource watch ended".into())
    }

    /// One watcher per kind and namespace scope: index `k * scopes + s`.
    fn watchers(&self, client: &Client) -> (Vec<BoxStream<'static, Item>>, Vec<String>) {
        let mut streams: Vec<BoxStream<'static, Item>> = Vec::new();
        let mut names = Vec::new();
        for (kind, plural) in KINDS {
            let ar = self.api_resource(kind, plural);
            for scope in self.scopes() {
                let api = dynamic_api(client, &scope, &ar);
                let i = streams.len();
                streams.push(
                    watcher(api, watcher::Config::default())
                        .map(move |r| (i, r))
                        .boxed(),
                );
                names.push(watch_name(plural, &scope));
            }
        }
        (streams, names)
    }
}

fn dynamic_api(client: &Client, scope: &Option<String>, ar: &ApiResource) -> Api<DynamicObject> {
    match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

fn watch_name(plural: &str, scope: &Option<String>) -> String {
    match scope {
        Some(ns) => format!("{plural}.{ISTIO_GROUP} in namespace {ns}"),
        None => format!("{plural}.{ISTIO_GROUP} in all namespaces"),
    }
}

/// `<registry> (cluster)`.
pub fn label(registry: &str) -> String {
    format!("{registry} (cluster)")
}

/// Every mirror's resources, in watcher order then by `namespace/name`.
fn merge(mirrors: &[Mirror<Parsed>]) -> RoutingView {
    let mut view = RoutingView {
        synced: true,
        ..RoutingView::default()
    };
    for m in mirrors {
        for (set, diags) in m.live.values() {
            view.set.merge(set.clone());
            view.diagnostics.extend(diags.iter().cloned());
        }
    }
    view
}

/// Parses one object as the document a routing file would hold: the
/// resources it yields (none when it has an error) and the findings, which
/// name `label` as their file.
pub fn parse_object(label: &str, kind: &str, version: &str, object: &DynamicObject) -> Parsed {
    let doc = document(kind, version, object);
    config::parse_str(label, &doc.to_string())
}

/// The routing-file document of an object: `apiVersion`, `kind`,
/// `metadata` (`name`, `namespace`) and `spec` (missing: `{}`).
pub fn document(kind: &str, version: &str, object: &DynamicObject) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(name) = &object.metadata.name {
        metadata.insert("name".into(), json!(name));
    }
    if let Some(ns) = &object.metadata.namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    json!({
        "apiVersion": format!("{ISTIO_GROUP}/{version}"),
        "kind": kind,
        "metadata": metadata,
        "spec": object.data.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_valid_object_parses_like_a_file_document() {
        let o = object(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop", "resourceVersion": "7",
                         "uid": "u", "annotations": {"a": "b"}},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
            "status": {}
        }));
        let (set, diags) = parse_object("k8s (cluster)", "VirtualService", "v1", &o);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(set.virtual_services.len(), 1);
        assert_eq!(set.virtual_services[0].id(), "shop/reviews");
        assert_eq!(set.virtual_services[0].origin.file, "k8s (cluster)");
    }

    #[test]
    fn an_invalid_object_is_left_out_and_named() {
        let o = object(json!({
            "metadata": {"name": "bad", "namespace": "shop"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40}]}]}
        }));
        let (set, diags) = parse_object("k8s (cluster)", "VirtualService", "v1beta1", &o);
        assert!(set.is_empty());
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert!(config::has_errors(&diags), "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.starts_with("k8s (cluster): VirtualService shop/bad: spec.http[0]")),
            "{text:?}"
        );
    }

    #[test]
    fn unsupported_fields_warn_as_in_files() {
        let o = object(json!({
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"host": "reviews", "trafficPolicy": {"tunnel": {"protocol": "CONNECT"}}}
        }));
        let (set, diags) = parse_object("k8s (cluster)", "DestinationRule", "v1alpha3", &o);
        assert_eq!(set.destination_rules.len(), 1);
        assert!(
            !diags.is_empty() && !config::has_errors(&diags),
            "{diags:?}"
        );
        assert!(
            diags[0].to_string().contains("DestinationRule default/r"),
            "{diags:?}"
        );
    }
}
