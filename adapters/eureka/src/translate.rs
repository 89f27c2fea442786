//! Eureka instances into the mesh model.
//!
//! | Eureka | mesh |
//! |---|---|
//! | application name (`TESTENG.LSM`) | service hostname, lower-cased (`testeng.lsm`) |
//! | `vipAddress`, `secureVipAddress` (comma-separated) | the service's aliases (invalid names skipped) |
//! | `ipAddr` or `hostName` (`address`) | endpoint address |
//! | `port` or `securePort` (`port`) | endpoint port; a disabled port makes the endpoint ineligible |
//! | `status` / `overriddenStatus` | health: `Healthy` when the effective status is eligible, else `Unhealthy` |
//! | `metadata` | labels (then the registry's mapping rules) |
//! | `dataCenterInfo` `availability-zone` | locality zone |
//! | `<APP>/<instanceId>` | provenance native id |
//! | `metadata` `anymesh.proxy-port`, `anymesh.namespace`, `anymesh.service-account`, `anymesh.spiffe-id` | the mesh proxy fronting the endpoint ([`MESH_METADATA`]) |
//!
//! Any of the `anymesh.*` mesh keys marks the instance as fronted by a mesh
//! proxy (on [`DEFAULT_MESH_PORT`] unless `anymesh.proxy-port` says). A value
//! that cannot be used (a port that is not 1..=65535, a name or SPIFFE ID
//! that could not be an identity) makes the instance invalid: it is left out
//! and reported, never reached in plaintext.
//!
//! The provenance's raw labels hold the metadata plus `eureka.*` entries for
//! what Eureka reports but the mesh does not route on (status, overridden
//! status, ports and their flags, VIPs, data center, lease), so explain
//! output shows why an instance is or is not used.

use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Provenance, Service, SourceId,
};
use anymesh_support::MeshKeys;

use crate::config::{AddressField, EurekaConfig, PortChoice};
use crate::decode::{Instance, Status};

/// The instance `metadata` keys naming the mesh proxy fronting it (set in
/// Spring Cloud with `eureka.instance.metadata-map`).
pub const MESH_METADATA: MeshKeys = MeshKeys {
    port: "anymesh.proxy-port",
    namespace: "anymesh.namespace",
    service_account: "anymesh.service-account",
    spiffe_id: "anymesh.spiffe-id",
};

/// Turns instances into endpoints and services for one source.
#[derive(Debug, Clone)]
pub struct Translator {
    source: SourceId,
    address: AddressField,
    port: PortChoice,
    eligible: Vec<Status>,
}

impl Translator {
    pub fn new(source: SourceId, config: &EurekaConfig) -> Self {
        Self {
            source,
            address: config.address,
            port: config.port,
            eligible: config.eligible_statuses.clone(),
        }
    }

    pub fn source(&self) -> &SourceId {
        &self.source
    }

    /// The mesh hostname of an application: its name, lower-cased.
    pub fn hostname(&self, app: &str) -> Result<Hostname, String> {
        Hostname::new(app).map_err(|e| format!("application name {app:?}: {}", e.reason))
    }

    /// Whether an instance with this effective status receives traffic.
    pub fn is_eligible(&self, status: Status) -> bool {
        self.eligible.contains(&status)
    }

    /// The instance's VIP addresses that are valid mesh hostnames.
    pub fn aliases(&self, inst: &Instance) -> Vec<Hostname> {
        [&inst.vip_address, &inst.secure_vip_address]
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .filter_map(|v| Hostname::new(v.trim()).ok())
            .collect()
    }

    /// The service an application declares: its hostname and the VIPs of
    /// its instances as aliases (ports come from the endpoints).
    pub fn service<'a>(
        &self,
        app: &str,
        instances: impl IntoIterator<Item = &'a Instance>,
    ) -> Result<Service, String> {
        let hostname = self.hostname(app)?;
        let mut aliases: Vec<Hostname> = instances
            .into_iter()
            .flat_map(|i| self.aliases(i))
            .filter(|a| *a != hostname)
            .collect();
        aliases.sort();
        aliases.dedup();
        Ok(Service {
            hostname,
            aliases,
            ports: Vec::new(),
        })
    }

    /// The endpoint of one instance, or why it has none.
    pub fn endpoint(&self, inst: &Instance) -> Result<Endpoint, String> {
        let service = self.hostname(&inst.app)?;
        let address = match self.address {
            AddressField::IpAddr => inst.ip_addr.clone().ok_or("no ipAddr")?,
            AddressField::HostName => strip_port(inst.host_name.as_deref().ok_or("no hostName")?),
        };
        let (port, name) = match self.port {
            PortChoice::Port => (&inst.port, "port"),
            PortChoice::SecurePort => (&inst.secure_port, "securePort"),
        };
        let number = port.number().map_err(|e| format!("{name}: {e}"))?;
        let mesh = MESH_METADATA
            .read(|k| inst.metadata.get(k).map(String::as_str))
            .map_err(|e| format!("metadata {e}"))?
            .map(|f| MeshProxy {
                port: f.port.unwrap_or(DEFAULT_MESH_PORT),
                namespace: f.namespace,
                service_account: f.service_account,
                spiffe_id: f.spiffe_id,
            });
        let status = inst.effective_status();
        let health = if self.is_eligible(status) && port.enabled {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        let locality = Locality {
            zone: inst
                .data_center
                .as_ref()
                .and_then(|d| d.metadata.get("availability-zone").cloned()),
            ..Locality::default()
        };
        Ok(Endpoint {
            service,
            address,
            ports: vec![EndpointPort {
                name: String::new(),
                number,
            }],
            labels: inst.metadata.clone(),
            health,
            weight: 1,
            locality,
            mesh,
            provenance: Provenance {
                source: self.source.clone(),
                native_id: inst.key(),
                raw_labels: reported(inst),
            },
        })
    }
}

