//! The file's shape as serde sees it. Checks that concern a single value
//! (port ranges, weights, addresses, hostnames, duplicate keys) run here,
//! inside deserialisation, so serde_yaml_ng attaches the line and column.
//! Checks that need context (declared port names, duplicate ids) run in
//! [`super::build`].

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use anymesh_core::{Health, Hostname, Protocol};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDoc {
    pub services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Host,
    #[serde(default)]
    pub aliases: Vec<Host>,
    /// `None` when the key is absent: the default single `http` port.
    #[serde(default)]
    pub ports: Option<Vec<RawPort>>,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPort {
    pub name: String,
    pub port: PortNumber,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub address: Address,
    #[serde(default)]
    pub port: Option<PortNumber>,
    #[serde(default)]
    pub ports: Option<UniqueMap<PortNumber>>,
    #[serde(default)]
    pub labels: UniqueMap<LabelValue>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub weight: Option<Weight>,
    #[serde(default)]
    pub locality: RawLocality,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub mesh: Option<RawMesh>,
}

/// The mesh proxy fronting an endpoint; `mesh: {}` is a proxy on the
/// default port with the default identity.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMesh {
    #[serde(default)]
    pub port: Option<PortNumber>,
    #[serde(default)]
    pub namespace: Option<MeshName>,
    #[serde(default)]
    pub service_account: Option<MeshName>,
    #[serde(default)]
    pub spiffe_id: Option<SpiffeIdText>,
}

/// A namespace or service account: one segment of a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MeshName(pub String);

impl<'de> Deserialize<'de> for MeshName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MeshName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a namespace or service account name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MeshName, E> {
                anymesh_support::check_mesh_name(s)
                    .map_err(|why| E::custom(format_args!("{s:?} {why}")))?;
                Ok(MeshName(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A whole SPIFFE ID (`spiffe://<trust domain>/<path>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpiffeIdText(pub String);

impl<'de> Deserialize<'de> for SpiffeIdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SpiffeIdText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SPIFFE ID")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SpiffeIdText, E> {
                anymesh_support::check_spiffe_id(s)
                    .map_err(|why| E::custom(format_args!("{s:?} is not a SPIFFE ID: {why}")))?;
                Ok(SpiffeIdText(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocality {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub subzone: Option<String>,
}

/// A TCP port, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortNumber(pub u16);

impl<'de> Deserialize<'de> for PortNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number 1..=65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortNumber, E> {
                match u16::try_from(v) {
                    Ok(n) if n > 0 => Ok(PortNumber(n)),
                    _ => Err(E::custom(format_args!("must be 1..=65535, got {v}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortNumber, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!("must be 1..=65535, got {v}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A load-balancing weight, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Weight(pub u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Weight;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a weight 1..=4294967295")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
                match u32::try_from(v) {
                    Ok(n) if n > 0 => Ok(Weight(n)),
                    _ => Err(E::custom(format_args!("must be 1..=4294967295, got {v}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!("must be 1..=4294967295, got {v}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A mesh hostname, checked inside deserialisation so errors have a position
/// (core's `Hostname` checks after, which loses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host(pub Hostname);

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Host;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hostname")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Host, E> {
                Hostname::new(s).map(Host).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// An endpoint address: an IP literal (IPv6 without brackets) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address(pub String);

impl Address {
    fn check(s: &str) -> Result<(), String> {
        if s.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        if s.starts_with('[') {
            return Err(format!(
                "{s:?} is not an IP address; write IPv6 addresses without brackets"
            ));
        }
        Hostname::new(s).map(|_| ()).map_err(|e| {
            format!(
                "{s:?} is neither an IP address nor a DNS name: {}",
                e.reason
            )
        })
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Address;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address or DNS name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Address, E> {
                Address::check(s).map_err(E::custom)?;
                Ok(Address(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A label value. Only strings: `version: 2` is rejected rather than guessed
/// at, as Kubernetes does, so `1.10` never turns into `1.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelValue(pub String);

impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn quote<E: de::Error>(v: impl fmt::Display) -> E {
            E::custom(format_args!("label values are strings; quote it: \"{v}\""))
        }
        impl Visitor<'_> for V {
            type Value = LabelValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<LabelValue, E> {
                Ok(LabelValue(s.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<LabelValue, E> {
                Err(quote(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LabelValue, E> {
                Err(quote(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LabelValue, E> {
                Err(quote(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LabelValue, E> {
                Err(quote(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string-keyed mapping that rejects duplicate keys, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueMap<V>(pub Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> UniqueMap<V> {
    pub(super) fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key.is_empty() {
                        return Err(de::Error::custom("keys must not be empty"));
                    }
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}
