//! Turning one etcd key and value into an [`Endpoint`].
//!
//! Keys follow `go.etcd.io/etcd/client/v3/naming/endpoints`: `<prefix><service>/<instance>`.
//! Values are either that package's JSON (`{"Op":0,"Addr":"10.0.0.1:8080","Metadata":{..}}`)
//! or anymesh's own (`{"address":"10.0.0.1","ports":{"http":8080},..}`); see
//! `docs/etcd-registry.md`. Everything that cannot be used is a [`DecodeError`]
//! naming the key; nothing is guessed.
//!
//! A mesh proxy in front of the endpoint is the native value's `mesh` object
//! (`{"port":15006,"namespace":..,"service_account":..,"spiffe_id":..}`), or
//! the `anymesh.*` keys of an endpoints-format value's `Metadata`
//! ([`MESH_METADATA`]). A value that marks a proxy but cannot be used (port 0,
//! a name that cannot be part of a SPIFFE ID) is a [`DecodeError`] like any
//! other: the endpoint is skipped, never served in plaintext.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Provenance, SourceId,
};
use anymesh_support::{check_mesh_name, check_spiffe_id, MeshFields, MeshKeys};
use serde::Deserialize;
use serde_json::Value;

/// Why one etcd key does not yield an endpoint. The endpoint is skipped and
/// the problem reported; the rest of the prefix is still served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd key `{key}`: {problem}")]
pub struct DecodeError {
    /// The key, lossily decoded if it is not UTF-8.
    pub key: String,
    pub problem: Problem,
}

