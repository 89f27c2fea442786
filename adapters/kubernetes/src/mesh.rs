//! Which pods a mesh proxy fronts, and the identity it presents.
//!
//! A pod is fronted by a mesh proxy when its label
//! `security.istio.io/tlsMode` is `istio` (what Istio's injector sets on
//! the pods it gives a sidecar) or its annotation `anymesh.io/inject` is
//! `"true"`, or it names the proxy's port (`anymesh.io/inbound-port`) or a
//! whole SPIFFE ID (`anymesh.io/spiffe-id`); `anymesh.io/inject: "false"`
//! says it is not, whatever else it carries. The proxy listens on
//! `anymesh.io/inbound-port`, else on [`DEFAULT_MESH_PORT`] (Istio's
//! inbound port), and presents the identity of the pod's namespace and
//! service account (`spec.serviceAccountName`, `default` when unset), or
//! the whole `anymesh.io/spiffe-id`.
//!
//! An annotation that cannot be used is an error, never ignored: the
//! endpoints of such a pod are left out and reported rather than reached
//! in plaintext.

use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::Labels;
use anymesh_support::{check_mesh_name, check_spiffe_id, mesh_port};
use k8s_openapi::api::core::v1::Pod;

/// The pod label Istio's sidecar injector sets; `istio` marks a sidecar.
pub const ISTIO_TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// The pod annotation that marks (`"true"`) or unmarks (`"false"`) a sidecar.
pub const INJECT_ANNOTATION: &str = "anymesh.io/inject";
/// The pod annotation naming the proxy's inbound port.
pub const INBOUND_PORT_ANNOTATION: &str = "anymesh.io/inbound-port";
/// The pod annotation naming a whole SPIFFE ID the proxy presents.
pub const SPIFFE_ID_ANNOTATION: &str = "anymesh.io/spiffe-id";

/// What the registry keeps of a pod: its labels and its mesh proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub labels: Labels,
    /// The mesh proxy fronting the pod, or why its annotations cannot be used.
    pub mesh: Result<Option<MeshProxy>, String>,
}

impl PodInfo {
    /// The labels and mesh proxy of a pod.
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let empty = Labels::new();
        let annotations = meta.annotations.as_ref().unwrap_or(&empty);
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.as_ref();
        let service_account = spec
            .and_then(|s| s.service_account_name.as_deref())
            .or_else(|| spec.and_then(|s| s.service_account.as_deref()))
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let mesh = mesh(&labels, annotations, namespace, service_account);
        Self { labels, mesh }
    }
}

/// The mesh proxy the labels and annotations declare (see the module docs).
pub fn mesh(
    labels: &Labels,
    annotations: &Labels,
    namespace: &str,
    service_account: &str,
) -> Result<Option<MeshProxy>, String> {
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    let inject = match annotation(INJECT_ANNOTATION) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
        Some(v) => {
            return Err(format!(
                "annotation {INJECT_ANNOTATION} {v:?}: must be \"true\" or \"false\""
            ))
        }
    };
    if inject == Some(false) {
        return Ok(None);
    }
    let port = annotation(INBOUND_PORT_ANNOTATION);
    let spiffe_id = annotation(SPIFFE_ID_ANNOTATION);
    let istio = labels
        .get(ISTIO_TLS_MODE_LABEL)
        .is_some_and(|m| m == "istio");
    if !(istio || inject == Some(true) || port.is_some() || spiffe_id.is_some()) {
        return Ok(None);
    }
    let port = match port {
        None => DEFAULT_MESH_PORT,
        Some(v) => mesh_port(v)
            .map_err(|why| format!("annotation {INBOUND_PORT_ANNOTATION} {v:?}: {why}"))?,
    };
    if let Some(v) = spiffe_id {
        check_spiffe_id(v)
            .map_err(|why| format!("annotation {SPIFFE_ID_ANNOTATION} {v:?}: {why}"))?;
    }
    // Kubernetes names always pass; checked so a bad object says so.
    check_mesh_name(namespace).map_err(|why| format!("namespace {namespace:?}: {why}"))?;
    check_mesh_name(service_account)
        .map_err(|why| format!("service account {service_account:?}: {why}"))?;
    Ok(Some(MeshProxy {
        port,
        namespace: Some(namespace.to_string()),
        service_account: Some(service_account.to_string()),
        spiffe_id: spiffe_id.map(str::to_string),
    }))
}

#[cfg(test)]
mod tests;
