//! The security keys of `anymesh.yaml`: the mesh's trust domain, where the
//! proxy's certificate comes from, the local workloads the inbound listener
//! serves, and the inbound listener's bounds.
//!
//! ```yaml
//! mesh:
//!   trust_domain: cluster.local     # default
//!   root_namespace: istio-system    # where mesh-wide security policies live
//!   jwks_ca_file: jwks-ca.pem       # CAs trusted for jwksUri besides the public roots
//! identity:                         # one of files / ca / workload_api
//!   ca:
//!     url: https://ca.internal:15012
//!     bundle: ca-bundle.pem         # trusted for the first join
//!     token_file: join-token        # one-time token (`anymesh ca token`)
//!     state_dir: /var/lib/anymesh/identity
//! workloads:
//!   - name: reviews-v1
//!     namespace: bookinfo
//!     service_account: reviews
//!     labels: {app: reviews, version: v1}
//!     ports:
//!       - {port: 9080, protocol: http}           # app on 127.0.0.1:9080
//!       - {port: 9090, app_port: 19090, protocol: grpc}
//! inbound:
//!   listen: 0.0.0.0:15006
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anymesh_core::model::Protocol;
use anymesh_identity::SpiffeId;
use serde::Deserialize;

use super::{duration, opt_duration};

/// `mesh`: mesh-wide names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSettings {
    /// The trust domain of SPIFFE IDs (`spiffe://<trust_domain>/ns/…/sa/…`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Former trust domains still accepted (Istio's `trustDomainAliases`):
    /// peers of these are authenticated, and an AuthorizationPolicy
    /// principal written with any of them matches a peer of any of them.
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// The namespace whose security policies without a selector apply
    /// mesh-wide (Istio's root namespace).
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// PEM CA certificates trusted for RequestAuthentication `jwksUri`
    /// fetches besides the public (webpki) roots: an operator's internal
    /// identity provider.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            trust_domain_aliases: Vec::new(),
            root_namespace: default_root_namespace(),
            jwks_ca_file: None,
        }
    }
}

fn default_trust_domain() -> String {
    anymesh_identity::DEFAULT_TRUST_DOMAIN.to_string()
}

fn default_root_namespace() -> String {
    anymesh_core::security::DEFAULT_ROOT_NAMESPACE.to_string()
}

/// `identity`: where the proxy's certificate comes from (exactly one of
/// `files`, `ca`, `workload_api`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "IdentityKeys")]
pub enum IdentitySource {
    /// Files an operator's PKI writes (Vault agent, cert-manager), reloaded
    /// when they change.
    Files {
        cert: PathBuf,
        key: PathBuf,
        bundle: PathBuf,
        reload_interval: Duration,
    },
    /// anymesh's own CA (`anymesh ca serve`).
    Ca {
        url: String,
        /// The CA's bundle, trusted for the first join.
        bundle: PathBuf,
        /// The one-time join token (prefer `token_file`).
        token: Option<String>,
        token_file: Option<PathBuf>,
        /// Where the key and certificate are kept (mode 0600) so a restart
        /// serves while the CA is unreachable. Default: `<state_dir>/identity`.
        state_dir: Option<PathBuf>,
    },
    /// A SPIRE agent's SPIFFE Workload API.
    WorkloadApi {
        /// `unix:///path`; default `SPIFFE_ENDPOINT_SOCKET`.
        socket: Option<String>,
        /// How long the proxy waits for its first SVID at start.
        first_wait: Duration,
    },
}

