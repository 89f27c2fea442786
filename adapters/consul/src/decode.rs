//! Turning `/v1/health/service/<name>` entries into endpoints and a service
//! declaration.
//!
//! - **Health**: the aggregate of every check, node checks included. Passing
//!   instances are healthy; `warning` ones are healthy only with
//!   `include_warning`; critical ones and instances in maintenance (node or
//!   service) are sent as unhealthy, so routing excludes them and `explain`
//!   still shows them.
//! - **Address**: `Service.Address`, else `Node.Address`; with `address_from`
//!   a tagged address of the service (address and port), else of the node
//!   (address, service port), else the default.
//! - **Labels**: node meta, then service meta (which wins), then every tag as
//!   a label with an empty value, which the registry's mapping rules turn
//!   into `key: value` labels (`version=v2`, or `v2` with a tag rule).
//! - **Port**: `Service.Port`; the meta keys `port_name` and `protocol` name
//!   the port and its protocol. A service whose instances carry either is
//!   declared with that port; otherwise the catalog's implicit HTTP port applies.
//! - **Mesh proxy**: a Connect sidecar (an instance of `Kind: connect-proxy`
//!   whose `Proxy.DestinationServiceID` names the instance, on the same node)
//!   or the meta keys [`MESH_META`] mark the instance as fronted by a mesh
//!   proxy. The sidecar gives the port (its `Port`, or its tagged address's
//!   with `address_from`); the identity is the instance's Consul namespace
//!   (`default` when none) and its service name as the service account.
//!   Meta keys override each of these. Connect proxies are not endpoints of
//!   their own: [`Decoder::sidecar`] reads them and the registry's state
//!   joins them to the instances they front ([`crate::state`]).

use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance, Service,
    ServicePort, SourceId,
};
use anymesh_support::{check_mesh_name, MeshKeys};

use crate::api::{aggregate, ServiceEntry, Status, CONNECT_PROXY};
use crate::config::AddressFrom;

/// The meta key naming an instance's port.
pub const PORT_NAME_META: &str = "port_name";
/// The meta key giving an instance's protocol (`http`, `http2`, `grpc`, `tcp`).
pub const PROTOCOL_META: &str = "protocol";

/// The service meta keys naming the mesh proxy fronting an instance (Consul
/// meta keys hold only letters, digits, `-` and `_`).
pub const MESH_META: MeshKeys = MeshKeys {
    port: "anymesh-proxy-port",
    namespace: "anymesh-namespace",
    service_account: "anymesh-service-account",
    spiffe_id: "anymesh-spiffe-id",
};

/// An instance as decoded, before it is joined with a Connect sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The endpoint; its `mesh` is set when the meta keys mark a proxy.
    pub endpoint: Endpoint,
    /// The identity a proxy in front of it presents (meta keys, else the
    /// Consul namespace and service name), on the meta's port or the default.
    pub identity: MeshProxy,
    /// The meta keys name the proxy's port (it wins over a sidecar's).
    pub meta_port: bool,
}

/// A Connect sidecar proxy: the instance it fronts and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// The proxy's own native id (`node/proxy-id`).
    pub proxy: String,
    /// The native id of the instance it fronts (`node/DestinationServiceID`).
    pub fronts: String,
    /// The Consul service name of that instance.
    pub destination: String,
    pub address: String,
    pub port: u16,
    /// The proxy's checks are not all passing (or warning, with `include_warning`).
    pub unhealthy: bool,
}

/// Decodes entries for one source.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub source: SourceId,
    pub include_warning: bool,
    pub address_from: AddressFrom,
}

impl Decoder {
    /// A decoder with the default health and address rules.
    pub fn new(source: SourceId) -> Self {
        Self {
            source,
            include_warning: false,
            address_from: AddressFrom::Service,
        }
    }

    /// The native id of an entry: node and service ID (an ID is unique per node).
    pub fn native_id(entry: &ServiceEntry) -> String {
        format!("{}/{}", entry.node.node, entry.service.id)
    }

