//! Why each endpoint of a service is, or is not, used.
//!
//! [`explain`] reads a catalog [`Snapshot`] and the [`RouteTable`] compiled
//! from it and gathers, for one service: its names, ports and contributing
//! sources; every endpoint with its provenance, labels before and after
//! mapping, health, weight and locality, and its verdict in each cluster of
//! the service (eligible, or excluded with the [`ExclusionReason`]); the
//! endpoints a higher-precedence source shadows; and each source's state.
//! [`Explanation`] serialises to the JSON the admin listener's `/explain`
//! serves; [`Explanation::render`] writes the text `anymesh explain` prints.
//!
//! Each cluster also carries the resilience policies in force (connection
//! pool, outlier detection, retry budget, locality), and each eligible
//! endpoint how the proxy connects to it there ([`transport`]: mutual TLS or
//! not, the address, the identity expected and why), decided from the
//! cluster's DestinationRule `tls` and the mesh proxy its registry names; the
//! proxy's own identity and certificate are in [`Explanation::proxy`]. What only a running
//! proxy knows — each endpoint's verdict from every health source and each
//! cluster's counters ([`live`]) — is filled in by the proxy's admin
//! listener; an offline explanation has [`Explanation::live`] false.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

use crate::catalog::{MergedService, SourceInfo};
use crate::model::{
    EndpointKey, EndpointPort, Health, Hostname, Labels, Locality, ServicePort, SourceId,
};
use crate::routes::{
    Cluster, ClusterPolicy, ExclusionReason, LbPolicy, RetryBudget, RouteAction, RouteTable,
};
use crate::Snapshot;

pub mod live;
pub mod local;
mod render;
pub mod transport;

pub use live::{BudgetInForce, BudgetSource, ClusterLive, HealthSources};
pub use local::{Certificate, LocalProxy};
pub use transport::{MeshStatement, TlsKind, Transport};

#[cfg(test)]
mod tests;

/// One service, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The host as asked (`reviews`, `reviews.default:9080`).
    pub query: String,
    /// The catalog snapshot read.
    pub catalog_version: u64,
    pub table_version: u64,
    /// The catalog version the route table was compiled from. When it differs
    /// from `catalog_version`, a newer table is on its way and some verdicts
    /// may be [`Verdict::Absent`].
    pub table_catalog_version: u64,
    /// Made by the running proxy, with health verdicts and counters
    /// ([`ClusterSummary::live`], [`ClusterVerdict::health`]); `false`:
    /// computed offline from configuration, policies only.
    pub live: bool,
    /// The explaining proxy's trust domain, identity and certificate.
    pub proxy: LocalProxy,
    pub service: ServiceSummary,
    /// The state of each contributing source, highest precedence first.
    pub sources: Vec<SourceInfo>,
    /// The service's clusters in the route table (only those on the asked port, if one was given).
    pub clusters: Vec<ClusterSummary>,
    pub endpoints: Vec<EndpointExplanation>,
    /// Endpoints dropped because a higher-precedence source has the same address and ports.
    pub shadowed: Vec<ShadowedEndpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub hostname: Hostname,
    pub aliases: Vec<Hostname>,
    pub ports: Vec<ServicePort>,
    /// Contributing sources, highest precedence first.
    pub sources: Vec<SourceId>,
    /// The port of a `host:port` query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    pub name: String,
    pub subset: Option<String>,
    /// The subset's label selector (empty without a subset).
    pub selector: Labels,
    pub port: ServicePort,
    pub lb: LbPolicy,
    pub eligible: usize,
    pub excluded: usize,
    /// The DestinationRule's connection pool, outlier detection, retry
    /// budget and locality settings, as compiled.
    pub policy: ClusterPolicy,
    /// The retry budget in force; `None` when the proxy's default applies
    /// but is not known here.
    pub retry_budget: Option<BudgetInForce>,
    /// Counters and health of the running proxy (live explanations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<ClusterLive>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointExplanation {
    pub source: SourceId,
    /// The registry's own id for this instance (etcd key, file entry id, ...).
    pub native_id: String,
    pub address: String,
    pub ports: Vec<EndpointPort>,
    /// Labels exactly as the registry gave them.
    pub raw_labels: Labels,
    /// Labels after mapping: what subset selectors match against.
    pub labels: Labels,
    pub health: Health,
    pub weight: u32,
    pub locality: Locality,
    /// The mesh proxy the registry says fronts the endpoint; `None`: none.
    pub mesh: Option<MeshStatement>,
    /// The endpoint's verdict in each of [`Explanation::clusters`], in that order.
    pub clusters: Vec<ClusterVerdict>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterVerdict {
    pub cluster: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How the proxy connects to the endpoint in this cluster (eligible
    /// endpoints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Each health source's verdict and the fused one (live explanations,
    /// endpoints in the cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSources>,
}

/// Whether requests to a cluster may go to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Eligible {
        /// `address:port` the proxy connects to.
        authority: String,
        weight: u32,
        /// Draining, and used only because the cluster has no healthy endpoint.
        draining_fallback: bool,
    },
    Excluded {
        #[serde(flatten)]
        reason: ExclusionReason,
    },
    /// Not in the cluster: the table was compiled from another catalog version.
    Absent,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowedEndpoint {
    pub endpoint: EndpointKey,
    /// The higher-precedence endpoint with the same address and ports.
    pub by: EndpointKey,
    /// The address both share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Why a host cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    #[error("{}", no_service_message(.host, .routed_to, .close))]
    NoService {
        host: String,
        /// Services a VirtualService with this host routes to.
        routed_to: Vec<Hostname>,
        /// Known names (hostnames and aliases) close to `host`.
        close: Vec<String>,
    },
}

