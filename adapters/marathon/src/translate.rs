//! Marathon apps and tasks into the mesh model.
//!
//! | Marathon | mesh |
//! |---|---|
//! | app id `/prod/shop/web` | service hostname `web.shop.prod` (`hostname`: reversed, joined, template) |
//! | app `labels` | endpoint labels (then the registry's mapping rules) |
//! | `portDefinitions` / `container.portMappings` / `container.docker.portMappings` names | port names; named ports are declared as service ports (`servicePort`) |
//! | task `host` + `ports` (host, bridge networking) or `ipAddresses` + container ports (container networking) | endpoint address and ports |
//! | task `state` and `healthCheckResults` | health: `Healthy` when eligible, else `Unhealthy` with the reason in `marathon.ineligible` |
//! | task `region` / `zone` | locality |
//! | task id | provenance native id |
//! | app labels `anymesh.proxy-port`, `anymesh.namespace`, `anymesh.service-account`, `anymesh.spiffe-id`; a port labelled `anymesh.proxy: "true"` | the mesh proxy fronting the endpoint ([`MESH_LABELS`], [`PROXY_PORT_LABEL`]) |
//!
//! A task is fronted by a mesh proxy when its app carries any of the
//! `anymesh.*` mesh labels or one of its ports is labelled
//! `anymesh.proxy: "true"`; the proxy listens on that port (the task's host
//! port, or its container port with container networking), else on the
//! `anymesh.proxy-port` label's number, else on [`DEFAULT_MESH_PORT`]. A
//! label that cannot be used (a port that is not 1..=65535, a name or SPIFFE
//! ID that could not be an identity, a proxy port the task lacks) refuses
//! the task's endpoint with the reason: it is never reached in plaintext.

use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance, Service,
    ServicePort, SourceId,
};
use anymesh_support::MeshKeys;

use crate::config::{AddressMode, HostnameStyle, MarathonConfig};
use crate::decode::{App, Task};

/// How an app's tasks are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Networking {
    /// The agent's network (`host` and host ports).
    Host,
    /// Docker bridge: host ports mapped to container ports, reached on the agent.
    Bridge,
    /// IP-per-task: the task's own IP and its container ports.
    Container,
}

impl Networking {
    fn as_str(self) -> &'static str {
        match self {
            Networking::Host => "host",
            Networking::Bridge => "container/bridge",
            Networking::Container => "container",
        }
    }
}

/// One port of an app, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: Option<String>,
    /// The port clients address (`servicePort`, `portDefinitions[].port`, `ports[]`).
    pub service_port: u32,
    /// The port inside the container (mappings only).
    pub container_port: u32,
    /// Transport (`tcp`, `udp`, `udp,tcp`).
    pub transport: String,
    /// Labelled `anymesh.skip: "true"` (or `anymesh.proxy: "true"`): not a
    /// port of the service (e.g. the listeners of an anymesh running in the
    /// same task).
    pub skip: bool,
    /// Labelled `anymesh.proxy: "true"`: the inbound port of the mesh proxy
    /// fronting the task.
    pub proxy: bool,
}

/// The port label that keeps a port out of the mesh.
pub const SKIP_LABEL: &str = "anymesh.skip";
/// The port label that marks a port as the mesh proxy's inbound port.
pub const PROXY_PORT_LABEL: &str = "anymesh.proxy";

/// The app labels naming the mesh proxy fronting its tasks.
pub const MESH_LABELS: MeshKeys = MeshKeys {
    port: "anymesh.proxy-port",
    namespace: "anymesh.namespace",
    service_account: "anymesh.service-account",
    spiffe_id: "anymesh.spiffe-id",
};

