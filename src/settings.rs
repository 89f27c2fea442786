//! `anymesh.yaml`: the mesh's own settings (listeners, registries, routing
//! files, logging). Istio routing lives in separate files it names.
//!
//! ```yaml
//! listeners:
//!   outbound: 127.0.0.1:15001
//!   admin: 127.0.0.1:15000
//! registries:                 # default: one file registry reading services.yaml
//!   - name: vms
//!     type: file
//!     path: services.yaml     # relative paths are relative to this file
//! routing: [routes.yaml]      # Istio VirtualService / DestinationRule files or directories
//! ```
//!
//! The resilience keys (`health_checks`, `max_concurrent_probes`,
//! `locality`, `retry_budget`, `mirror_shadow_suffix`) are read in
//! [`resilience`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use anymesh_adapter_consul::ConsulConfig;
use anymesh_adapter_etcd::EtcdConfig;
use anymesh_adapter_eureka::EurekaConfig;
use anymesh_adapter_kubernetes::{Connection as KubeConnection, KubernetesConfig};
use anymesh_adapter_marathon::MarathonConfig;
use anymesh_core::config::duration::parse_duration;
use anymesh_core::Mapping;
use serde::{Deserialize, Deserializer};

pub mod resilience;
pub mod security;
pub mod telemetry;

pub use resilience::{HealthCheckSettings, Jitter};
pub use security::{IdentitySource, InboundListener, MeshSettings, Workload, WorkloadPort};
pub use telemetry::TelemetrySettings;

/// Parsed and checked `anymesh.yaml`, with paths made absolute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub listeners: Listeners,
    #[serde(default = "default_registries")]
    pub registries: Vec<RegistrySettings>,
    /// Istio routing files or directories of them (`*.yaml`, `*.yml`).
    #[serde(default)]
    pub routing: Vec<PathBuf>,
    /// How often routing files are checked for changes.
    #[serde(default = "default_reload", deserialize_with = "duration")]
    pub routing_reload_interval: Duration,
    #[serde(default)]
    pub upstream: Upstream,
    /// Where the last good view of each registry is kept, so a restart while
    /// a registry is down still serves (fail-static). Off when unset.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Active health checks of the endpoints this proxy routes to (none by default).
    #[serde(default)]
    pub health_checks: Vec<HealthCheckSettings>,
    /// Health-check probes running at once, all checks together.
    #[serde(default = "resilience::default_max_concurrent_probes")]
    pub max_concurrent_probes: usize,
    /// Where this proxy runs, for locality-aware balancing (unset parts: unknown).
    #[serde(default, deserialize_with = "resilience::locality")]
    pub locality: anymesh_core::Locality,
    /// The retry budget of every cluster whose DestinationRule sets none
    /// (Linkerd's form; default 20 % over 10 s plus 10 a second; `off`).
    #[serde(
        default = "resilience::default_retry_budget",
        deserialize_with = "resilience::retry_budget"
    )]
    pub retry_budget: anymesh_core::routes::RetryBudget,
    /// Append `-shadow` to a mirrored request's Host, as Istio did before 1.28.
    #[serde(default)]
    pub mirror_shadow_suffix: bool,
    /// Mesh-wide names: trust domain, root namespace ([`security`]).
    #[serde(default)]
    pub mesh: MeshSettings,
    /// Where the proxy's certificate comes from; none: no mutual TLS.
    #[serde(default)]
    pub identity: Option<IdentitySource>,
    /// The local workloads the inbound listener serves.
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// The inbound listener (runs when `workloads` is not empty).
    #[serde(default)]
    pub inbound: InboundListener,
    /// The access log and distributed tracing ([`telemetry`]); off by default.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    #[serde(default = "default_outbound")]
    pub outbound: SocketAddr,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// Close outbound HTTP/1.1 connections whose request headers take longer
    /// than this. Off by default: the outbound listener serves local apps.
    #[serde(default, deserialize_with = "opt_duration")]
    pub header_read_timeout: Option<Duration>,
    /// Threads serving the outbound listener, each with its own single-threaded
    /// runtime, connections and upstream pool (`anymesh proxy --workers`).
    #[serde(skip, default = "one")]
    pub threads: usize,
}