fn no_service_message(host: &str, routed_to: &[Hostname], close: &[String]) -> String {
    let mut m = format!("no service named '{host}'");
    if !routed_to.is_empty() {
        let names: Vec<&str> = routed_to.iter().map(|h| h.as_str()).collect();
        let _ = write!(
            m,
            "; it is a VirtualService host routing to {}: explain those",
            names.join(", ")
        );
    }
    if !close.is_empty() {
        let _ = write!(m, "; did you mean {}?", close.join(", "));
    }
    m
}

/// Explains the service `host` (hostname or alias, optionally `:port`) as
/// the proxy `proxy` connects to it.
pub fn explain(
    snapshot: &Snapshot,
    table: &RouteTable,
    host: &str,
    proxy: &LocalProxy,
) -> Result<Explanation, ExplainError> {
    let (name, port) = parse_host(host)?;
    let Some(svc) = snapshot.service(&name) else {
        return Err(ExplainError::NoService {
            host: name.to_string(),
            routed_to: routed_to(table, host),
            close: close_names(snapshot, name.as_str()),
        });
    };
    let clusters: Vec<&Cluster> = table
        .clusters
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| c.service == svc.hostname && port.is_none_or(|p| c.port.number == p))
        .collect();
    let local = transport::Local::of(proxy);
    let verdicts: Vec<HashMap<&EndpointKey, (Verdict, Option<Transport>)>> = clusters
        .iter()
        .map(|c| cluster_verdicts(c, local))
        .collect();
    let endpoints = svc
        .endpoints
        .iter()
        .map(|ep| {
            let key = ep.key();
            EndpointExplanation {
                source: key.source.clone(),
                native_id: ep.provenance.native_id.clone(),
                address: ep.address.clone(),
                ports: ep.ports.clone(),
                raw_labels: ep.provenance.raw_labels.clone(),
                labels: ep.labels.clone(),
                health: ep.health,
                weight: ep.weight,
                locality: ep.locality.clone(),
                mesh: MeshStatement::of(ep, &proxy.trust_domain),
                clusters: clusters
                    .iter()
                    .zip(&verdicts)
                    .map(|(c, v)| {
                        let (verdict, transport) =
                            v.get(&key).cloned().unwrap_or((Verdict::Absent, None));
                        ClusterVerdict {
                            cluster: c.name.clone(),
                            verdict,
                            transport,
                            health: None,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Explanation {
        query: host.to_string(),
        catalog_version: snapshot.version,
        table_version: table.version,
        table_catalog_version: table.catalog_version,
        live: false,
        proxy: proxy.clone(),
        service: ServiceSummary {
            hostname: svc.hostname.clone(),
            aliases: svc.aliases.clone(),
            ports: svc.ports.clone(),
            sources: svc.sources.clone(),
            requested_port: port,
        },
        sources: svc
            .sources
            .iter()
            .filter_map(|id| snapshot.sources.iter().find(|s| &s.source == id).cloned())
            .collect(),
        clusters: clusters
            .iter()
            .map(|c| ClusterSummary {
                name: c.name.clone(),
                subset: c.subset.clone(),
                selector: c.selector.clone(),
                port: c.port.clone(),
                lb: c.lb.clone(),
                eligible: c.endpoints.len(),
                excluded: c.excluded.len(),
                policy: c.policy.clone(),
                retry_budget: c.policy.retry_budget.clone().map(|budget| BudgetInForce {
                    budget,
                    from: BudgetSource::DestinationRule,
                }),
                live: None,
            })
            .collect(),
        endpoints,
        shadowed: shadowed(svc),
    })
}

impl Explanation {
    /// Records the proxy's default retry budget (anymesh.yaml
    /// `retry_budget`) as the one in force for every cluster whose
    /// DestinationRule sets none.
    pub fn set_default_retry_budget(&mut self, budget: &RetryBudget) {
        for c in &mut self.clusters {
            if c.policy.retry_budget.is_none() {
                c.retry_budget = Some(BudgetInForce {
                    budget: budget.clone(),
                    from: BudgetSource::ProxyDefault,
                });
            }
        }
    }
}

/// Splits `reviews:9080` into a hostname and a port.
fn parse_host(host: &str) -> Result<(Hostname, Option<u16>), ExplainError> {
    let invalid = |reason: String| ExplainError::InvalidHost {
        host: host.to_string(),
        reason,
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| invalid(format!("port {port:?} is not a number from 0 to 65535")))?;
            (name, Some(port))
        }
        None => (host, None),
    };
    let name = Hostname::new(name).map_err(|e| invalid(e.reason.to_string()))?;
    Ok((name, port))
}

fn cluster_verdicts<'c>(
    c: &'c Cluster,
    local: transport::Local<'_>,
) -> HashMap<&'c EndpointKey, (Verdict, Option<Transport>)> {
    let eligible = c.endpoints.iter().map(|e| {
        let verdict = Verdict::Eligible {
            authority: e.authority.clone(),
            weight: e.weight,
            draining_fallback: e.endpoint.health == Health::Draining,
        };
        let how = transport::transport(
            &e.endpoint,
            &e.authority,
            c.policy.tls.as_ref(),
            &c.service,
            local,
        );
        (&e.key, (verdict, Some(how)))
    });
    let excluded = c.excluded.iter().map(|x| {
        let verdict = Verdict::Excluded {
            reason: x.reason.clone(),
        };
        (&x.key, (verdict, None))
    });
    eligible.chain(excluded).collect()
}

