//! Kubernetes objects into the mesh model.
//!
//! | Kubernetes | mesh |
//! |---|---|
//! | Service `reviews` in namespace `prod` | service `reviews.prod.svc.cluster.local` (the [`HostnameForm`] chosen), with the other three of `reviews`, `reviews.prod`, `reviews.prod.svc`, `reviews.prod.svc.<domain>` as aliases |
//! | Service port (TCP) | service port; protocol from `appProtocol`, else the name's prefix (`http-`, `http2-`, `h2c-`, `grpc-`, `tcp-`, `https-`, `tls-`), else `default_protocol`; UDP and SCTP ports are left out |
//! | EndpointSlice (label `kubernetes.io/service-name`) endpoint | endpoint at its first address, with the slice's ports (by name) |
//! | `conditions.ready` (nil = ready) | `Healthy` |
//! | `serving` (nil = `ready`) and `terminating` | `Draining`: used only when nothing healthy is left |
//! | neither | `Unhealthy`: kept (explain shows it), never routed to |
//! | the Pod of `targetRef` | its labels are the endpoint's labels (`version` splits traffic) |
//! | the Pod's `security.istio.io/tlsMode: istio` label or `anymesh.io/*` annotations, namespace and `spec.serviceAccountName` | the mesh proxy fronting the endpoint and its identity ([`crate::mesh`]); an unusable annotation leaves the endpoint out |
//! | endpoint `zone`, else the `nodeName` Node's zone label | locality zone |
//! | the `nodeName` Node's region label | locality region (unset when the node or its label is unknown) |
//! | ExternalName `spec.externalName` | aliases of the mesh service with that name, when this source has one; else a service whose one endpoint is that DNS name |
//!
//! Headless Services (`clusterIP: None`) need nothing special: the mesh
//! always connects to the endpoints' own addresses, never to a cluster IP.
//! The provenance's raw labels hold the pod labels plus `k8s.*` entries
//! (namespace, service, slice, pod, node, conditions) for explain output.

use std::collections::{BTreeMap, HashMap};

use anymesh_core::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance, Service,
    ServicePort, SourceId,
};
use k8s_openapi::api::core::v1::Service as KService;
use k8s_openapi::api::discovery::v1::{Endpoint as KEndpoint, EndpointSlice};

use crate::config::{HostnameForm, KubernetesConfig};
use crate::mesh::PodInfo;

/// The label joining an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Node label naming its region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The Node label naming its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The deprecated region label, read when [`REGION_LABEL`] is absent.
pub const BETA_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";
/// The deprecated zone label, read when [`ZONE_LABEL`] is absent.
pub const BETA_ZONE_LABEL: &str = "failure-domain.beta.kubernetes.io/zone";

/// Where a Node is, from its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTopology {
    pub region: Option<String>,
    pub zone: Option<String>,
}

impl NodeTopology {
    /// [`REGION_LABEL`] and [`ZONE_LABEL`], each falling back to its
    /// `failure-domain.beta.kubernetes.io` form; empty values count as absent.
    pub fn from_labels(labels: &Labels) -> Self {
        let get = |label: &str, beta: &str| {
            [label, beta]
                .iter()
                .filter_map(|l| labels.get(*l))
                .find(|v| !v.is_empty())
                .cloned()
        };
        Self {
            region: get(REGION_LABEL, BETA_REGION_LABEL),
            zone: get(ZONE_LABEL, BETA_ZONE_LABEL),
        }
    }
}

/// An endpoint's locality: zone from the endpoint's own `zone`, else its
/// node's; region from its node. Unknown stays unset.
pub fn locality(endpoint_zone: Option<&str>, node: Option<&NodeTopology>) -> Locality {
    Locality {
        region: node.and_then(|n| n.region.clone()),
        zone: endpoint_zone
            .filter(|z| !z.is_empty())
            .map(str::to_string)
            .or_else(|| node.and_then(|n| n.zone.clone())),
        subzone: None,
    }
}