fn one() -> usize {
    1
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            outbound: default_outbound(),
            admin: default_admin(),
            header_read_timeout: None,
            threads: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_idle_timeout", deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    #[serde(default = "default_max_idle")]
    pub pool_max_idle_per_host: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            pool_idle_timeout: default_idle_timeout(),
            pool_max_idle_per_host: default_max_idle(),
        }
    }
}

/// One registry source. (Unknown keys are rejected by the flattened kind:
/// serde cannot deny them on a struct with a flattened field.)
#[derive(Debug, Clone, Deserialize)]
pub struct RegistrySettings {
    /// Source name shown in provenance, explain output and metrics. Unique.
    pub name: String,
    /// The mass-deregistration guard of this registry (on by default).
    #[serde(default)]
    pub guard: Guard,
    /// How this registry's names and metadata become mesh hostnames and
    /// labels (docs/registry-mapping.md). Identity by default.
    #[serde(default)]
    pub mapping: Mapping,
    #[serde(flatten)]
    pub kind: RegistryKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RegistryKind {
    File {
        path: PathBuf,
        #[serde(default = "default_poll", deserialize_with = "duration")]
        poll_interval: Duration,
    },
    /// etcd v3, keys in the layout of etcd's naming/endpoints package
    /// (see docs/etcd-registry.md for every field).
    Etcd(Box<EtcdConfig>),
    /// Netflix Eureka servers, fetched in full then by delta
    /// (see docs/eureka-registry.md for every field).
    Eureka(Box<EurekaConfig>),
    /// Services and EndpointSlices of a Kubernetes cluster, watched
    /// (see docs/kubernetes-registry.md for every field).
    Kubernetes(Box<KubernetesConfig>),
    /// Marathon (Mesos) apps and tasks, read in full and followed on the
    /// event stream (see docs/marathon-registry.md for every field).
    Marathon(Box<MarathonConfig>),
    /// Consul's catalog through an agent's HTTP API, followed with blocking
    /// queries (see docs/consul-registry.md for every field).
    Consul(Box<ConsulConfig>),
}

impl RegistrySettings {
    /// The sources this registry makes: its name, or one per datacenter
    /// (`<name>/<dc>`) for a Consul registry reading several.
    pub fn sources(&self) -> Vec<anymesh_core::SourceId> {
        match &self.kind {
            RegistryKind::Consul(cfg) => cfg
                .sources(&self.name)
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            _ => vec![anymesh_core::SourceId::new(&self.name)],
        }
    }
}

/// Mass-deregistration guard settings of a registry.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Hold a change that removes more than this share (0..1) of a service's endpoints.
    #[serde(default = "default_share")]
    pub max_removal_share: f64,
    /// How long removed endpoints keep being served.
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            enabled: true,
            max_removal_share: default_share(),
            grace: default_grace(),
        }
    }
}

impl Guard {
    pub fn settings(&self) -> Option<anymesh_core::catalog::GuardSettings> {
        self.enabled
            .then_some(anymesh_core::catalog::GuardSettings {
                max_removal_share: self.max_removal_share,
                grace: self.grace,
            })
    }
}

fn default_true() -> bool {
    true
}
fn default_share() -> f64 {
    0.5
}
fn default_grace() -> Duration {
    Duration::from_secs(60)
}