/// `identity` as written: one key per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityKeys {
    #[serde(default)]
    files: Option<FilesKeys>,
    #[serde(default)]
    ca: Option<CaKeys>,
    #[serde(default)]
    workload_api: Option<WorkloadApiKeys>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesKeys {
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
    #[serde(default = "default_reload", deserialize_with = "duration")]
    reload_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaKeys {
    url: String,
    bundle: PathBuf,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadApiKeys {
    #[serde(default)]
    socket: Option<String>,
    #[serde(default = "default_first_wait", deserialize_with = "duration")]
    first_wait: Duration,
}

impl TryFrom<IdentityKeys> for IdentitySource {
    type Error = String;

    fn try_from(k: IdentityKeys) -> Result<Self, String> {
        match (k.files, k.ca, k.workload_api) {
            (Some(f), None, None) => Ok(IdentitySource::Files {
                cert: f.cert,
                key: f.key,
                bundle: f.bundle,
                reload_interval: f.reload_interval,
            }),
            (None, Some(c), None) => Ok(IdentitySource::Ca {
                url: c.url,
                bundle: c.bundle,
                token: c.token,
                token_file: c.token_file,
                state_dir: c.state_dir,
            }),
            (None, None, Some(w)) => Ok(IdentitySource::WorkloadApi {
                socket: w.socket,
                first_wait: w.first_wait,
            }),
            _ => Err("give exactly one of files, ca, workload_api".into()),
        }
    }
}

fn default_reload() -> Duration {
    Duration::from_secs(5)
}

fn default_first_wait() -> Duration {
    Duration::from_secs(30)
}

/// `workloads[]`: a workload this proxy fronts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default = "default_name")]
    pub namespace: String,
    #[serde(default = "default_name")]
    pub service_account: String,
    /// Labels security policies select it by (`app`, `version`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<WorkloadPort>,
    /// The mesh hostname of the service this workload serves, as callers
    /// route to it (`reviews.service.consul`): the inbound side's
    /// `destination_service` in Istio's metrics, so both reporters of a hop
    /// name the same service. Default `<canonical service>.<namespace>.svc.cluster.local`.
    #[serde(default)]
    pub service: Option<String>,
}

fn default_name() -> String {
    "default".to_string()
}

/// `workloads[].ports[]`: a port the workload serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadPort {
    /// The port as registries advertise it (what mesh peers ask for).
    pub port: u16,
    /// Where the application listens on loopback; default `port`.
    #[serde(default)]
    pub app_port: Option<u16>,
    /// Default 127.0.0.1.
    #[serde(default)]
    pub app_address: Option<IpAddr>,
    #[serde(default, deserialize_with = "protocol")]
    pub protocol: Protocol,
}

impl WorkloadPort {
    /// Where the inbound listener forwards this port's requests.
    pub fn app(&self) -> SocketAddr {
        SocketAddr::new(
            self.app_address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            self.app_port.unwrap_or(self.port),
        )
    }
}

fn protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let s = String::deserialize(d)?;
    Protocol::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown protocol {s:?} (expected http, http2, grpc or tcp)"
        ))
    })
}

/// `inbound`: the listener other mesh proxies connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundListener {
    #[serde(default = "default_inbound")]
    pub listen: SocketAddr,
    /// From accept to a finished TLS handshake.
    #[serde(default = "ten_seconds", deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// For a whole HTTP/1.1 request head.
    #[serde(default = "ten_seconds_opt", deserialize_with = "opt_duration")]
    pub header_read_timeout: Option<Duration>,
    /// An HTTP/1.1 connection idle between requests, or a connection passed
    /// through to the application idle in both directions, this long is closed.
    #[serde(default = "one_hour_opt", deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Connections open at once; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for InboundListener {
    fn default() -> Self {
        Self {
            listen: default_inbound(),
            handshake_timeout: ten_seconds(),
            header_read_timeout: ten_seconds_opt(),
            idle_timeout: one_hour_opt(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_inbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], anymesh_core::model::DEFAULT_MESH_PORT))
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn ten_seconds_opt() -> Option<Duration> {
    Some(ten_seconds())
}
fn one_hour_opt() -> Option<Duration> {
    Some(Duration::from_secs(3600))
}
fn default_max_connections() -> usize {
    10_000
}