fn shadowed(svc: &MergedService) -> Vec<ShadowedEndpoint> {
    svc.shadowed
        .iter()
        .map(|s| ShadowedEndpoint {
            endpoint: s.endpoint.clone(),
            by: s.by.clone(),
            address: svc
                .endpoints
                .iter()
                .find(|e| e.key() == s.by)
                .map(|e| e.address.clone()),
        })
        .collect()
}

/// The services a VirtualService host (not itself a service) routes to.
fn routed_to(table: &RouteTable, host: &str) -> Vec<Hostname> {
    let mut out: Vec<Hostname> = Vec::new();
    let Some(vh) = table.virtual_host(host) else {
        return out;
    };
    for route in &vh.routes {
        if let RouteAction::Forward(split) = &route.action {
            for t in &split.targets {
                if !out.contains(&t.cluster.service) {
                    out.push(t.cluster.service.clone());
                }
            }
        }
    }
    out
}

/// Up to five known names within a small edit distance of `name`, closest first.
fn close_names(snapshot: &Snapshot, name: &str) -> Vec<String> {
    let limit = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = snapshot
        .services
        .keys()
        .chain(snapshot.aliases.keys())
        .map(|h| h.as_str())
        .filter_map(|known| {
            let d = edit_distance(name, known);
            let related = known.starts_with(name) || name.starts_with(known);
            (d <= limit || related).then_some((d, known))
        })
        .collect();
    scored.sort_unstable();
    scored.dedup();
    scored.into_iter().take(5).map(|(_, n)| n.into()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
