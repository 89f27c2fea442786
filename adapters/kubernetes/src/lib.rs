//! anymesh-adapter-kubernetes: endpoints from a Kubernetes cluster.
//!
//! [`KubernetesRegistry`] watches Services, EndpointSlices
//! (`discovery.k8s.io/v1`), Pods (for their labels, and the mesh proxy
//! fronting them with its identity: [`mesh`]) and Nodes
//! (their metadata, for region and zone labels) with
//! kube-runtime's watcher: an initial list, a watch from the list's
//! `resourceVersion` (moved on by bookmarks), a relist when the API server
//! answers 410 Gone, and a capped, jittered backoff on errors while the last
//! good view stays in force. [`Translator`] turns the objects into mesh
//! services and endpoints on its own, for tests and tools.
//!
//! The configuration and mapping reference follows (from `docs/kubernetes-registry.md`).
//!
#![doc = include_str!("../../../docs/kubernetes-registry.md")]

mod config;
mod error;
pub mod mesh;
mod registry;
mod routing;
mod translate;

pub use config::{
    describe, BackoffConfig, Connection, HostnameForm, KubernetesConfig, ISTIO_VERSIONS,
};
pub use error::KubernetesError;
pub use registry::KubernetesRegistry;
pub use routing::{document, label, parse_object, ClusterRouting, RoutingView, ISTIO_GROUP};
pub use translate::{
    health, locality, Derived, NodeTopology, Objects, Translator, BETA_REGION_LABEL,
    BETA_ZONE_LABEL, REGION_LABEL, SERVICE_NAME_LABEL, ZONE_LABEL,
};