/// Checks the security keys; `base` resolves relative paths.
pub(super) fn validate(s: &mut super::Settings, base: &Path) -> Result<(), String> {
    if let Err(e) = SpiffeId::parse(&format!("spiffe://{}", s.mesh.trust_domain)) {
        return Err(format!("mesh.trust_domain: {}", e.reason));
    }
    for (i, alias) in s.mesh.trust_domain_aliases.iter().enumerate() {
        if let Err(e) = SpiffeId::parse(&format!("spiffe://{alias}")) {
            return Err(format!("mesh.trust_domain_aliases[{i}]: {}", e.reason));
        }
    }
    if let Some(f) = &mut s.mesh.jwks_ca_file {
        *f = base.join(&*f);
    }
    match &mut s.identity {
        None => {}
        Some(IdentitySource::Files {
            cert, key, bundle, ..
        }) => {
            for p in [cert, key, bundle] {
                *p = base.join(&*p);
            }
        }
        Some(IdentitySource::Ca {
            url,
            bundle,
            token,
            token_file,
            state_dir,
        }) => {
            if !url.starts_with("https://") {
                return Err(format!(
                    "identity.ca.url: must be https://host:port, got {url:?}"
                ));
            }
            if token.is_some() && token_file.is_some() {
                return Err("identity.ca: give token or token_file, not both".into());
            }
            *bundle = base.join(&*bundle);
            if let Some(f) = token_file {
                *f = base.join(&*f);
            }
            match state_dir {
                Some(d) => *d = base.join(&*d),
                None => match &s.state_dir {
                    Some(d) => *state_dir = Some(d.join("identity")),
                    None => {
                        return Err("identity.ca.state_dir: required when state_dir is not set (the certificate must survive restarts)".into())
                    }
                },
            }
        }
        Some(IdentitySource::WorkloadApi { .. }) => {}
    }
    let mut ports = std::collections::HashSet::new();
    for (i, w) in s.workloads.iter().enumerate() {
        let at = format!("workloads[{i}]");
        if w.name.is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        for (key, value) in [
            ("namespace", &w.namespace),
            ("service_account", &w.service_account),
        ] {
            if value.is_empty() || value.contains('/') {
                return Err(format!(
                    "{at}.{key}: {value:?} must be one non-empty SPIFFE path segment (no '/')"
                ));
            }
        }
        SpiffeId::for_account(&s.mesh.trust_domain, &w.namespace, &w.service_account).map_err(
            |e| {
                format!(
                    "{at}: namespace and service_account make no SPIFFE ID: {}",
                    e.reason
                )
            },
        )?;
        if w.ports.is_empty() {
            return Err(format!("{at}.ports: at least one port"));
        }
        for (j, p) in w.ports.iter().enumerate() {
            if p.port == 0 || p.app_port == Some(0) {
                return Err(format!("{at}.ports[{j}]: port 0"));
            }
            if !p.protocol.is_http() {
                return Err(format!(
                    "{at}.ports[{j}].protocol: tcp is not served by the inbound listener yet"
                ));
            }
            if !ports.insert(p.port) {
                return Err(format!(
                    "{at}.ports[{j}].port: {} is served by another workload port already",
                    p.port
                ));
            }
        }
    }
    if let Some(first) = s.workloads.first() {
        for (i, w) in s.workloads.iter().enumerate().skip(1) {
            if (w.namespace.as_str(), w.service_account.as_str())
                != (first.namespace.as_str(), first.service_account.as_str())
            {
                return Err(format!(
                    "workloads[{i}]: a proxy has one identity: every workload must share namespace {:?} and service account {:?} of workloads[0]",
                    first.namespace, first.service_account
                ));
            }
        }
    }
    Ok(())
}

impl super::Settings {
    /// The SPIFFE ID this proxy serves as: its workloads' (they share one).
    pub fn own_identity(&self) -> Option<SpiffeId> {
        let w = self.workloads.first()?;
        SpiffeId::for_account(&self.mesh.trust_domain, &w.namespace, &w.service_account).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::settings::Settings;

    fn error(yaml: &str) -> String {
        match Settings::parse(Path::new("/etc/anymesh/anymesh.yaml"), yaml) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(e) => format!("{e:#}"),
        }
    }

