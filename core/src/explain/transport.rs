//! How the proxy connects to an endpoint in one cluster: plaintext, mesh
//! mutual TLS to the endpoint's mesh proxy, or TLS origination, the address
//! it connects to, the identity the peer must present, and why.
//!
//! The rule, as the compiler and the upstream pool apply it (DestinationRule
//! `trafficPolicy.tls` merged for the cluster, [`ClusterPolicy::tls`]):
//!
//! | `tls` | endpoint with a mesh proxy | endpoint without |
//! |---|---|---|
//! | unset (auto mTLS) | mesh mTLS to `address:mesh port` | plaintext to `address:port` |
//! | `DISABLE` | plaintext to `address:port` | plaintext to `address:port` |
//! | `ISTIO_MUTUAL` | mesh mTLS to `address:mesh port` | mesh mTLS to `address:port` |
//! | `SIMPLE` / `MUTUAL` | TLS origination to `address:port` | the same |
//!
//! The identity a mesh proxy must present is the one its registry names
//! ([`MeshProxy::identity`] in the mesh's trust domain), or one of the
//! DestinationRule's `subjectAltNames` with `ISTIO_MUTUAL`. `ISTIO_MUTUAL`
//! toward an endpoint no registry marks as proxied assumes the endpoint
//! speaks mesh mTLS itself (Envoy sends mTLS to the endpoint's address), as
//! the `default` service account of the service's namespace.
//!
//! [`ClusterPolicy::tls`]: crate::routes::ClusterPolicy::tls

use serde::Serialize;

use super::local::{Certificate, LocalProxy};
use crate::model::{Endpoint, Hostname, Labels, MeshProxy};
use crate::routes::{ClusterTls, TlsOrigination};

/// How connections to one endpoint of one cluster are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transport {
    /// Mutual TLS: the proxy presents a client certificate (mesh mTLS, or
    /// `MUTUAL` origination).
    pub mtls: bool,
    pub tls: TlsKind,
    /// `address:port` the proxy connects to (the mesh proxy's inbound port
    /// for mesh mTLS).
    pub connect: String,
    /// The identities the peer may present: SPIFFE IDs for mesh mTLS (the
    /// registry's, or the DestinationRule's `subjectAltNames`), the
    /// `subjectAltNames` for origination; empty: none checked by name (or,
    /// for origination, the SNI's hostname).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// The server name sent, when one is known here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Why: which setting or registry decided it.
    pub reason: String,
    /// Why connections will fail, when they will.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What is spoken on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsKind {
    Plaintext,
    /// Mutual TLS with the proxy's mesh identity to a mesh proxy.
    MeshMtls,
    /// TLS origination, the server verified, no client certificate (`SIMPLE`).
    OriginationSimple,
    /// TLS origination with a client certificate (`MUTUAL`).
    OriginationMutual,
}

/// A registry's statement that a mesh proxy fronts an endpoint, as
/// `anymesh explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshStatement {
    /// The proxy's inbound port on the endpoint's address.
    pub port: u16,
    /// The identity it must present, in the mesh's trust domain.
    pub identity: String,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    /// A whole SPIFFE ID the registry gave.
    pub spiffe_id: Option<String>,
    /// The registry's own keys that mark the proxy, as it gave them (Consul
    /// meta, Eureka metadata, Marathon and Kubernetes labels...); empty when
    /// it says so in a field of its own (file `mesh:`, a Connect sidecar, a
    /// Kubernetes annotation).
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub keys: Labels,
}

impl MeshStatement {
    pub fn of(endpoint: &Endpoint, trust_domain: &str) -> Option<Self> {
        let m = endpoint.mesh.as_ref()?;
        Some(Self {
            port: m.port,
            identity: m.identity(trust_domain),
            namespace: m.namespace.clone(),
            service_account: m.service_account.clone(),
            spiffe_id: m.spiffe_id.clone(),
            keys: mesh_keys(&endpoint.provenance.raw_labels),
        })
    }

    /// `port 15006, namespace shop, service account reviews[, labels k=v]`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("mesh port {}", self.port)];
        if let Some(id) = &self.spiffe_id {
            parts.push(format!("spiffe id {id}"));
        } else {
            if let Some(ns) = &self.namespace {
                parts.push(format!("namespace {ns}"));
            }
            if let Some(sa) = &self.service_account {
                parts.push(format!("service account {sa}"));
            }
        }
        if !self.keys.is_empty() {
            let keys: Vec<String> = self.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("registry keys {}", keys.join(",")));
        }
        parts.join(", ")
    }
}