/// What one source's objects mean for the catalog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub services: BTreeMap<Hostname, Service>,
    /// By native id (`namespace/service/address`).
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Objects (or parts of them) skipped as invalid, with why, by object.
    pub invalid: BTreeMap<String, String>,
}

/// Everything the watches hold at one moment (borrowed).
#[derive(Debug, Default)]
pub struct Objects<'a> {
    pub services: Vec<&'a KService>,
    pub slices: Vec<&'a EndpointSlice>,
    /// Pod labels and mesh proxies by (namespace, name).
    pub pods: HashMap<(&'a str, &'a str), &'a PodInfo>,
    /// Node topology by node name (empty when Nodes are not read).
    pub nodes: HashMap<&'a str, &'a NodeTopology>,
}

/// Turns watched objects into services and endpoints for one source.
#[derive(Debug, Clone)]
pub struct Translator {
    source: SourceId,
    domain: String,
    form: HostnameForm,
    default_protocol: Protocol,
}

/// A Service as its slices need it.
struct Known {
    primary: Hostname,
}

impl Translator {
    pub fn new(source: SourceId, config: &KubernetesConfig) -> Self {
        Self {
            source,
            domain: config.cluster_domain.trim_end_matches('.').to_string(),
            form: config.hostname,
            default_protocol: config.default_protocol,
        }
    }

    pub fn source(&self) -> &SourceId {
        &self.source
    }

    /// The mesh hostname of Service `name` in `namespace` and its aliases.
    pub fn names(&self, namespace: &str, name: &str) -> Result<(Hostname, Vec<Hostname>), String> {
        let forms = [
            (HostnameForm::Name, name.to_string()),
            (HostnameForm::Namespaced, format!("{name}.{namespace}")),
            (HostnameForm::Svc, format!("{name}.{namespace}.svc")),
            (
                HostnameForm::Fqdn,
                format!("{name}.{namespace}.svc.{}", self.domain),
            ),
        ];
        let mut primary = None;
        let mut aliases = Vec::new();
        for (form, n) in forms {
            let host = Hostname::new(&n).map_err(|e| format!("hostname {n:?}: {}", e.reason))?;
            if form == self.form {
                primary = Some(host);
            } else {
                aliases.push(host);
            }
        }
        match primary {
            Some(p) => Ok((p, aliases)),
            None => Err("no primary hostname".into()),
        }
    }

    /// The protocol of a port from its `appProtocol`, then its name.
    pub fn protocol(&self, name: &str, app_protocol: Option<&str>) -> Protocol {
        if let Some(p) = app_protocol.and_then(protocol_word) {
            return p;
        }
        let prefix = name.split('-').next().unwrap_or_default();
        protocol_word(prefix).unwrap_or(self.default_protocol)
    }

