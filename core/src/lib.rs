//! anymesh-core: the abstract service model, the registry contract, the
//! aggregate catalog, Istio routing config and the route-table compiler.
//!
//! Nothing here knows about a particular registry or about sockets: adapters
//! fill the model through [`registry::Registry`], the proxy reads compiled
//! [`routes::RouteTable`]s.

pub mod backoff;
pub mod catalog;
pub mod config;
pub mod explain;
pub mod mapping;
pub mod model;
pub mod registry;
pub mod routes;
pub mod security;
pub mod telemetry;
#[cfg(test)]
mod testgen;

pub use catalog::{CatalogState, MergedService, Snapshot};
pub use config::{ConfigSet, Diagnostic, Severity};
pub use mapping::{MappedRegistry, Mapping, MappingError};
pub use model::{
    Endpoint, EndpointKey, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance,
    Service, ServicePort, SourceId,
};
pub use registry::{
    Change, ChangeSink, Registry, SourceStatus, SourceView, SourcedChange, ViewMaps,
};