    /// Whether an entry is a Connect proxy (never an endpoint of its own).
    pub fn is_proxy(entry: &ServiceEntry) -> bool {
        entry.service.kind == CONNECT_PROXY
    }

    /// A Connect proxy entry as the sidecar of one instance; `None` for any
    /// other entry, and for a proxy of a whole service (no
    /// `DestinationServiceID`), which fronts no instance of its own.
    pub fn sidecar(&self, entry: &ServiceEntry) -> Option<Sidecar> {
        if !Self::is_proxy(entry) {
            return None;
        }
        let p = entry.service.proxy.as_ref()?;
        if p.destination_service_id.is_empty() || p.destination_service_name.is_empty() {
            return None;
        }
        let (address, port) = self.address(entry);
        let unhealthy = match aggregate(&entry.checks) {
            Status::Passing => false,
            Status::Warning => !self.include_warning,
            _ => true,
        };
        Some(Sidecar {
            proxy: Self::native_id(entry),
            fronts: format!("{}/{}", entry.node.node, p.destination_service_id),
            destination: p.destination_service_name.clone(),
            address,
            port,
            unhealthy,
        })
    }

    /// One entry as an endpoint, or why it cannot be one.
    pub fn endpoint(&self, entry: &ServiceEntry) -> Result<Endpoint, String> {
        self.instance(entry).map(|i| i.endpoint)
    }

    /// One entry as an instance, or why it cannot be one.
    pub fn instance(&self, entry: &ServiceEntry) -> Result<Instance, String> {
        let svc = &entry.service;
        let id = Self::native_id(entry);
        let service = Hostname::new(&svc.service)
            .map_err(|e| format!("instance {id}: the service name is not a mesh hostname: {e}"))?;
        let (address, port) = self.address(entry);
        if address.is_empty() {
            return Err(format!(
                "instance {id}: neither the service nor node {:?} has an address",
                entry.node.node
            ));
        }
        if port == 0 {
            return Err(format!("instance {id}: no port"));
        }
        let status = aggregate(&entry.checks);
        let health = match status {
            Status::Passing => Health::Healthy,
            Status::Warning if self.include_warning => Health::Healthy,
            _ => Health::Unhealthy,
        };
        let weights = svc.weights.unwrap_or(crate::api::Weights {
            passing: 1,
            warning: 1,
        });
        let weight = match status {
            Status::Warning => weights.warning,
            _ => weights.passing,
        };
        let mut labels: Labels = entry.node.meta.clone();
        labels.extend(svc.meta.clone());
        for tag in &svc.tags {
            labels.entry(tag.clone()).or_default();
        }
        let port_name = svc.meta.get(PORT_NAME_META).cloned().unwrap_or_default();
        let meta = MESH_META
            .read(|k| svc.meta.get(k).map(String::as_str))
            .map_err(|e| format!("instance {id}: meta {e}"))?;
        let namespace = svc.namespace.clone().filter(|n| !n.is_empty());
        if let Some(ns) = &namespace {
            check_mesh_name(ns).map_err(|why| format!("instance {id}: namespace {ns:?} {why}"))?;
        }
        let meta_port = meta.as_ref().is_some_and(|m| m.port.is_some());
        let marked = meta.is_some();
        let meta = meta.unwrap_or_default();
        let identity = MeshProxy {
            port: meta.port.unwrap_or(DEFAULT_MESH_PORT),
            namespace: meta.namespace.or(namespace),
            service_account: meta.service_account.or_else(|| Some(svc.service.clone())),
            spiffe_id: meta.spiffe_id,
        };
        let endpoint = Endpoint {
            service,
            address,
            ports: vec![EndpointPort {
                name: port_name,
                number: port,
            }],
            labels,
            health,
            weight: weight.max(1),
            locality: locality(entry),
            mesh: marked.then(|| identity.clone()),
            provenance: Provenance {
                source: self.source.clone(),
                native_id: id,
                raw_labels: Labels::new(),
            },
        };
        Ok(Instance {
            endpoint,
            identity,
            meta_port,
        })
    }