fn flag(labels: &std::collections::BTreeMap<String, String>, key: &str) -> bool {
    labels
        .get(key)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn skipped(labels: &std::collections::BTreeMap<String, String>) -> bool {
    flag(labels, SKIP_LABEL)
}

fn proxied(labels: &std::collections::BTreeMap<String, String>) -> bool {
    flag(labels, PROXY_PORT_LABEL)
}

/// Turns apps and tasks into services and endpoints for one source.
#[derive(Debug, Clone)]
pub struct Translator {
    source: SourceId,
    style: HostnameStyle,
    template: String,
    address: AddressMode,
}

impl Translator {
    pub fn new(source: SourceId, config: &MarathonConfig) -> Self {
        Self {
            source,
            style: config.hostname,
            template: config.hostname_template.clone().unwrap_or_default(),
            address: config.address,
        }
    }

    pub fn source(&self) -> &SourceId {
        &self.source
    }

    /// The mesh hostname of an app id.
    pub fn hostname(&self, app_id: &str) -> Result<Hostname, String> {
        let segments: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).collect();
        let Some((name, group)) = segments.split_last() else {
            return Err(format!("app id {app_id:?} has no path segment"));
        };
        let reversed = || segments.iter().rev().copied().collect::<Vec<_>>().join(".");
        let joined = || segments.join("-");
        let text = match self.style {
            HostnameStyle::Reversed => reversed(),
            HostnameStyle::Joined => joined(),
            HostnameStyle::Template => {
                let group_rev = group.iter().rev().copied().collect::<Vec<_>>().join(".");
                let filled = self
                    .template
                    .replace("{name}", name)
                    .replace("{group}", &group_rev)
                    .replace("{reversed}", &reversed())
                    .replace("{joined}", &joined());
                // An empty `{group}` (a top-level app) leaves no empty label.
                filled
                    .split('.')
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(".")
            }
        };
        Hostname::new(&text)
            .map_err(|e| format!("app id {app_id:?} gives hostname {text:?}: {}", e.reason))
    }

    /// How the app's tasks are reached, from its networking (or the configured override).
    pub fn networking(&self, app: &App) -> Networking {
        match self.address {
            AddressMode::Host => return Networking::Host,
            AddressMode::Container => return Networking::Container,
            AddressMode::Auto => {}
        }
        let modes: Vec<&str> = app
            .networks
            .iter()
            .filter_map(|n| n.mode.as_deref())
            .collect();
        if modes.contains(&"container") {
            return Networking::Container;
        }
        if modes.contains(&"container/bridge") {
            return Networking::Bridge;
        }
        if !modes.is_empty() {
            return Networking::Host;
        }
        let docker_net = app
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .and_then(|d| d.network.as_deref())
            .map(str::to_ascii_uppercase);
        match docker_net.as_deref() {
            Some("USER") => Networking::Container,
            Some("BRIDGE") => Networking::Bridge,
            _ if app.ip_address.as_ref().is_some_and(|v| v.is_object()) => Networking::Container,
            _ => Networking::Host,
        }
    }

    /// The app's ports by index: container port mappings (1.5+ or Docker's),
    /// else `portDefinitions`, else `ports`.
    pub fn ports(&self, app: &App) -> Vec<PortSpec> {
        let container = app.container.as_ref();
        let mappings = container
            .map(|c| c.port_mappings.as_slice())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                container
                    .and_then(|c| c.docker.as_ref())
                    .map(|d| d.port_mappings.as_slice())
                    .filter(|m| !m.is_empty())
            });
        if let Some(m) = mappings {
            return m
                .iter()
                .map(|p| PortSpec {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    service_port: p.service_port.unwrap_or(0),
                    container_port: p.container_port,
                    transport: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                    skip: skipped(&p.labels) || proxied(&p.labels),
                    proxy: proxied(&p.labels),
                })
                .collect();
        }
        if !app.port_definitions.is_empty() {
            return app
                .port_definitions
                .iter()
                .map(|p| PortSpec {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    service_port: p.port,
                    container_port: 0,
                    transport: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                    skip: skipped(&p.labels) || proxied(&p.labels),
                    proxy: proxied(&p.labels),
                })
                .collect();
        }
        app.ports
            .iter()
            .map(|&p| PortSpec {
                name: None,
                service_port: p,
                container_port: 0,
                transport: "tcp".into(),
                skip: false,
                proxy: false,
            })
            .collect()
    }

    /// The service an app declares. Named TCP ports become service ports
    /// (their protocol from the name: `grpc`, `http2`, `tcp`, or a prefix
    /// such as `grpc-api`); an app without port names declares none (the
    /// catalog gives it one implicit HTTP port).
    pub fn service(&self, app: &App) -> Result<Service, String> {
        let hostname = self.hostname(&app.id)?;
        let specs = self.ports(app);
        let mut ports = Vec::new();
        if specs.iter().any(|s| !s.skip && s.name.is_some()) {
            for (i, s) in specs.iter().enumerate() {
                if s.skip || !carries_tcp(&s.transport) {
                    continue;
                }
                let number = if s.service_port > 0 {
                    s.service_port
                } else {
                    s.container_port
                };
                let Ok(number) = u16::try_from(number) else {
                    continue;
                };
                if number == 0 {
                    continue;
                }
                let name = port_name(s, i);
                ports.push(ServicePort {
                    protocol: protocol_of(&name),
                    name,
                    number,
                });
            }
        }
        Ok(Service {
            hostname,
            aliases: Vec::new(),
            ports,
        })
    }

    /// Why a task must not receive traffic, or `None` when it may.
    pub fn ineligible(&self, app: &App, task: &Task) -> Option<String> {
        let state = task_state(task);
        if state != "TASK_RUNNING" {
            return Some(format!("task state {state}"));
        }
        if app.health_checks.is_empty() {
            return None;
        }
        if task.health_check_results.is_empty() {
            return Some(format!(
                "the app has {} health check(s) and the task has no result yet",
                app.health_checks.len()
            ));
        }
        if task.health_check_results.len() < app.health_checks.len() {
            return Some(format!(
                "{} of the app's {} health checks have reported",
                task.health_check_results.len(),
                app.health_checks.len()
            ));
        }
        let failing: Vec<String> = task
            .health_check_results
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.alive)
            .map(|(i, r)| {
                format!(
                    "health check {i} failing ({} consecutive failures)",
                    r.consecutive_failures
                )
            })
            .collect();
        (!failing.is_empty()).then(|| failing.join(", "))
    }

    /// The endpoint of one task, or why it has none (only a task that is
    /// otherwise eligible and has no usable address or port has none: the
    /// others are kept, unhealthy, for explain output).
    pub fn endpoint(&self, app: &App, task: &Task) -> Result<Endpoint, String> {
        let service = self.hostname(&app.id)?;
        let net = self.networking(app);
        let specs = self.ports(app);
        let mut problem = None;
        let address = match net {
            Networking::Host | Networking::Bridge => task.host.clone().filter(|h| !h.is_empty()),
            Networking::Container => task.ip_addresses.first().map(|ip| ip.ip_address.clone()),
        };
        let address = address.unwrap_or_else(|| {
            problem = Some(match net {
                Networking::Container => "no `ipAddresses` (container networking)".to_string(),
                _ => "no `host`".to_string(),
            });
            task.host.clone().unwrap_or_default()
        });
        let named = specs.iter().any(|s| !s.skip && s.name.is_some());
        let count = specs.len().max(task.ports.len());
        let mut ports = Vec::new();
        for i in 0..count {
            let spec = specs.get(i);
            if spec.is_some_and(|s| s.skip || !carries_tcp(&s.transport)) {
                continue;
            }
            let number = task_port(net, spec, task, i);
            let Some(number) = number else { continue };
            let Ok(number) = u16::try_from(number) else {
                problem.get_or_insert(format!("port {number} (index {i}) is out of range"));
                continue;
            };
            if number == 0 {
                continue;
            }
            let name = match spec {
                Some(s) if named => port_name(s, i),
                _ if named => format!("port{i}"),
                _ => String::new(),
            };
            ports.push(EndpointPort { name, number });
            if !named {
                // Unnamed ports: the first one serves the service.
                break;
            }
        }
        if ports.is_empty() {
            problem.get_or_insert_with(|| "no port".into());
        }
        let mesh = mesh(app, task, net, &specs)
            .map_err(|p| format!("task {} of app {}: {p}", task.id, app.id))?;
        let ineligible = self.ineligible(app, task);
        if let (Some(p), None) = (&problem, &ineligible) {
            return Err(format!("task {} of app {}: {p}", task.id, app.id));
        }
        let mut raw = reported(app, task, net);
        let reason = ineligible.map(|r| match &problem {
            Some(p) => format!("{r}; {p}"),
            None => r,
        });
        if let Some(r) = &reason {
            raw.insert("marathon.ineligible".into(), r.clone());
        }
        Ok(Endpoint {
            service,
            address,
            ports,
            labels: app.labels.clone(),
            health: if reason.is_none() {
                Health::Healthy
            } else {
                Health::Unhealthy
            },
            weight: 1,
            locality: Locality {
                region: task.region.clone(),
                zone: task.zone.clone(),
                subzone: None,
            },
            mesh,
            provenance: Provenance {
                source: self.source.clone(),
                native_id: task.id.clone(),
                raw_labels: raw,
            },
        })
    }
}