    /// Everything the objects declare.
    pub fn derive(&self, objects: &Objects<'_>) -> Derived {
        let mut out = Derived::default();
        let mut known: HashMap<(&str, &str), Known> = HashMap::new();
        let mut external = Vec::new();
        for svc in &objects.services {
            let (ns, name) = ns_name(&svc.metadata);
            let id = format!("service {ns}/{name}");
            let (primary, aliases) = match self.names(ns, name) {
                Ok(n) => n,
                Err(e) => {
                    out.invalid.insert(id.clone(), format!("{id}: {e}"));
                    continue;
                }
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let mut ports = Vec::new();
            for (i, p) in spec.ports.iter().flatten().enumerate() {
                if p.protocol.as_deref().is_some_and(|pr| pr != "TCP") {
                    continue; // UDP and SCTP are not proxied.
                }
                let Ok(number) = u16::try_from(p.port) else {
                    out.invalid.insert(
                        format!("{id} port {i}"),
                        format!("{id}: port {} is out of range", p.port),
                    );
                    continue;
                };
                let pname = p.name.clone().unwrap_or_default();
                ports.push(ServicePort {
                    protocol: self.protocol(&pname, p.app_protocol.as_deref()),
                    name: pname,
                    number,
                });
            }
            if spec.type_.as_deref() == Some("ExternalName") {
                external.push((svc, primary, aliases, ports, spec.external_name));
                continue;
            }
            let entry = out
                .services
                .entry(primary.clone())
                .or_insert_with(|| Service {
                    hostname: primary.clone(),
                    aliases: Vec::new(),
                    ports: Vec::new(),
                });
            merge(entry, aliases, &ports);
            known.insert((ns, name), Known { primary });
        }
        for (svc, primary, aliases, ports, target) in external {
            self.external(&mut out, svc, primary, aliases, ports, target);
        }
        for slice in &objects.slices {
            self.slice(&mut out, &known, objects, slice);
        }
        out
    }

    /// An ExternalName Service: aliases of the service it names, or a
    /// service whose endpoint is the external DNS name.
    fn external(
        &self,
        out: &mut Derived,
        svc: &KService,
        primary: Hostname,
        aliases: Vec<Hostname>,
        ports: Vec<ServicePort>,
        target: Option<String>,
    ) {
        let (ns, name) = ns_name(&svc.metadata);
        let id = format!("service {ns}/{name}");
        let target = target.unwrap_or_default();
        let target_host = match Hostname::new(&target) {
            Ok(h) => h,
            Err(e) => {
                out.invalid.insert(
                    id.clone(),
                    format!("{id}: externalName {target:?}: {}", e.reason),
                );
                return;
            }
        };
        let owner = out
            .services
            .values()
            .find(|s| s.hostname == target_host || s.aliases.contains(&target_host))
            .map(|s| s.hostname.clone());
        if let Some(owner) = owner {
            if let Some(s) = out.services.get_mut(&owner) {
                let mut names = aliases;
                names.push(primary);
                merge(s, names, &[]);
            }
            return;
        }
        if ports.is_empty() {
            out.invalid.insert(
                id.clone(),
                format!("{id}: ExternalName {target_host} names no mesh service and has no TCP port to reach it on"),
            );
            return;
        }
        let native_id = format!("{ns}/{name}/{target_host}");
        let mut raw = Labels::new();
        raw.insert("k8s.namespace".into(), ns.into());
        raw.insert("k8s.service".into(), name.into());
        raw.insert("k8s.external_name".into(), target_host.to_string());
        out.endpoints.insert(
            native_id.clone(),
            Endpoint {
                service: primary.clone(),
                address: target_host.to_string(),
                ports: ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone(),
                        number: p.number,
                    })
                    .collect(),
                labels: Labels::new(),
                health: Health::Healthy,
                weight: 1,
                locality: Locality::default(),
                mesh: None,
                provenance: Provenance {
                    source: self.source.clone(),
                    native_id,
                    raw_labels: raw,
                },
            },
        );
        let entry = out
            .services
            .entry(primary.clone())
            .or_insert_with(|| Service {
                hostname: primary,
                aliases: Vec::new(),
                ports: Vec::new(),
            });
        merge(entry, aliases, &ports);
    }

    fn slice(
        &self,
        out: &mut Derived,
        known: &HashMap<(&str, &str), Known>,
        objects: &Objects<'_>,
        slice: &EndpointSlice,
    ) {
        let (ns, slice_name) = ns_name(&slice.metadata);
        let id = format!("endpointslice {ns}/{slice_name}");
        let Some(svc_name) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            return; // Not a Service's slice.
        };
        let Some(svc) = known.get(&(ns, svc_name.as_str())) else {
            return; // Its Service is not (yet) watched.
        };
        let mut ports = Vec::new();
        for p in slice.ports.iter().flatten() {
            if p.protocol.as_deref().is_some_and(|pr| pr != "TCP") {
                continue;
            }
            let Some(n) = p.port else {
                continue; // "All ports": nothing to connect to.
            };
            let Ok(number) = u16::try_from(n) else {
                out.invalid
                    .insert(id.clone(), format!("{id}: port {n} is out of range"));
                continue;
            };
            ports.push(EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                number,
            });
        }
        if ports.is_empty() {
            return;
        }
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let Some(address) = ep.addresses.first() else {
                out.invalid.insert(
                    format!("{id} endpoint {i}"),
                    format!("{id}: endpoint {i} has no address"),
                );
                continue;
            };
            let native_id = format!("{ns}/{svc_name}/{address}");
            let health = health(ep);
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let pns = r.namespace.as_deref().unwrap_or(ns);
                    r.name.as_deref().map(|n| (pns, n))
                });
            let info = pod.and_then(|key| objects.pods.get(&key));
            let mesh = match info.map(|i| &i.mesh) {
                None | Some(Ok(None)) => None,
                Some(Ok(Some(m))) => Some(m.clone()),
                Some(Err(why)) => {
                    let (pns, pname) = pod.unwrap_or_default();
                    out.invalid.insert(
                        format!("{id} endpoint {i}"),
                        format!("{id}: endpoint {address} of pod {pns}/{pname}: {why}"),
                    );
                    continue;
                }
            };
            let labels = info.map(|i| i.labels.clone()).unwrap_or_default();
            let mut raw = labels.clone();
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    raw.insert(format!("k8s.{k}"), v);
                }
            };
            let cond = ep.conditions.clone().unwrap_or_default();
            let b = |v: Option<bool>| Some(v.map_or("unset".into(), |b| b.to_string()));
            put("namespace", Some(ns.into()));
            put("service", Some(svc_name.clone()));
            put("endpointslice", Some(slice_name.into()));
            put("pod", pod.map(|(_, n)| n.to_string()));
            put("node", ep.node_name.clone());
            put("hostname", ep.hostname.clone());
            put("ready", b(cond.ready));
            put("serving", b(cond.serving));
            put("terminating", b(cond.terminating));
            put("address_type", Some(slice.address_type.clone()));
            let endpoint = Endpoint {
                service: svc.primary.clone(),
                address: address.clone(),
                ports: ports.clone(),
                labels,
                health,
                weight: 1,
                locality: locality(
                    ep.zone.as_deref(),
                    ep.node_name
                        .as_deref()
                        .and_then(|n| objects.nodes.get(n).copied()),
                ),
                mesh,
                provenance: Provenance {
                    source: self.source.clone(),
                    native_id: native_id.clone(),
                    raw_labels: raw,
                },
            };
            // The same address in two slices (while it moves): keep the
            // better condition.
            match out.endpoints.get(&native_id) {
                Some(old) if rank(old.health) >= rank(endpoint.health) => {}
                _ => {
                    out.endpoints.insert(native_id, endpoint);
                }
            }
        }
    }
}

