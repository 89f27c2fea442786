//! [`KubernetesConfig`]: which cluster to read, which namespaces, and how
//! Services become mesh hostnames.
//!
//! Deserializable so the binary can read it from `anymesh.yaml`; durations
//! use Go syntax (`30s`, `250ms`) like the rest of the configuration.

use std::path::PathBuf;

use anymesh_core::{Hostname, Protocol};
use anymesh_support::{check_http_url, UrlProblem};
use serde::Deserialize;

use crate::error::KubernetesError;

/// How to reach the Kubernetes API and what to read from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct KubernetesConfig {
    /// Where the API server and its credentials come from.
    #[serde(default)]
    pub connection: Connection,
    /// Namespaces to watch; empty (the default) watches every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The cluster's DNS domain, for the `svc.ns.svc.<domain>` hostname.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// Which of a Service's names is its mesh hostname; the other three
    /// are its aliases.
    #[serde(default)]
    pub hostname: HostnameForm,
    /// The protocol of a port that neither `appProtocol` nor its name's
    /// prefix (`http-`, `http2-`, `grpc-`, `tcp-`) names.
    #[serde(default)]
    pub default_protocol: Protocol,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Also watch Istio VirtualServices and DestinationRules
    /// (`networking.istio.io`) in the watched namespaces and apply them as
    /// routing config beside the routing files.
    #[serde(default)]
    pub routing_from_cluster: bool,
    /// Also watch Nodes (their labels) for endpoints' region and zone.
    /// Off, endpoints carry only their EndpointSlice `zone`.
    #[serde(default = "default_nodes")]
    pub nodes: bool,
    /// The `networking.istio.io` version those resources are read at:
    /// `v1` (the default), `v1beta1` or `v1alpha3`.
    #[serde(default = "default_istio_version")]
    pub istio_version: String,
}

/// The `networking.istio.io` versions anymesh reads.
pub const ISTIO_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// Where the API server's address and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "mode")]
pub enum Connection {
    /// In a pod, the service account (`KUBERNETES_SERVICE_HOST`, the token
    /// and CA under `/var/run/secrets/kubernetes.io/serviceaccount`);
    /// elsewhere `$KUBECONFIG` or `~/.kube/config` (kube's `Config::infer`).
    #[default]
    Infer,
    /// Only the service account; an error outside a pod.
    InCluster,
    /// A kubeconfig file, with its current context or the one named.
    Kubeconfig {
        path: PathBuf,
        #[serde(default)]
        context: Option<String>,
    },
    /// An API server URL without credentials (a `kubectl proxy` on
    /// loopback, or a test server).
    Url { url: String },
}

/// The form of a Service's mesh hostname (`reviews` in namespace `prod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostnameForm {
    /// `reviews`: merges with other registries' `reviews`; Services of the
    /// same name in several watched namespaces become one mesh service.
    Name,
    /// `reviews.prod`.
    Namespaced,
    /// `reviews.prod.svc`.
    Svc,
    /// `reviews.prod.svc.cluster.local` (the default: never ambiguous).
    #[default]
    Fqdn,
}

/// The `backoff:` block; the first delay defaults to 500 ms.
pub type BackoffConfig = anymesh_core::backoff::BackoffConfig<500>;

fn default_istio_version() -> String {
    "v1".into()
}
fn default_nodes() -> bool {
    true
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}

/// The connection in a few words, for `anymesh check` and logs (no secrets:
/// URLs with credentials are refused by [`KubernetesConfig::validate`]).
pub fn describe(connection: &Connection) -> String {
    match connection {
        Connection::Infer => "in-cluster or kubeconfig, inferred".into(),
        Connection::InCluster => "in-cluster service account".into(),
        Connection::Kubeconfig { path, context } => match context {
            Some(c) => format!("kubeconfig {} context {c}", path.display()),
            None => format!("kubeconfig {}", path.display()),
        },
        Connection::Url { url } => url.clone(),
    }
}

impl KubernetesConfig {
    /// A configuration with defaults for everything but the connection.
    pub fn new(connection: Connection) -> Self {
        Self {
            connection,
            namespaces: Vec::new(),
            cluster_domain: default_cluster_domain(),
            hostname: HostnameForm::default(),
            default_protocol: Protocol::default(),
            backoff: BackoffConfig::default(),
            routing_from_cluster: false,
            nodes: default_nodes(),
            istio_version: default_istio_version(),
        }
    }