/// The number of the task's port `i`: its host port, or with container
/// networking the container port of the mapping.
fn task_port(net: Networking, spec: Option<&PortSpec>, task: &Task, i: usize) -> Option<u32> {
    match net {
        Networking::Container => spec
            .map(|s| s.container_port)
            .filter(|&p| p > 0)
            .or_else(|| task.ports.get(i).copied()),
        _ => task.ports.get(i).copied(),
    }
}

/// The mesh proxy fronting a task (see the module docs), or why its labels
/// cannot be used.
fn mesh(
    app: &App,
    task: &Task,
    net: Networking,
    specs: &[PortSpec],
) -> Result<Option<MeshProxy>, String> {
    let fields = MESH_LABELS
        .read(|k| app.labels.get(k).map(String::as_str))
        .map_err(|e| format!("label {e}"))?;
    let marked: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].proxy).collect();
    let port = match marked.as_slice() {
        [] => None,
        [i] => {
            if fields.as_ref().is_some_and(|f| f.port.is_some()) {
                return Err(format!(
                    "both the app label {} and a port labelled {PROXY_PORT_LABEL} name the mesh \
                     proxy's port; use one",
                    MESH_LABELS.port
                ));
            }
            let n = task_port(net, specs.get(*i), task, *i).unwrap_or(0);
            match u16::try_from(n) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    return Err(format!(
                        "the port labelled {PROXY_PORT_LABEL} (index {i}) has no usable number \
                         ({n}) on this task"
                    ))
                }
            }
        }
        more => {
            return Err(format!(
            "{} ports are labelled {PROXY_PORT_LABEL} (indexes {more:?}); one proxy port at most",
            more.len()
        ))
        }
    };
    if fields.is_none() && port.is_none() {
        return Ok(None);
    }
    let f = fields.unwrap_or_default();
    Ok(Some(MeshProxy {
        port: port.or(f.port).unwrap_or(DEFAULT_MESH_PORT),
        namespace: f.namespace,
        service_account: f.service_account,
        spiffe_id: f.spiffe_id,
    }))
}