/// An endpoint's health from its conditions (KEP-1672 semantics): `ready`
/// nil is ready; `serving` nil defers to `ready`; `terminating` nil is not.
pub fn health(ep: &KEndpoint) -> Health {
    let c = ep.conditions.clone().unwrap_or_default();
    let ready = c.ready.unwrap_or(true);
    let serving = c.serving.unwrap_or(ready);
    let terminating = c.terminating.unwrap_or(false);
    if ready && !terminating {
        Health::Healthy
    } else if serving && terminating {
        Health::Draining
    } else {
        Health::Unhealthy
    }
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Healthy => 2,
        Health::Draining => 1,
        Health::Unhealthy => 0,
    }
}

/// A protocol named by `appProtocol` or a port name prefix.
fn protocol_word(word: &str) -> Option<Protocol> {
    match word.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" => Some(Protocol::Http2),
        "kubernetes.io/ws" => Some(Protocol::Http),
        "https" | "tls" | "kubernetes.io/wss" | "mongo" | "mysql" | "redis" => Some(Protocol::Tcp),
        w => Protocol::parse(w),
    }
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Adds aliases and ports to a service (several Services may share one
/// mesh hostname under [`HostnameForm::Name`]).
fn merge(svc: &mut Service, aliases: Vec<Hostname>, ports: &[ServicePort]) {
    for a in aliases {
        if a != svc.hostname && !svc.aliases.contains(&a) {
            svc.aliases.push(a);
        }
    }
    svc.aliases.sort();
    for p in ports {
        if !svc.ports.iter().any(|q| q.number == p.number) {
            svc.ports.push(p.clone());
        }
    }
    svc.ports.sort_by_key(|p| p.number);
}

#[cfg(test)]
mod tests;