    /// Checks what can be checked without touching the network or files.
    pub fn validate(&self) -> Result<(), KubernetesError> {
        let bad = |message: String| Err(KubernetesError::Config { message });
        if let Connection::Url { url } = &self.connection {
            match check_http_url(url) {
                Ok(()) => {}
                Err(UrlProblem::Credentials) => {
                    return bad(
                        "`connection.url` carries credentials; use `mode: kubeconfig` instead"
                            .into(),
                    )
                }
                Err(problem) => return bad(format!("`connection.url` {url:?} {problem}")),
            }
            if url.parse::<http::Uri>().is_err() {
                return bad(format!("`connection.url` {url:?} is not a valid URL"));
            }
        }
        if let Connection::Kubeconfig { path, .. } = &self.connection {
            if path.as_os_str().is_empty() {
                return bad("`connection.path` must name a kubeconfig file".into());
            }
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            let label_ok = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !label_ok {
                return bad(format!(
                    "`namespaces[{i}]` {ns:?} is not a Kubernetes namespace name (a DNS label)"
                ));
            }
        }
        if Hostname::new(&format!("x.{}", self.cluster_domain)).is_err()
            || self.cluster_domain.is_empty()
        {
            return bad(format!(
                "`cluster_domain` {:?} is not a DNS name",
                self.cluster_domain
            ));
        }
        if !ISTIO_VERSIONS.contains(&self.istio_version.as_str()) {
            return bad(format!(
                "`istio_version` {:?} is not one of {}",
                self.istio_version,
                ISTIO_VERSIONS.join(", ")
            ));
        }
        if let Err(why) = self.backoff.check() {
            return bad(why.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_yaml_with_defaults() {
        let c: KubernetesConfig = serde_yaml_ng::from_str(
            "connection: {mode: kubeconfig, path: /etc/kube/config, context: prod}\n\
             namespaces: [default, shop]\ncluster_domain: corp.local\nhostname: name\n\
             default_protocol: tcp\nbackoff: {initial: 1s, max: 1m}\n",
        )
        .unwrap();
        assert_eq!(
            c.connection,
            Connection::Kubeconfig {
                path: "/etc/kube/config".into(),
                context: Some("prod".into())
            }
        );
        assert_eq!(c.namespaces, vec!["default", "shop"]);
        assert_eq!(c.hostname, HostnameForm::Name);
        assert_eq!(c.default_protocol, Protocol::Tcp);
        assert_eq!(c.backoff.max.0, Duration::from_secs(60));
        c.validate().unwrap();
        let d: KubernetesConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(d.connection, Connection::Infer);
        assert_eq!(d.cluster_domain, "cluster.local");
        assert_eq!(d.hostname, HostnameForm::Fqdn);
        assert!(d.namespaces.is_empty());
        assert!(!d.routing_from_cluster);
        assert!(d.nodes, "nodes are read by default");
        assert!(
            !serde_yaml_ng::from_str::<KubernetesConfig>("nodes: false\n")
                .unwrap()
                .nodes
        );
        assert_eq!(d.istio_version, "v1");
        d.validate().unwrap();
        let u: KubernetesConfig =
            serde_yaml_ng::from_str("connection: {mode: url, url: \"http://127.0.0.1:8001\"}\n")
                .unwrap();
        u.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let e = serde_yaml_ng::from_str::<KubernetesConfig>("namespace: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `namespace`"), "{e}");
        let e = serde_yaml_ng::from_str::<KubernetesConfig>("connection: {mode: cluster}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster"), "{e}");
        let msg = |c: &KubernetesConfig| c.validate().unwrap_err().to_string();
        let mut c = KubernetesConfig::new(Connection::Url {
            url: "127.0.0.1:8001".into(),
        });
        assert!(msg(&c).contains("not an http(s) URL"));
        c.connection = Connection::Url {
            url: "https://admin:pw@k8s:6443".into(),
        };
        assert!(msg(&c).contains("credentials") && !msg(&c).contains("pw"));
        c.connection = Connection::Infer;
        c.namespaces = vec!["Prod".into()];
        assert!(msg(&c).contains("`namespaces[0]` \"Prod\""), "{}", msg(&c));
        c.namespaces.clear();
        c.cluster_domain = "bad domain".into();
        assert!(msg(&c).contains("cluster_domain"));
        c.cluster_domain = "cluster.local".into();
        c.istio_version = "v2".into();
        assert!(msg(&c).contains("`istio_version` \"v2\""), "{}", msg(&c));
    }
}
