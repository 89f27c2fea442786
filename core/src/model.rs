//! The abstract service model every registry adapter fills and the proxy reads.
//!
//! A [`Service`] is known by its mesh hostname (plus aliases) and declares ports.
//! An [`Endpoint`] is one instance of a service: an address, the port numbers it
//! listens on, labels, health, weight, locality and its [`Provenance`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Labels attached to endpoints (`version: v2`, `zone: a`). Ordered so dumps are stable.
pub type Labels = BTreeMap<String, String>;

/// The name of a registry source, e.g. `file`, `etcd/main`, `consul/dc1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceId(Arc<str>);

impl SourceId {
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A mesh hostname: lower-case, no trailing dot, no port (`reviews.default.svc`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(Arc<str>);

/// Why a string is not a valid mesh hostname.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname {name:?}: {reason}")]
pub struct InvalidHostname {
    pub name: String,
    pub reason: &'static str,
}

impl Hostname {
    /// Normalises (lower-case, trailing dot removed) and validates a hostname.
    pub fn new(name: &str) -> Result<Self, InvalidHostname> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        let bad = |reason| InvalidHostname {
            name: name.to_string(),
            reason,
        };
        if trimmed.is_empty() {
            return Err(bad("empty"));
        }
        if trimmed.len() > 253 {
            return Err(bad("longer than 253 characters"));
        }
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(bad("empty label"));
            }
            if label.len() > 63 {
                return Err(bad("label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
            }
        }
        Ok(Self(Arc::from(trimmed.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string (cloning it is a reference-count increment).
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl TryFrom<String> for Hostname {
    type Error = InvalidHostname;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<Hostname> for String {
    fn from(h: Hostname) -> String {
        h.0.to_string()
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// Application protocol spoken on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl Protocol {
    /// Whether upstream connections use HTTP/2 (prior knowledge).
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }
    /// Parses a protocol name as registries spell it (`http`, `HTTP2`, `grpc`, `h2c`, `tcp`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" => Some(Protocol::Http),
            "http2" | "h2" | "h2c" => Some(Protocol::Http2),
            "grpc" => Some(Protocol::Grpc),
            "tcp" => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        })
    }
}

/// A port a service declares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub number: u16,
    pub protocol: Protocol,
}

/// A service as one registry source declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub hostname: Hostname,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Hostname>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// The port with the given number, or the only port when there is just one.
    pub fn port(&self, number: Option<u16>) -> Option<&ServicePort> {
        match number {
            Some(n) => self.ports.iter().find(|p| p.number == n),
            None if self.ports.len() == 1 => self.ports.first(),
            None => None,
        }
    }
}

/// Health of an endpoint as its registry reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
    /// Shutting down: only used when nothing healthy is left.
    Draining,
}

/// Where an endpoint runs (`region/zone/subzone`); all parts optional.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Locality {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subzone: Option<String>,
}

/// Where an endpoint came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provenance {
    pub source: SourceId,
    /// The registry's own identifier for this instance (etcd key, Consul service ID, ...).
    pub native_id: String,
    /// Labels exactly as the registry gave them, before any mapping.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub raw_labels: Labels,
}

/// Identifies an endpoint across updates and table swaps: its source plus native id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointKey {
    pub source: SourceId,
    pub native_id: Arc<str>,
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.native_id)
    }
}

/// A port an endpoint listens on. `name` refers to a [`ServicePort::name`];
/// an empty name means "the endpoint's port for every service port".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub number: u16,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The service (mesh hostname) this endpoint belongs to.
    pub service: Hostname,
    /// IP address or DNS name to connect to.
    pub address: String,
    pub ports: Vec<EndpointPort>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub health: Health,
    /// Relative load-balancing weight; 0 is treated as 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub locality: Locality,
    /// The mesh proxy that fronts this endpoint, when one does: callers then
    /// speak mutual TLS to that proxy instead of plaintext to the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshProxy>,
    pub provenance: Provenance,
}

/// The inbound port of a mesh proxy when a registry marks an endpoint as
/// proxied but names no port (Istio's inbound capture port).
pub const DEFAULT_MESH_PORT: u16 = 15006;

/// A mesh proxy in front of an endpoint, as its registry declares it: where
/// callers reach it and the identity it must present (secure naming).
///
/// The expected identity is [`MeshProxy::spiffe_id`] when the registry gives
/// a whole SPIFFE ID, else `spiffe://<trust domain>/ns/<namespace>/sa/<service
/// account>` with the mesh's trust domain, `default` standing in for a
/// missing namespace or service account (as in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MeshProxy {
    /// The proxy's inbound port on the endpoint's address.
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A whole SPIFFE ID the proxy must present, overriding namespace and
    /// service account (for SVIDs issued under another naming scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

