//! Consul's HTTP API payloads, as the agent writes them.
//!
//! Field names are Consul's (Go struct names, PascalCase). Everything that
//! older agents or other endpoints leave out is optional: `Tags` may be
//! `null`, `Meta`, `TaggedAddresses`, `Weights`, `Namespace` and `Datacenter`
//! may be absent, and a service's tagged address is `{"Address","Port"}` on
//! the wire but `{"address","port"}` in the documentation, so both are read.
//! Unknown fields are ignored (Consul adds fields in minor releases).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `GET /v1/catalog/services`: service name → tags.
pub type CatalogServices = BTreeMap<String, Vec<String>>;

/// Reads `/v1/catalog/services`, where a tag list may be `null`.
pub fn catalog_services(body: &[u8]) -> Result<CatalogServices, serde_json::Error> {
    let raw: BTreeMap<String, Option<Vec<String>>> = serde_json::from_slice(body)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// Reads `/v1/health/service/<name>`.
pub fn health_service(body: &[u8]) -> Result<Vec<ServiceEntry>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// One element of `/v1/health/service/<name>`: an instance, its node and
/// every check that applies to it (node checks included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: AgentService,
    #[serde(default, deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

/// A node as the health endpoint shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub node: String,
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// `lan`, `wan`, `lan_ipv4`, ... → an address (strings, unlike a service's).
    #[serde(default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// A service instance (`api.AgentService`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Empty for a typical service; `connect-proxy` for a Connect proxy
    /// (also `mesh-gateway`, `ingress-gateway`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Empty means "the node's address".
    #[serde(default)]
    pub address: String,
    #[serde(default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    #[serde(default)]
    pub enable_tag_override: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// A Connect proxy's configuration (`{}` or absent for other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ConnectProxy>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// The kind of a Connect proxy instance.
pub const CONNECT_PROXY: &str = "connect-proxy";

/// What a Connect proxy fronts (`api.AgentServiceConnectProxyConfig`; the
/// upstreams and opaque config are not read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectProxy {
    /// The service the proxy represents.
    #[serde(default)]
    pub destination_service_name: String,
    /// The instance it fronts (a sidecar); empty for a proxy of the whole
    /// service.
    #[serde(rename = "DestinationServiceID", default)]
    pub destination_service_id: String,
    /// Where the proxy forwards to, seen from the proxy (usually loopback).
    #[serde(default)]
    pub local_service_address: String,
    #[serde(default)]
    pub local_service_port: u16,
}

/// A service's tagged address. The agent writes `Address`/`Port`; the
/// documentation shows `address`/`port`: both are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    #[serde(rename = "Address", alias = "address", default)]
    pub address: String,
    #[serde(rename = "Port", alias = "port", default)]
    pub port: u16,
}

/// Load-balancing weights by health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    #[serde(default = "one")]
    pub passing: u32,
    #[serde(default = "one")]
    pub warning: u32,
}

fn one() -> u32 {
    1
}

/// One health check (`api.HealthCheck`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    #[serde(default)]
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(default)]
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub output: String,
    /// Empty for a node check (`serfHealth`, node maintenance).
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// `GET /v1/agent/health/service/name/<name>` (an array of these) and
/// `.../id/<id>` (one): the local agent's view of its own instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceHealth {
    pub aggregated_status: String,
    pub service: AgentService,
    #[serde(default, deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

/// One element of `GET /v1/catalog/service/<name>`: the flat catalog form,
/// without checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID", default)]
    pub id: String,
    pub node: String,
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub node_meta: BTreeMap<String, String>,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    #[serde(default)]
    pub service_address: String,
    #[serde(default)]
    pub service_port: u16,
    #[serde(default, deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub service_meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// The check a node in maintenance mode carries (`api.NodeMaint`).
pub const NODE_MAINTENANCE: &str = "_node_maintenance";
/// The prefix of the check an instance in maintenance carries (`api.ServiceMaintPrefix`).
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

/// An instance's aggregate health, worst first (Consul's precedence:
/// maintenance > critical > warning > passing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
    Maintenance,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Maintenance => "maintenance",
        }
    }
}

/// The aggregate of every check (`HealthChecks.AggregatedStatus`): an empty
/// list is passing, an unknown status counts as critical.
pub fn aggregate(checks: &[HealthCheck]) -> Status {
    checks
        .iter()
        .map(|c| {
            if c.check_id == NODE_MAINTENANCE || c.check_id.starts_with(SERVICE_MAINTENANCE_PREFIX)
            {
                return Status::Maintenance;
            }
            match c.status.as_str() {
                "passing" => Status::Passing,
                "warning" => Status::Warning,
                _ => Status::Critical,
            }
        })
        .max()
        .unwrap_or(Status::Passing)
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests;