/// What is wrong with a key or its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the key is not UTF-8")]
    KeyNotUtf8,
    #[error("the key is not `{prefix}<service>/<instance>`")]
    KeyLayout { prefix: String },
    #[error("the service name is not a valid mesh hostname: {0}")]
    ServiceName(String),
    #[error("the value is not JSON: {0}")]
    NotJson(String),
    #[error("the value is not a JSON object")]
    NotObject,
    #[error("the value has neither `Addr` (etcd endpoints format) nor `address` (anymesh format)")]
    UnknownFormat,
    #[error("the value has both `Addr` and `address`; use one format")]
    BothFormats,
    #[error("`Op` must be 0 (add) or 1 (delete), got {0}")]
    Op(String),
    #[error("`Addr` must be a string, got {0}")]
    AddrType(&'static str),
    #[error("`Metadata` must be null or an object of strings to map to labels, got {0}")]
    MetadataType(&'static str),
    #[error("`Metadata.{key}` must be a string to map to a label, got {got}")]
    MetadataValue { key: String, got: &'static str },
    #[error("address `{address}`: {reason}")]
    Address {
        address: String,
        reason: &'static str,
    },
    #[error("address `{0}` has no port (add `:port`, or set `default_port`)")]
    NoPort(String),
    #[error("{0}")]
    Native(String),
    #[error("`Metadata.{key}` {value:?}: {reason}")]
    MeshMetadata {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// The `Metadata` keys of an endpoints-format value that name the mesh proxy
/// fronting it (those Eureka instances use too).
pub const MESH_METADATA: MeshKeys = MeshKeys {
    port: "anymesh.proxy-port",
    namespace: "anymesh.namespace",
    service_account: "anymesh.service-account",
    spiffe_id: "anymesh.spiffe-id",
};

/// The part of the key space the registry reads: `<prefix><service>/<instance>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// `prefix` with a trailing `/` added when missing, so that `foo/bar`
    /// reads `foo/bar/...` but never `foo/barista/...` (etcd prefix reads are
    /// byte prefixes). An empty prefix reads the whole key space.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The normalised prefix (ends with `/` unless empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Splits a key into service name and instance.
    fn split<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let (service, instance) = rest.split_once('/')?;
        (!service.is_empty() && !instance.is_empty()).then_some((service, instance))
    }
}

/// Decodes keys and values of one registry source.
#[derive(Debug, Clone)]
pub struct Decoder {
    source: SourceId,
    layout: Layout,
    default_port: Option<u16>,
}

impl Decoder {
    pub fn new(source: SourceId, layout: Layout, default_port: Option<u16>) -> Self {
        Self {
            source,
            layout,
            default_port,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The endpoint stored at `key`, or `None` for an endpoints-format value
    /// with `Op: 1` (a delete written as a value: nothing to serve).
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Result<Option<Endpoint>, DecodeError> {
        let Ok(key_str) = std::str::from_utf8(key) else {
            return Err(DecodeError {
                key: String::from_utf8_lossy(key).into_owned(),
                problem: Problem::KeyNotUtf8,
            });
        };
        self.decode_str(key_str, value)
            .map_err(|problem| DecodeError {
                key: key_str.to_string(),
                problem,
            })
    }

    fn decode_str(&self, key: &str, value: &[u8]) -> Result<Option<Endpoint>, Problem> {
        let (service, _instance) = self.layout.split(key).ok_or_else(|| Problem::KeyLayout {
            prefix: self.layout.prefix.clone(),
        })?;
        let service = Hostname::new(service).map_err(|e| Problem::ServiceName(e.to_string()))?;
        let value: Value =
            serde_json::from_slice(value).map_err(|e| Problem::NotJson(e.to_string()))?;
        let Value::Object(obj) = &value else {
            return Err(Problem::NotObject);
        };
        let fields = match (obj.contains_key("Addr"), obj.contains_key("address")) {
            (true, true) => return Err(Problem::BothFormats),
            (true, false) => match self.endpoints_format(obj)? {
                Some(fields) => fields,
                None => return Ok(None),
            },
            (false, true) => native_format(value)?,
            (false, false) => return Err(Problem::UnknownFormat),
        };
        Ok(Some(Endpoint {
            service,
            address: fields.address,
            ports: fields.ports,
            labels: fields.labels.clone(),
            health: fields.health,
            weight: fields.weight,
            locality: fields.locality,
            mesh: fields.mesh,
            provenance: Provenance {
                source: self.source.clone(),
                native_id: key.to_string(),
                raw_labels: fields.labels,
            },
        }))
    }

    /// `{"Op":0,"Addr":"host:port","Metadata":..}` as the Go endpoints manager writes it.
    fn endpoints_format(
        &self,
        obj: &serde_json::Map<String, Value>,
    ) -> Result<Option<Fields>, Problem> {
        match obj.get("Op") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) => return Ok(None),
            Some(other) => return Err(Problem::Op(other.to_string())),
        }
        let addr = match obj.get("Addr") {
            Some(Value::String(s)) => s,
            Some(other) => return Err(Problem::AddrType(kind(other))),
            None => return Err(Problem::UnknownFormat),
        };
        let labels = match obj.get("Metadata") {
            None | Some(Value::Null) => Labels::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(Problem::MetadataValue {
                        key: k.clone(),
                        got: kind(other),
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(Problem::MetadataType(kind(other))),
        };
        let mesh = MESH_METADATA
            .read(|k| labels.get(k).map(String::as_str))
            .map_err(|e| Problem::MeshMetadata {
                key: e.key,
                value: e.value,
                reason: e.reason,
            })?
            .map(mesh_proxy);
        let (address, port) = split_addr(addr, self.default_port)?;
        Ok(Some(Fields {
            address,
            ports: vec![EndpointPort {
                name: String::new(),
                number: port,
            }],
            labels,
            health: Health::Healthy,
            weight: 1,
            locality: Locality::default(),
            mesh,
        }))
    }
}

/// What a value contributes to an endpoint.
struct Fields {
    address: String,
    ports: Vec<EndpointPort>,
    labels: Labels,
    health: Health,
    weight: u32,
    locality: Locality,
    mesh: Option<MeshProxy>,
}

/// A proxy from checked metadata, on the default port unless it names one.
fn mesh_proxy(f: MeshFields) -> MeshProxy {
    MeshProxy {
        port: f.port.unwrap_or(DEFAULT_MESH_PORT),
        namespace: f.namespace,
        service_account: f.service_account,
        spiffe_id: f.spiffe_id,
    }
}

/// The anymesh-native value (see `docs/etcd-registry.md`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Native {
    address: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    ports: Option<BTreeMap<String, u16>>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    health: Health,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    locality: Locality,
    #[serde(default)]
    mesh: Option<NativeMesh>,
}

/// The native value's `mesh`: `{}` is a proxy on the default port.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeMesh {
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    spiffe_id: Option<String>,
}

impl NativeMesh {
    fn check(self) -> Result<MeshProxy, Problem> {
        let bad =
            |at: &str, v: &str, why: &str| Problem::Native(format!("`mesh.{at}`: {v:?} {why}"));
        if self.port == Some(0) {
            return Err(Problem::Native(
                "`mesh.port`: must be 1..=65535, got 0".into(),
            ));
        }
        for (at, v) in [
            ("namespace", &self.namespace),
            ("service_account", &self.service_account),
        ] {
            if let Some(v) = v {
                check_mesh_name(v).map_err(|why| bad(at, v, why))?;
            }
        }
        if let Some(v) = &self.spiffe_id {
            check_spiffe_id(v)
                .map_err(|why| bad("spiffe_id", v, &format!("is not a SPIFFE ID: {why}")))?;
        }
        Ok(MeshProxy {
            port: self.port.unwrap_or(DEFAULT_MESH_PORT),
            namespace: self.namespace,
            service_account: self.service_account,
            spiffe_id: self.spiffe_id,
        })
    }
}

fn one() -> u32 {
    1
}

fn native_format(value: Value) -> Result<Fields, Problem> {
    let native: Native = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => Problem::Native(e.into_inner().to_string()),
            _ => Problem::Native(format!("`{path}`: {}", e.into_inner())),
        }
    })?;
    let address = native.address;
    if address.parse::<IpAddr>().is_err() && !is_dns_name(&address) {
        return Err(Problem::Address {
            address,
            reason: "not an IP address or DNS name (give the port in `port` or `ports`)",
        });
    }
    let ports = match (native.port, native.ports) {
        (Some(_), Some(_)) => {
            return Err(Problem::Native(
                "has both `port` and `ports`; use one".into(),
            ))
        }
        (None, None) => return Err(Problem::Native("needs `port` or `ports`".into())),
        (Some(number), None) => vec![EndpointPort {
            name: String::new(),
            number,
        }],
        (None, Some(map)) if map.is_empty() => {
            return Err(Problem::Native(
                "`ports` must name at least one port".into(),
            ))
        }
        (None, Some(map)) => map
            .into_iter()
            .map(|(name, number)| EndpointPort { name, number })
            .collect(),
    };
    if let Some(p) = ports.iter().find(|p| p.number == 0) {
        let at = match p.name.as_str() {
            "" => "`port`".to_string(),
            name => format!("`ports.{name}`"),
        };
        return Err(Problem::Native(format!("{at}: must be 1..=65535, got 0")));
    }
    let mesh = native.mesh.map(NativeMesh::check).transpose()?;
    Ok(Fields {
        address,
        ports,
        labels: native.labels,
        health: native.health,
        weight: native.weight,
        locality: native.locality,
        mesh,
    })
}

/// Splits `host:port`, `ip:port`, `[v6]:port`, or a bare host or IP (which
/// takes `default_port`).
fn split_addr(addr: &str, default_port: Option<u16>) -> Result<(String, u16), Problem> {
    let bad = |reason| Problem::Address {
        address: addr.to_string(),
        reason,
    };
    let no_port = || default_port.ok_or_else(|| Problem::NoPort(addr.to_string()));
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(bad("port 0 is not a port to connect to"));
        }
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok((ip.to_string(), no_port()?));
    }
    if addr.starts_with('[') {
        return Err(bad("not a valid `[IPv6]:port`"));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            if !is_dns_name(host) {
                return Err(bad("the host is not an IP address or DNS name"));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => Ok((host.to_string(), p)),
                _ => Err(bad("the port is not a number in 1..=65535")),
            }
        }
        None if is_dns_name(addr) => Ok((addr.to_string(), no_port()?)),
        None => Err(bad("not an IP address or DNS name")),
    }
}

fn is_dns_name(host: &str) -> bool {
    Hostname::new(host).is_ok()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