    fn address(&self, entry: &ServiceEntry) -> (String, u16) {
        let svc = &entry.service;
        if let Some(tag) = self.address_from.tag() {
            if let Some(a) = svc
                .tagged_addresses
                .get(tag)
                .filter(|a| !a.address.is_empty())
            {
                let port = if a.port == 0 { svc.port } else { a.port };
                return (a.address.clone(), port);
            }
            if let Some(a) = entry
                .node
                .tagged_addresses
                .get(tag)
                .filter(|a| !a.is_empty())
            {
                return (a.clone(), svc.port);
            }
        }
        let address = if svc.address.is_empty() {
            entry.node.address.clone()
        } else {
            svc.address.clone()
        };
        (address, svc.port)
    }

    /// The service declaration the instances' meta asks for, if any (see
    /// the module docs), and a problem with an unknown protocol.
    pub fn service(
        &self,
        name: &str,
        entries: &[ServiceEntry],
    ) -> (Option<Service>, Option<String>) {
        let Ok(hostname) = Hostname::new(name) else {
            return (None, None);
        };
        // A sidecar copies its service's meta: it declares nothing itself.
        let Some(first) = entries.iter().find(|e| {
            !Self::is_proxy(e)
                && (e.service.meta.contains_key(PROTOCOL_META)
                    || e.service.meta.contains_key(PORT_NAME_META))
        }) else {
            return (None, None);
        };
        let meta = &first.service.meta;
        let mut problem = None;
        let protocol = match meta.get(PROTOCOL_META) {
            None => Protocol::Http,
            Some(p) => Protocol::parse(p).unwrap_or_else(|| {
                problem = Some(format!(
                    "instance {}: unknown protocol {p:?} in meta (http, http2, grpc or tcp); using http",
                    Self::native_id(first)
                ));
                Protocol::Http
            }),
        };
        let port_name = meta
            .get(PORT_NAME_META)
            .cloned()
            .unwrap_or_else(|| protocol.to_string());
        let (_, number) = self.address(first);
        let service = Service {
            hostname,
            aliases: Vec::new(),
            ports: vec![ServicePort {
                name: port_name,
                number,
                protocol,
            }],
        };
        (Some(service), problem)
    }
}

/// An instance's locality: its node's datacenter as the region (the
/// service's when the node does not say), and the zone and subzone from the
/// node's meta (`zone`, else Kubernetes' `topology.kubernetes.io/zone` for
/// nodes synced from a cluster; `subzone`).
fn locality(entry: &ServiceEntry) -> Locality {
    let meta = &entry.node.meta;
    let nonempty = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
    let region = nonempty(entry.node.datacenter.as_ref())
        .or_else(|| nonempty(entry.service.datacenter.as_ref()))
        .or_else(|| nonempty(meta.get("topology.kubernetes.io/region")));
    let zone =
        nonempty(meta.get("zone")).or_else(|| nonempty(meta.get("topology.kubernetes.io/zone")));
    Locality {
        region,
        zone,
        subzone: nonempty(meta.get("subzone")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentService, Node};

    fn entry(dc: Option<&str>, meta: &[(&str, &str)]) -> ServiceEntry {
        ServiceEntry {
            node: Node {
                node: "n1".into(),
                datacenter: dc.map(String::from),
                meta: meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Node::default()
            },
            service: AgentService::default(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn locality_is_the_datacenter_and_the_nodes_zone_meta() {
        let l = locality(&entry(
            Some("dc1"),
            &[("zone", "dc1-a"), ("subzone", "rack4")],
        ));
        assert_eq!(l.region.as_deref(), Some("dc1"));
        assert_eq!(l.zone.as_deref(), Some("dc1-a"));
        assert_eq!(l.subzone.as_deref(), Some("rack4"));
        let synced = entry(
            None,
            &[
                ("topology.kubernetes.io/region", "eu-west-1"),
                ("topology.kubernetes.io/zone", "eu-west-1b"),
            ],
        );
        let l = locality(&synced);
        assert_eq!(l.region.as_deref(), Some("eu-west-1"));
        assert_eq!(l.zone.as_deref(), Some("eu-west-1b"));
        assert_eq!(locality(&entry(None, &[])), Locality::default());
    }
}