/// The raw labels that are mesh proxy markers of some registry
/// (docs/registry-mapping.md, "Mesh proxy metadata").
fn mesh_keys(raw: &Labels) -> Labels {
    raw.iter()
        .filter(|(k, _)| {
            k.starts_with("anymesh.") || k.starts_with("anymesh-") || *k == ISTIO_TLS_MODE
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The namespace of a Kubernetes service name (`reviews.shop.svc.cluster.local`
/// → `shop`); `default` for other names (as the compiler assumes).
fn namespace_of(service: &Hostname) -> &str {
    let mut labels = service.as_str().split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(_), Some(ns), Some("svc")) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// Istio's label marking a pod with a sidecar.
const ISTIO_TLS_MODE: &str = "security.istio.io/tlsMode";

/// What explain knows of the proxy itself when it decides transports.
#[derive(Debug, Clone, Copy)]
pub(super) struct Local<'a> {
    pub(super) trust_domain: &'a str,
    /// Why the proxy cannot speak mesh mTLS now, if it cannot.
    pub(super) unable: Option<&'a str>,
}

impl<'a> Local<'a> {
    pub(super) fn of(proxy: &'a LocalProxy) -> Self {
        let unable = match (&proxy.certificate_source, &proxy.certificate) {
            (None, _) | (_, Certificate::NotConfigured) => Some(
                "this proxy has no identity (anymesh.yaml identity): \
                 connections to mesh proxies are refused",
            ),
            (_, Certificate::Missing { .. }) => {
                Some("this proxy holds no certificate yet: connections to mesh proxies are refused")
            }
            (
                _,
                Certificate::Held {
                    valid_now: false, ..
                },
            ) => Some("this proxy's certificate is not valid now: mesh proxies refuse it"),
            (_, Certificate::Unreadable { .. }) => {
                Some("this proxy's certificate cannot be read (see certificate above)")
            }
            _ => None,
        };
        Self {
            trust_domain: &proxy.trust_domain,
            unable,
        }
    }
}

/// How the proxy connects to `endpoint`, whose own `address:port` for the
/// cluster is `authority`, under the cluster's `tls` for service `service`.
pub(super) fn transport(
    endpoint: &Endpoint,
    authority: &str,
    tls: Option<&ClusterTls>,
    service: &Hostname,
    local: Local<'_>,
) -> Transport {
    let source = &endpoint.provenance.source;
    let mesh = endpoint.mesh.as_ref();
    let statement = MeshStatement::of(endpoint, local.trust_domain);
    let marks = statement
        .as_ref()
        .map(|s| format!("registry {source} marks a mesh proxy ({})", s.describe()));
    let plaintext = |reason: String| Transport {
        mtls: false,
        tls: TlsKind::Plaintext,
        connect: authority.to_string(),
        identities: Vec::new(),
        sni: None,
        reason,
        problem: None,
    };
    match tls {
        None => match (mesh, marks) {
            (Some(m), Some(marks)) => mesh_mtls(
                endpoint,
                m,
                Vec::new(),
                None,
                format!("auto mTLS: {marks}"),
                local,
            ),
            _ => plaintext(format!(
                "plaintext: no mesh proxy in the registry ({source}) and no DestinationRule tls (auto mTLS)"
            )),
        },
        Some(ClusterTls::Disable) => plaintext(match marks {
            Some(marks) => format!(
                "DestinationRule tls DISABLE: plaintext to the endpoint itself, though {marks}"
            ),
            None => "DestinationRule tls DISABLE".to_string(),
        }),
        Some(ClusterTls::IstioMutual {
            sni,
            subject_alt_names,
        }) => match (mesh, marks) {
            (Some(m), Some(marks)) => mesh_mtls(
                endpoint,
                m,
                subject_alt_names.clone(),
                sni.clone(),
                format!("DestinationRule tls ISTIO_MUTUAL; {marks}"),
                local,
            ),
            _ => {
                let assumed = MeshProxy::new(0, Some(namespace_of(service).to_string()), None);
                let mut t = mesh_mtls(
                    endpoint,
                    &assumed,
                    subject_alt_names.clone(),
                    sni.clone(),
                    format!(
                        "DestinationRule tls ISTIO_MUTUAL; no mesh proxy in the registry \
                         ({source}): the endpoint's own port must speak mesh mTLS, as the \
                         default service account of namespace {}",
                        namespace_of(service)
                    ),
                    local,
                );
                t.connect = authority.to_string();
                t
            }
        },
        Some(ClusterTls::Simple(o)) => origination(authority, o, service, false),
        Some(ClusterTls::Mutual(o)) => origination(authority, o, service, true),
    }
}

fn mesh_mtls(
    endpoint: &Endpoint,
    m: &MeshProxy,
    subject_alt_names: Vec<String>,
    sni: Option<String>,
    reason: String,
    local: Local<'_>,
) -> Transport {
    let (identities, reason) = if subject_alt_names.is_empty() {
        (vec![m.identity(local.trust_domain)], reason)
    } else {
        (
            subject_alt_names,
            format!("{reason}; identities from the DestinationRule's subjectAltNames"),
        )
    };
    Transport {
        mtls: true,
        tls: TlsKind::MeshMtls,
        connect: endpoint.authority(m.port),
        identities,
        sni,
        reason,
        problem: local.unable.map(str::to_string),
    }
}

fn origination(authority: &str, o: &TlsOrigination, service: &Hostname, mutual: bool) -> Transport {
    let sni = o.sni.clone().unwrap_or_else(|| service.to_string());
    let mut parts = vec![format!("sni {sni}")];
    if o.insecure_skip_verify {
        parts.push("server certificate not verified (insecureSkipVerify)".into());
    } else {
        parts.push(match &o.ca_certificates {
            Some(ca) => format!("server verified against {}", ca.display()),
            None => "server verified against the platform's roots".into(),
        });
        if o.subject_alt_names.is_empty() {
            parts.push(format!("name {sni}"));
        }
    }
    if mutual {
        if let Some(cert) = &o.client_certificate {
            parts.push(format!("client certificate {}", cert.display()));
        }
    }
    let mode = if mutual { "MUTUAL" } else { "SIMPLE" };
    Transport {
        mtls: mutual,
        tls: if mutual {
            TlsKind::OriginationMutual
        } else {
            TlsKind::OriginationSimple
        },
        connect: authority.to_string(),
        identities: if o.insecure_skip_verify {
            Vec::new()
        } else {
            o.subject_alt_names.clone()
        },
        sni: Some(sni),
        reason: format!(
            "DestinationRule tls {mode}: TLS origination ({})",
            parts.join(", ")
        ),
        problem: None,
    }
}
