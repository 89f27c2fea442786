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

use anymesh_core::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance, Service,
    ServicePort, SourceId,
};

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
    /// Labelled `anymesh.skip: "true"`: not a port of the service (e.g. the
    /// listeners of an anymesh running in the same task).
    pub skip: bool,
}

/// The port label that keeps a port out of the mesh.
pub const SKIP_LABEL: &str = "anymesh.skip";

fn skipped(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels
        .get(SKIP_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
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
                    skip: skipped(&p.labels),
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
                    skip: skipped(&p.labels),
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
            let number = match net {
                Networking::Container => spec
                    .map(|s| s.container_port)
                    .filter(|&p| p > 0)
                    .or_else(|| task.ports.get(i).copied()),
                _ => task.ports.get(i).copied(),
            };
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
            mesh: None,
            provenance: Provenance {
                source: self.source.clone(),
                native_id: task.id.clone(),
                raw_labels: raw,
            },
        })
    }
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

    #[test]
    fn protocols_follow_port_names() {
        assert_eq!(protocol_of("grpc"), Protocol::Grpc);
        assert_eq!(protocol_of("grpc-api"), Protocol::Grpc);
        assert_eq!(protocol_of("tcp_db"), Protocol::Tcp);
        assert_eq!(protocol_of("web"), Protocol::Http);
    }
}