    const WORKLOAD: &str = "workloads: [{name: w, ports: [{port: 8080}]}]\n";

    #[test]
    fn security_settings_are_refused_with_the_key_and_the_reason() {
        for (yaml, says) in [
            ("mesh: {trust_domain: Bad_Domain}\n", "mesh.trust_domain: trust domain may hold"),
            ("mesh: {trust_domain_aliases: [ok.example, 'x y']}\n", "mesh.trust_domain_aliases[1]:"),
            ("identity: {files: {cert: c, key: k, bundle: b}, ca: {url: 'https://ca', bundle: b}}\n", "give exactly one of files, ca, workload_api"),
            ("identity: {}\n", "give exactly one of files, ca, workload_api"),
            ("identity: {ca: {url: 'http://ca:15012', bundle: b, state_dir: s}}\n", "identity.ca.url: must be https://host:port"),
            ("identity: {ca: {url: 'https://ca', bundle: b, token: t, token_file: f, state_dir: s}}\n", "give token or token_file, not both"),
            ("identity: {ca: {url: 'https://ca', bundle: b}}\n", "identity.ca.state_dir: required"),
            ("workloads: [{name: '', ports: [{port: 1}]}]\n", "workloads[0].name: must not be empty"),
            ("workloads: [{name: w, ports: []}]\n", "workloads[0].ports: at least one port"),
            ("workloads: [{name: w, ports: [{port: 0}]}]\n", "workloads[0].ports[0]: port 0"),
            ("workloads: [{name: w, ports: [{port: 1, protocol: tcp}]}]\n", "tcp is not served by the inbound listener yet"),
            ("workloads: [{name: w, ports: [{port: 1, protocol: smtp}]}]\n", "unknown protocol \"smtp\""),
            ("workloads: [{name: w, ports: [{port: 1}]}, {name: v, ports: [{port: 1}]}]\n", "workloads[1].ports[0].port: 1 is served by another workload port"),
            ("workloads: [{name: w, ports: [{port: 1}]}, {name: v, service_account: other, ports: [{port: 2}]}]\n", "a proxy has one identity"),
            ("workloads: [{name: w, namespace: 'a/b', ports: [{port: 1}]}]\n", "workloads[0].namespace: \"a/b\" must be one non-empty SPIFFE path segment"),
            ("workloads: [{name: w, service_account: 'x y', ports: [{port: 1}]}]\n", "workloads[0]: namespace and service_account make no SPIFFE ID"),
        ] {
            let e = error(yaml);
            assert!(e.contains(says), "{yaml}: {e}");
            assert!(e.starts_with("/etc/anymesh/anymesh.yaml"), "names the file: {e}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file_and_the_ca_state_defaults_under_state_dir() {
        let yaml = format!(
            "state_dir: state\nidentity: {{ca: {{url: 'https://ca:15012', bundle: ca.pem, token_file: token}}}}\n{WORKLOAD}"
        );
        let s = Settings::parse(Path::new("/etc/anymesh/anymesh.yaml"), &yaml).expect("valid");
        let Some(super::IdentitySource::Ca {
            bundle,
            token_file,
            state_dir,
            ..
        }) = &s.identity
        else {
            panic!("a CA source: {:?}", s.identity);
        };
        assert_eq!(bundle, Path::new("/etc/anymesh/ca.pem"));
        assert_eq!(token_file.as_deref(), Some(Path::new("/etc/anymesh/token")));
        assert_eq!(
            state_dir.as_deref(),
            Some(Path::new("/etc/anymesh/state/identity"))
        );
        assert_eq!(
            s.own_identity().map(|i| i.to_string()).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/default")
        );
        assert_eq!(s.workloads[0].ports[0].app().to_string(), "127.0.0.1:8080");
    }
}