/// The task's state; tasks of Marathon before 0.15 have none, so a started
/// task counts as running and an unstarted one as staging.
pub fn task_state(task: &Task) -> &str {
    match (&task.state, &task.started_at) {
        (Some(s), _) => s,
        (None, Some(_)) => "TASK_RUNNING",
        (None, None) => "TASK_STAGING",
    }
}

fn carries_tcp(transport: &str) -> bool {
    transport
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("tcp"))
}

fn port_name(s: &PortSpec, i: usize) -> String {
    s.name.clone().unwrap_or_else(|| format!("port{i}"))
}

/// `grpc`, `http2`, `tcp`, ... or their `-` prefix; HTTP otherwise.
fn protocol_of(name: &str) -> Protocol {
    Protocol::parse(name)
        .or_else(|| name.split(['-', '_']).next().and_then(Protocol::parse))
        .unwrap_or(Protocol::Http)
}

/// The app labels plus what Marathon reports about the task, as `marathon.*`.
fn reported(app: &App, task: &Task, net: Networking) -> Labels {
    let mut l = app.labels.clone();
    let mut put = |k: &str, v: String| {
        l.insert(format!("marathon.{k}"), v);
    };
    put("app_id", app.id.clone());
    put("state", task_state(task).to_string());
    put("networking", net.as_str().into());
    if let Some(h) = &task.host {
        put("host", h.clone());
    }
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    if !task.ports.is_empty() {
        put("ports", list(&task.ports));
    }
    if !task.service_ports.is_empty() {
        put("service_ports", list(&task.service_ports));
    }
    if !task.ip_addresses.is_empty() {
        put(
            "ip_addresses",
            task.ip_addresses
                .iter()
                .map(|i| i.ip_address.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if !app.health_checks.is_empty() {
        let alive = task.health_check_results.iter().filter(|r| r.alive).count();
        put(
            "health",
            format!("{alive}/{} alive", app.health_checks.len()),
        );
    }
    if let Some(v) = &task.version {
        put("version", v.clone());
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(style: HostnameStyle, template: Option<&str>) -> Translator {
        let mut c = MarathonConfig::new(["http://m:8080"]);
        c.hostname = style;
        c.hostname_template = template.map(str::to_string);
        Translator::new(SourceId::new("m"), &c)
    }

    #[test]
    fn app_ids_become_hostnames() {
        let h = |t: &Translator, id: &str| t.hostname(id).map(|h| h.to_string());
        let rev = tr(HostnameStyle::Reversed, None);
        assert_eq!(h(&rev, "/prod/shop/web").unwrap(), "web.shop.prod");
        assert_eq!(h(&rev, "/toggle").unwrap(), "toggle");
        assert_eq!(
            h(&tr(HostnameStyle::Joined, None), "/prod/shop/web").unwrap(),
            "prod-shop-web"
        );
        let t = tr(
            HostnameStyle::Template,
            Some("{name}.{group}.marathon.mesh"),
        );
        assert_eq!(
            h(&t, "/prod/shop/web").unwrap(),
            "web.shop.prod.marathon.mesh"
        );
        assert_eq!(h(&t, "/web").unwrap(), "web.marathon.mesh");
        let e = h(&rev, "/").unwrap_err();
        assert!(e.contains("no path segment"), "{e}");
        let e = h(&rev, "/a b").unwrap_err();
        assert!(e.contains("\"/a b\""), "{e}");
    }

    /// One app with host networking, its port definitions and one task.
    fn app(labels: &str, port_definitions: &str, task_ports: &str) -> App {
        let body = format!(
            r#"{{"apps":[{{"id":"/shop/web","labels":{labels},"portDefinitions":{port_definitions},
                "tasks":[{{"id":"web.1","appId":"/shop/web","host":"10.0.0.1","ports":{task_ports},
                           "state":"TASK_RUNNING","startedAt":"2026-01-01T00:00:00.000Z"}}]}}]}}"#
        );
        let mut list = crate::decode::decode_apps(body.as_bytes()).unwrap();
        assert!(list.problems.is_empty(), "{:?}", list.problems);
        list.apps.remove(0)
    }

    #[test]
    fn mesh_labels_and_the_proxy_port_label() {
        let t = tr(HostnameStyle::Reversed, None);
        let mesh = |a: &App| t.endpoint(a, &a.tasks[0]).map(|e| e.mesh);
        let two = r#"[{"port":0,"name":"http","labels":{}},
                      {"port":0,"name":"mesh","labels":{"anymesh.proxy":"true"}}]"#;
        assert_eq!(mesh(&app("{}", "[{\"port\":0}]", "[31000]")), Ok(None));
        assert_eq!(
            mesh(&app(
                r#"{"anymesh.namespace":"shop"}"#,
                two,
                "[31000,31001]"
            )),
            Ok(Some(MeshProxy::new(31001, Some("shop".into()), None)))
        );
        assert_eq!(
            mesh(&app(
                r#"{"anymesh.proxy-port":"15001"}"#,
                "[{\"port\":0}]",
                "[31000]"
            )),
            Ok(Some(MeshProxy::new(15001, None, None)))
        );
        let err = |a: App| mesh(&a).unwrap_err();
        assert_eq!(
            err(app(
                r#"{"anymesh.proxy-port":"15001"}"#,
                two,
                "[31000,31001]"
            )),
            "task web.1 of app /shop/web: both the app label anymesh.proxy-port and a port \
             labelled anymesh.proxy name the mesh proxy's port; use one"
        );
        assert_eq!(
            err(app("{}", two, "[31000]")),
            "task web.1 of app /shop/web: the port labelled anymesh.proxy (index 1) has no \
             usable number (0) on this task"
        );
        let both = r#"[{"port":0,"labels":{"anymesh.proxy":"true"}},
                       {"port":0,"labels":{"anymesh.proxy":"true"}}]"#;
        assert_eq!(
            err(app("{}", both, "[31000,31001]")),
            "task web.1 of app /shop/web: 2 ports are labelled anymesh.proxy (indexes [0, 1]); \
             one proxy port at most"
        );
        assert_eq!(
            err(app(
                r#"{"anymesh.service-account":"a b"}"#,
                "[{\"port\":0}]",
                "[31000]"
            )),
            r#"task web.1 of app /shop/web: label anymesh.service-account "a b": may hold only letters, digits, '.', '-' and '_'"#
        );
    }

    #[test]
    fn protocols_follow_port_names() {
        assert_eq!(protocol_of("grpc"), Protocol::Grpc);
        assert_eq!(protocol_of("grpc-api"), Protocol::Grpc);
        assert_eq!(protocol_of("tcp_db"), Protocol::Tcp);
        assert_eq!(protocol_of("web"), Protocol::Http);
    }
}