/// `host:7100` (as old servers write `hostName`) without the port.
fn strip_port(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.into(),
        _ => host.into(),
    }
}

/// The metadata plus what Eureka reports about the instance, as `eureka.*`.
fn reported(inst: &Instance) -> Labels {
    let mut l = inst.metadata.clone();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            l.insert(format!("eureka.{k}"), v);
        }
    };
    put("status", Some(inst.status.as_str().into()));
    put(
        "overriddenstatus",
        inst.overridden_status.map(|s| s.as_str().into()),
    );
    put("host_name", inst.host_name.clone());
    put("ip_addr", inst.ip_addr.clone());
    put("port", Some(inst.port.number.clone()));
    put("port.enabled", Some(inst.port.enabled.to_string()));
    put("secure_port", Some(inst.secure_port.number.clone()));
    put(
        "secure_port.enabled",
        Some(inst.secure_port.enabled.to_string()),
    );
    put("vip_address", inst.vip_address.clone());
    put("secure_vip_address", inst.secure_vip_address.clone());
    if let Some(dc) = &inst.data_center {
        put("datacenter", dc.name.clone());
        put("datacenter.class", dc.class.clone());
        for (k, v) in &dc.metadata {
            put(&format!("datacenter.{k}"), Some(v.clone()));
        }
    }
    if let Some(lease) = &inst.lease {
        // The renewal timestamp changes with every heartbeat: left out so a
        // refetch of an unchanged instance changes nothing.
        let n = |v: Option<i64>| v.map(|n| n.to_string());
        put(
            "lease.renewal_interval_secs",
            n(lease.renewal_interval_secs),
        );
        put("lease.duration_secs", n(lease.duration_secs));
        put(
            "lease.registration_timestamp",
            n(lease.registration_timestamp),
        );
        put("lease.service_up_timestamp", n(lease.service_up_timestamp));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::EurekaConfig;
    use crate::decode::decode_applications;

    /// One instance in the JSON Eureka serves, with the given metadata.
    fn instance(metadata: &str) -> Instance {
        let body = format!(
            r#"{{"applications":{{"application":[{{"name":"REVIEWS","instance":[{{
                "instanceId":"r1","hostName":"r1.internal","app":"REVIEWS",
                "ipAddr":"10.0.0.1","status":"UP","overriddenstatus":"UNKNOWN",
                "port":{{"$":9080,"@enabled":"true"}},"securePort":{{"$":443,"@enabled":"false"}},
                "dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},
                "metadata":{metadata}}}]}}]}}}}"#
        );
        let mut apps = decode_applications(body.as_bytes(), None).unwrap();
        assert!(apps.problems.is_empty(), "{:?}", apps.problems);
        apps.instances.remove(0)
    }

    fn translator() -> Translator {
        let config = EurekaConfig::new(["http://127.0.0.1:8761/eureka"]);
        Translator::new(SourceId::new("eureka"), &config)
    }

    #[test]
    fn mesh_metadata_marks_the_proxy_and_its_identity() {
        let tr = translator();
        let mesh = |md: &str| tr.endpoint(&instance(md)).map(|e| e.mesh);
        assert_eq!(mesh(r#"{"zone":"a"}"#), Ok(None));
        assert_eq!(
            mesh(r#"{"@class":"java.util.Collections$EmptyMap"}"#),
            Ok(None)
        );
        assert_eq!(
            mesh(r#"{"anymesh.namespace":"shop"}"#),
            Ok(Some(MeshProxy::new(
                DEFAULT_MESH_PORT,
                Some("shop".into()),
                None
            )))
        );
        assert_eq!(
            mesh(
                r#"{"anymesh.proxy-port":"15001","anymesh.namespace":"shop",
                    "anymesh.service-account":"reviews"}"#
            ),
            Ok(Some(MeshProxy::new(
                15001,
                Some("shop".into()),
                Some("reviews".into())
            )))
        );
        assert_eq!(
            mesh(r#"{"anymesh.spiffe-id":"spiffe://corp.example/eureka/reviews"}"#),
            Ok(Some(MeshProxy {
                port: DEFAULT_MESH_PORT,
                spiffe_id: Some("spiffe://corp.example/eureka/reviews".into()),
                ..MeshProxy::default()
            }))
        );
        // Unusable values refuse the instance, naming the key.
        assert_eq!(
            mesh(r#"{"anymesh.proxy-port":"0"}"#),
            Err(r#"metadata anymesh.proxy-port "0": not a port number 1..=65535"#.into())
        );
        assert_eq!(
            mesh(r#"{"anymesh.proxy-port":"http"}"#),
            Err(r#"metadata anymesh.proxy-port "http": not a port number 1..=65535"#.into())
        );
        assert_eq!(
            mesh(r#"{"anymesh.spiffe-id":"reviews"}"#),
            Err(r#"metadata anymesh.spiffe-id "reviews": does not start with spiffe://"#.into())
        );
    }

    #[test]
    fn strips_a_port_from_host_names_only() {
        assert_eq!(strip_port("qa22gs:7100"), "qa22gs");
        assert_eq!(strip_port("host.example"), "host.example");
        assert_eq!(strip_port("fe80::1"), "fe80::1");
    }
}