impl MeshProxy {
    /// A proxy on `port` whose identity is taken from namespace and service account.
    pub fn new(port: u16, namespace: Option<String>, service_account: Option<String>) -> Self {
        Self {
            port,
            namespace,
            service_account,
            spiffe_id: None,
        }
    }

    /// The SPIFFE ID the proxy must present, in `trust_domain` unless the
    /// registry gave a whole one.
    pub fn identity(&self, trust_domain: &str) -> String {
        if let Some(id) = &self.spiffe_id {
            return id.clone();
        }
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace.as_deref().unwrap_or("default"),
            self.service_account.as_deref().unwrap_or("default")
        )
    }
}

fn default_weight() -> u32 {
    1
}

impl Endpoint {
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            source: self.provenance.source.clone(),
            native_id: Arc::from(self.provenance.native_id.as_str()),
        }
    }

    /// The port number this endpoint serves `port` on: a port with the same
    /// name, else an unnamed port. A port named for another service port is
    /// never used (that would send, say, HTTP/1 traffic to a gRPC port).
    pub fn port_for(&self, port: &ServicePort) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == port.name)
            .or_else(|| self.ports.iter().find(|p| p.name.is_empty()))
            .map(|p| p.number)
    }

    /// `address:port`, bracketing IPv6 literals.
    pub fn authority(&self, port: u16) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, port)
        } else {
            format!("{}:{}", self.address, port)
        }
    }

    /// Whether every `selector` label is present with the same value.
    pub fn matches_labels(&self, selector: &Labels) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_normalises_and_rejects() {
        assert_eq!(
            Hostname::new("Reviews.Default.").unwrap().as_str(),
            "reviews.default"
        );
        assert!(Hostname::new("").is_err());
        assert!(Hostname::new("a..b").is_err());
        assert!(Hostname::new("a b").is_err());
        assert!(Hostname::new(&"x".repeat(64)).is_err());
    }

    fn ep(ports: Vec<EndpointPort>) -> Endpoint {
        Endpoint {
            service: Hostname::new("svc").unwrap(),
            address: "::1".into(),
            ports,
            labels: Labels::from([("version".into(), "v1".into())]),
            health: Health::Healthy,
            weight: 0,
            locality: Locality::default(),
            mesh: None,
            provenance: Provenance {
                source: SourceId::new("file"),
                native_id: "a".into(),
                raw_labels: Labels::new(),
            },
        }
    }

    #[test]
    fn endpoint_port_lookup() {
        let http = ServicePort {
            name: "http".into(),
            number: 80,
            protocol: Protocol::Http,
        };
        let grpc = ServicePort {
            name: "grpc".into(),
            number: 90,
            protocol: Protocol::Grpc,
        };
        let e = ep(vec![
            EndpointPort {
                name: "http".into(),
                number: 8080,
            },
            EndpointPort {
                name: "grpc".into(),
                number: 9090,
            },
        ]);
        assert_eq!(e.port_for(&http), Some(8080));
        assert_eq!(e.port_for(&grpc), Some(9090));
        let other = ep(vec![EndpointPort {
            name: "other".into(),
            number: 1,
        }]);
        assert_eq!(
            other.port_for(&http),
            None,
            "a port named for another service port"
        );
        let unnamed = ep(vec![EndpointPort {
            name: String::new(),
            number: 7,
        }]);
        assert_eq!(unnamed.port_for(&http), Some(7));
        let none = ep(vec![
            EndpointPort {
                name: "a".into(),
                number: 1,
            },
            EndpointPort {
                name: "b".into(),
                number: 2,
            },
        ]);
        assert_eq!(none.port_for(&http), None);
        assert_eq!(e.authority(80), "[::1]:80");
        assert_eq!(e.effective_weight(), 1);
    }

    #[test]
    fn mesh_identity_defaults_as_kubernetes_does() {
        let p = MeshProxy::new(15006, Some("shop".into()), None);
        assert_eq!(p.identity("td"), "spiffe://td/ns/shop/sa/default");
        let p = MeshProxy::new(15006, None, Some("reviews".into()));
        assert_eq!(p.identity("td"), "spiffe://td/ns/default/sa/reviews");
        let p = MeshProxy {
            spiffe_id: Some("spiffe://other/x".into()),
            ..p
        };
        assert_eq!(p.identity("td"), "spiffe://other/x");
    }

    #[test]
    fn label_selector() {
        let e = ep(vec![]);
        assert!(e.matches_labels(&Labels::new()));
        assert!(e.matches_labels(&Labels::from([("version".into(), "v1".into())])));
        assert!(!e.matches_labels(&Labels::from([("version".into(), "v2".into())])));
    }
}