fn default_outbound() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15001))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}
fn default_registries() -> Vec<RegistrySettings> {
    vec![RegistrySettings {
        name: "file".into(),
        guard: Guard::default(),
        mapping: Mapping::default(),
        kind: RegistryKind::File {
            path: PathBuf::from("services.yaml"),
            poll_interval: default_poll(),
        },
    }]
}
fn default_poll() -> Duration {
    Duration::from_secs(2)
}
fn default_reload() -> Duration {
    Duration::from_secs(2)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_max_idle() -> usize {
    256
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Settings {
    /// Reads and checks `anymesh.yaml`. Errors name the file, line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let mut s: Settings = serde_path_to_error::deserialize(
            serde_yaml_ng::Deserializer::from_str(text),
        )
        .map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml_ng's own errors already carry the path and position.
            if at == "." || inner.contains(" at line ") {
                anyhow::anyhow!("{}: {inner}", path.display())
            } else {
                anyhow::anyhow!("{}: {at}: {inner}", path.display())
            }
        })?;
        s.file = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(log) = &mut s.telemetry.access_log {
            log.validate()
                .map_err(|e| anyhow::anyhow!("{}: telemetry.access_log: {e}", path.display()))?;
            if let Some(p) = &mut log.path {
                *p = base.join(&*p);
            }
        }
        if let Some(t) = &s.telemetry.tracing {
            t.validate()
                .map_err(|e| anyhow::anyhow!("{}: telemetry.tracing: {e}", path.display()))?;
        }
        let mut names = HashSet::new();
        for r in &mut s.registries {
            if r.name.is_empty() {
                bail!(
                    "{}: registries: a registry has an empty name",
                    path.display()
                );
            }
            if !(0.0..=1.0).contains(&r.guard.max_removal_share) {
                bail!(
                    "{}: registries: {}: guard.max_removal_share must be between 0 and 1, got {}",
                    path.display(),
                    r.name,
                    r.guard.max_removal_share
                );
            }
            if let Err(errors) = r.mapping.validate() {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| format!("registries: {}: {e}", r.name))
                    .collect();
                bail!("{}: {}", path.display(), lines.join("; "));
            }
            if !names.insert(r.name.clone()) {
                bail!(
                    "{}: registries: name {:?} is used twice",
                    path.display(),
                    r.name
                );
            }
            match &mut r.kind {
                RegistryKind::File { path: p, .. } => *p = base.join(&*p),
                RegistryKind::Etcd(cfg) => {
                    cfg.validate().map_err(|e| {
                        anyhow::anyhow!("{}: registries: {}: {e}", path.display(), r.name)
                    })?;
                    for file in cfg
                        .tls
                        .iter_mut()
                        .flat_map(|t| [&mut t.ca_file, &mut t.cert_file, &mut t.key_file])
                        .chain(cfg.auth.iter_mut().map(|a| &mut a.password_file))
                        .flatten()
                    {
                        *file = base.join(&*file);
                    }
                }
                RegistryKind::Eureka(cfg) => {
                    cfg.validate().map_err(|e| {
                        anyhow::anyhow!("{}: registries: {}: {e}", path.display(), r.name)
                    })?;
                    if let Some(file) = cfg.auth.as_mut().and_then(|a| a.password_file.as_mut()) {
                        *file = base.join(&*file);
                    }
                }
                RegistryKind::Kubernetes(cfg) => {
                    cfg.validate().map_err(|e| {
                        anyhow::anyhow!("{}: registries: {}: {e}", path.display(), r.name)
                    })?;
                    if let KubeConnection::Kubeconfig { path: file, .. } = &mut cfg.connection {
                        *file = base.join(&*file);
                    }
                }
                RegistryKind::Marathon(cfg) => {
                    cfg.validate().map_err(|e| {
                        anyhow::anyhow!("{}: registries: {}: {e}", path.display(), r.name)
                    })?;
                    if let Some(file) = cfg.auth.as_mut().and_then(|a| a.token_file.as_mut()) {
                        *file = base.join(&*file);
                    }
                }
                RegistryKind::Consul(cfg) => {
                    cfg.validate().map_err(|e| {
                        anyhow::anyhow!("{}: registries: {}: {e}", path.display(), r.name)
                    })?;
                    for file in cfg
                        .tls
                        .iter_mut()
                        .flat_map(|t| [&mut t.ca_file, &mut t.cert_file, &mut t.key_file])
                        .chain([&mut cfg.token_file])
                        .flatten()
                    {
                        *file = base.join(&*file);
                    }
                }
            }
        }
        for p in &mut s.routing {
            *p = base.join(&*p);
        }
        if let Some(d) = &mut s.state_dir {
            *d = base.join(&*d);
        }
        for (i, check) in s.health_checks.iter().enumerate() {
            check
                .validate(&format!("health_checks[{i}]"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        if s.max_concurrent_probes == 0 {
            bail!(
                "{}: max_concurrent_probes: must be at least 1",
                path.display()
            );
        }
        resilience::validate_locality(&s.locality)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        resilience::validate_retry_budget(&s.retry_budget)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = base.to_path_buf();
        security::validate(&mut s, &base)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(s)
    }

    /// The active health checks in the proxy's form.
    pub fn active_health_checks(&self) -> Vec<anymesh_proxy::health::HealthCheck> {
        self.health_checks
            .iter()
            .map(HealthCheckSettings::to_check)
            .collect()
    }

    /// The routing files: listed files, plus `*.yaml`/`*.yml` in listed directories (sorted).
    pub fn routing_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for p in &self.routing {
            if p.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .with_context(|| format!("cannot list {}", p.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .collect();
                found.sort();
                out.extend(found);
            } else {
                out.push(p.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let s = Settings::parse(Path::new("/etc/anymesh/anymesh.yaml"), "").unwrap();
        assert_eq!(s.listeners.outbound, default_outbound());
        assert_eq!(s.registries.len(), 1);
        let RegistryKind::File { path, .. } = &s.registries[0].kind else {
            panic!("the default registry is a file registry");
        };
        assert_eq!(path, Path::new("/etc/anymesh/services.yaml"));
    }

    #[test]
    fn telemetry_settings_are_checked_and_paths_made_absolute() {
        let file = Path::new("/etc/anymesh/anymesh.yaml");
        let s = Settings::parse(
            file,
            "telemetry:\n  access_log: {path: logs/access.log, format: json}\n  tracing: {sampling: 5, zipkin: http://zipkin:9411}\n",
        )
        .unwrap();
        let log = s.telemetry.access_log.as_ref().unwrap();
        assert_eq!(
            log.path.as_deref(),
            Some(Path::new("/etc/anymesh/logs/access.log"))
        );
        assert_eq!(s.telemetry.tracing.as_ref().unwrap().sampling, 5.0);
        for (yaml, says) in [
            (
                "telemetry:\n  tracing: {sampling: 1}\n",
                "telemetry.tracing: invalid tracing configuration: names no collector",
            ),
            (
                "telemetry:\n  tracing: {sampling: 150, zipkin: http://z}\n",
                "sampling must be a percentage",
            ),
            (
                "telemetry:\n  access_log: {keep: 5000}\n",
                "telemetry.access_log: invalid access log configuration: keep",
            ),
        ] {
            let e = Settings::parse(file, yaml).unwrap_err().to_string();
            assert!(
                e.starts_with("/etc/anymesh/anymesh.yaml: ") && e.contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn etcd_registry_settings() {
        let s = Settings::parse(
            Path::new("/etc/anymesh/anymesh.yaml"),
            "registries:\n  - name: etcd-main\n    type: etcd\n    endpoints: [http://127.0.0.1:2379]\n    prefix: services/\n    auth: {user: mesh, password_file: secret}\n",
        )
        .unwrap();
        let RegistryKind::Etcd(cfg) = &s.registries[0].kind else {
            panic!("etcd registry expected");
        };
        assert_eq!(cfg.endpoints, ["http://127.0.0.1:2379"]);
        let auth = cfg.auth.as_ref().unwrap();
        assert_eq!(
            auth.password_file.as_deref(),
            Some(Path::new("/etc/anymesh/secret"))
        );
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: e, type: etcd, endpoints: [], prefx: x}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("prefx"), "{e}");
    }

    #[test]
    fn kubernetes_registry_settings() {
        let s = Settings::parse(
            Path::new("/etc/anymesh/anymesh.yaml"),
            "registries:\n  - name: k8s\n    type: kubernetes\n    connection: {mode: kubeconfig, path: kube/config, context: prod}\n    namespaces: [shop]\n    hostname: name\n",
        )
        .unwrap();
        let RegistryKind::Kubernetes(cfg) = &s.registries[0].kind else {
            panic!("kubernetes registry expected");
        };
        assert_eq!(
            cfg.connection,
            KubeConnection::Kubeconfig {
                path: "/etc/anymesh/kube/config".into(),
                context: Some("prod".into())
            }
        );
        assert_eq!(cfg.namespaces, vec!["shop"]);
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: k, type: kubernetes, namespaces: [Shop]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("registries: k:") && e.contains("namespaces[0]"),
            "{e}"
        );
    }

    #[test]
    fn eureka_registry_settings() {
        let s = Settings::parse(
            Path::new("/etc/anymesh/anymesh.yaml"),
            "registries:\n  - name: eureka\n    type: eureka\n    servers: [http://127.0.0.1:8761/eureka, http://127.0.0.2:8761/eureka]\n    refresh_interval: 10s\n    auth: {user: mesh, password_file: secret}\n",
        )
        .unwrap();
        let RegistryKind::Eureka(cfg) = &s.registries[0].kind else {
            panic!("eureka registry expected");
        };
        assert_eq!(cfg.servers.len(), 2);
        assert_eq!(cfg.refresh_interval.0, Duration::from_secs(10));
        let auth = cfg.auth.as_ref().unwrap();
        assert_eq!(
            auth.password_file.as_deref(),
            Some(Path::new("/etc/anymesh/secret"))
        );
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: e, type: eureka, servers: []}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("registries: e:") && e.contains("`servers`"),
            "{e}"
        );
    }

    #[test]
    fn marathon_registry_settings() {
        let s = Settings::parse(
            Path::new("/etc/anymesh/anymesh.yaml"),
            "registries:\n  - name: mesos\n    type: marathon\n    urls: [http://127.0.0.1:8080, http://127.0.0.2:8080]\n    hostname: joined\n    auth: {token_file: dcos-token}\n",
        )
        .unwrap();
        let RegistryKind::Marathon(cfg) = &s.registries[0].kind else {
            panic!("marathon registry expected");
        };
        assert_eq!(cfg.urls.len(), 2);
        assert_eq!(
            cfg.hostname,
            anymesh_adapter_marathon::HostnameStyle::Joined
        );
        let auth = cfg.auth.as_ref().unwrap();
        assert_eq!(
            auth.token_file.as_deref(),
            Some(Path::new("/etc/anymesh/dcos-token"))
        );
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: m, type: marathon, urls: [marathon:8080]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("registries: m:") && e.contains("not an http(s) URL"),
            "{e}"
        );
    }

    #[test]
    fn consul_registry_settings() {
        let s = Settings::parse(
            Path::new("/etc/anymesh/anymesh.yaml"),
            "registries:\n  - name: consul\n    type: consul\n    address: https://127.0.0.1:8501\n    datacenters: [dc1, dc2]\n    token_file: consul.token\n    tls: {ca_file: ca.pem}\n    services: [payments]\n",
        )
        .unwrap();
        let RegistryKind::Consul(cfg) = &s.registries[0].kind else {
            panic!("consul registry expected");
        };
        assert_eq!(
            cfg.token_file.as_deref(),
            Some(Path::new("/etc/anymesh/consul.token"))
        );
        let ca = cfg.tls.as_ref().and_then(|t| t.ca_file.as_deref());
        assert_eq!(ca, Some(Path::new("/etc/anymesh/ca.pem")));
        let names: Vec<String> = s.registries[0]
            .sources()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, ["consul/dc1", "consul/dc2"]);
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: c, type: consul, address: 'ftp://x'}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("registries: c:") && e.contains("http"), "{e}");
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: c, type: consul, tokn: x}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tokn"), "{e}");
    }

    #[test]
    fn registry_mapping_is_read_and_checked() {
        let s = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - name: f\n    type: file\n    path: s.yaml\n    mapping:\n      labels: {rename: {ver: version}}\n",
        )
        .unwrap();
        assert!(!s.registries[0].mapping.is_identity());
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - name: f\n    type: file\n    path: s.yaml\n    mapping:\n      labels: {tags: [{match: '(', key: version}]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("registries: f:") && e.contains("tags[0]"), "{e}");
    }

    #[test]
    fn errors_say_where() {
        let e = Settings::parse(Path::new("m.yaml"), "listeners:\n  outbund: 1.2.3.4:1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.yaml: listeners: unknown field `outbund`"),
            "{e}"
        );
        assert!(e.contains("line 2 column 3"), "{e}");
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: a, type: zookeeper}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown variant `zookeeper`"), "{e}");
        let e = Settings::parse(
            Path::new("m.yaml"),
            "registries:\n  - {name: a, type: file, path: x}\n  - {name: a, type: file, path: y}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"a\" is used twice"), "{e}");
        let e = Settings::parse(Path::new("m.yaml"), "routing_reload_interval: 5 parsecs\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("routing_reload_interval"), "{e}");
    }
}
