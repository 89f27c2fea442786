//! The route-table compiler: catalog snapshot + Istio config → [`RouteTable`].
//!
//! A pure function of its inputs. The rules:
//!
//! - **Virtual hosts.** Every service gets one virtual host per port, reachable
//!   as `name:port` for its hostname and every alias. The virtual host of the
//!   service's *default port* (its first HTTP port, else its first port) also
//!   answers the bare names, so a request without a port, or with a port the
//!   service does not declare, lands there. A hostname always beats another
//!   service's alias: the catalog never grants such an alias (nor one alias to
//!   two services), each refusal is a warning here, and hostnames are
//!   registered before any alias.
//! - **Default routes.** A service no VirtualService claims has one route, to
//!   the cluster of (service, no subset, the virtual host's port).
//! - **VirtualServices.** A VirtualService that binds to the mesh (no
//!   `gateways`, or `mesh` among them) and has HTTP routes claims every service
//!   one of its `hosts` names: an exact host equals the hostname or an alias
//!   (`reviews` claims only a service called or aliased `reviews`), `*.suffix`
//!   covers names ending in `.suffix`, `*` covers all. When several claim a
//!   service, an exact host beats a longer wildcard beats a shorter one, and
//!   then the earlier resource wins (a warning names the loser). Its routes
//!   replace the default route on every port of the service. Wildcard hosts
//!   also get a virtual host of their own for names that are not services,
//!   and an exact host that resolves to no service keeps a virtual host with
//!   the VirtualService's routes (a warning says so).
//! - **Destinations.** The destination host is resolved like a VirtualService
//!   host. Its port is `destination.port.number`, else the request's port when
//!   the destination service declares it, else the service's default port.
//! - **Clusters.** One per (service, subset, port), shared by all routes. The
//!   DestinationRule for a service is the most specific whose `host` names it
//!   (exact, then the longest wildcard, `*` last), then the first in file
//!   order; a second exact rule for the service under another of its names
//!   gets a warning. Endpoints are selected by the subset's labels; healthy
//!   ones are eligible, draining ones only when nothing healthy is left,
//!   unhealthy ones never; every excluded endpoint is kept with its reason.
//!   The load balancer is the subset's policy, else the rule's, else round robin.

mod cluster;
mod incremental;
mod policy;
mod route;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

pub use incremental::{IncrementalCompiler, Pass};

use crate::catalog::{MergedService, Snapshot};
use crate::config::{ConfigSet, Diagnostic, HostPattern, Resource, Severity, VirtualService};
use crate::model::{Hostname, Protocol, ServicePort};

use super::table::{Cluster, RouteTable, VirtualHost};

/// Compiles the route table. The diagnostics are about the combination of
/// config and catalog (hosts that resolve to no service, subsets the
/// resolved service's DestinationRule lacks, conflicting VirtualServices);
/// problems of the config alone were reported when it was loaded.
///
/// The table is always complete: nothing here drops a resource. An error
/// names a part that cannot serve, and its message ends with what the proxy
/// does instead (503 for a destination without endpoints, the next rule or
/// 404 for a rule left out), so `anymesh check`, which fails on errors, and a
/// running proxy, which logs them and serves this table, agree.
pub fn compile(
    snapshot: &Snapshot,
    config: &ConfigSet,
    version: u64,
) -> (RouteTable, Vec<Diagnostic>) {
    let mut c = Compiler::new(snapshot, config, ClusterStore::default());
    c.table.version = version;
    for d in alias_diagnostics(snapshot) {
        c.report(d);
    }
    let active = active_virtual_services(config);
    for svc in snapshot.services.values() {
        c.rule_conflicts(svc);
        let claim = c.claim(svc, &active);
        c.service_hosts(svc, claim);
    }
    // Every hostname is registered by now: an alias never takes one.
    for (domain, index) in std::mem::take(&mut c.alias_domains) {
        c.domain(domain, index);
    }
    for vs in &active {
        c.virtual_service_hosts(vs);
    }
    c.table
        .wildcards
        .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    c.table.clusters = c.store.slots;
    (c.table, c.diagnostics)
}

/// The VirtualServices that route mesh traffic.
fn active_virtual_services(config: &ConfigSet) -> Vec<&Resource<VirtualService>> {
    config
        .virtual_services
        .iter()
        .filter(|vs| binds_to_mesh(&vs.spec) && !vs.spec.http.is_empty())
        .collect()
}

/// One warning per alias the catalog refused.
fn alias_diagnostics(snapshot: &Snapshot) -> impl Iterator<Item = Diagnostic> + '_ {
    snapshot.alias_conflicts.iter().map(|conflict| Diagnostic {
        severity: Severity::Warning,
        file: format!("registry {}", conflict.source),
        document: None,
        line: None,
        column: None,
        kind: None,
        resource: None,
        path: String::new(),
        message: conflict.to_string(),
    })
}

fn binds_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// Every name a service answers to: its hostname, then its aliases.
pub(crate) fn names(svc: &MergedService) -> impl Iterator<Item = &str> + Clone {
    std::iter::once(svc.hostname.as_str()).chain(svc.aliases.iter().map(|a| a.as_str()))
}

/// The port a request without a (known) port goes to: the first HTTP port,
/// else the first port, else a stand-in port 80 for a service without ports.
pub(crate) fn default_port(svc: &MergedService) -> ServicePort {
    svc.ports
        .iter()
        .find(|p| p.protocol.is_http())
        .or_else(|| svc.ports.first())
        .cloned()
        .unwrap_or_else(|| ServicePort {
            name: "http".into(),
            number: 80,
            protocol: Protocol::Http,
        })
}

/// The clusters built so far, by name; shared by all routes.
#[derive(Debug, Default)]
pub(crate) struct ClusterStore {
    /// `slots[i].index == i`. After incremental updates some slots are
    /// unused (see [`incremental`]).
    pub slots: Vec<Arc<Cluster>>,
    /// Cluster name → index into `slots`.
    pub by_name: HashMap<String, usize>,
    /// Unused slots, reused before the vector grows.
    pub free: Vec<usize>,
    /// Incremental passes: the clusters of these services (or unresolved
    /// destination hosts) that were built before this pass are out of date.
    pub stale: Option<Arc<BTreeSet<Hostname>>>,
    /// Clusters (re)built in this pass.
    pub fresh: HashSet<String>,
}

pub(crate) struct Compiler<'a> {
    pub snapshot: &'a Snapshot,
    pub config: &'a ConfigSet,
    pub store: ClusterStore,
    pub table: RouteTable,
    pub diagnostics: Vec<Diagnostic>,
    /// Alias domains, registered after every service's hostname domains.
    pub alias_domains: Vec<(String, usize)>,
    /// Every name looked up in the catalog, so an incremental compile knows
    /// what a part depends on.
    pub lookups: Vec<Hostname>,
}

impl<'a> Compiler<'a> {
    fn new(snapshot: &'a Snapshot, config: &'a ConfigSet, store: ClusterStore) -> Self {
        Compiler {
            snapshot,
            config,
            store,
            table: RouteTable {
                catalog_version: snapshot.version,
                ..RouteTable::default()
            },
            diagnostics: Vec::new(),
            alias_domains: Vec::new(),
            lookups: Vec::new(),
        }
    }

    /// Looks a service up by hostname or alias, and records the lookup.
    pub(crate) fn lookup(&mut self, host: &Hostname) -> Option<Arc<MergedService>> {
        self.lookups.push(host.clone());
        self.snapshot.service(host).cloned()
    }

    /// Records a finding once (a VirtualService compiles once per port).
    pub(crate) fn report(&mut self, d: Diagnostic) {
        if !self.diagnostics.contains(&d) {
            self.diagnostics.push(d);
        }
    }

    /// The VirtualService whose routes serve `svc`, if any.
    fn claim<'v>(
        &mut self,
        svc: &MergedService,
        active: &[&'v Resource<VirtualService>],
    ) -> Option<&'v Resource<VirtualService>> {
        // Rank: exact host (0), then wildcards by suffix length, `*` last.
        let rank = |vs: &Resource<VirtualService>| {
            vs.spec
                .hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let p = HostPattern::parse(h).ok()?;
                    names(svc).any(|n| p.matches(n)).then(|| {
                        let (kind, len) = p.rank();
                        (kind, len, i)
                    })
                })
                .min()
        };
        let mut ranked: Vec<_> = active
            .iter()
            .filter_map(|vs| rank(vs).map(|r| (r, *vs)))
            .collect();
        ranked.sort_by_key(|((kind, len, _), _)| (*kind, *len));
        let (best_rank, winner) = *ranked.first()?;
        for (r, vs) in &ranked[1..] {
            if r.0 == 0 && best_rank.0 == 0 {
                self.report(vs.diagnostic(
                    Severity::Warning,
                    format!("spec.hosts[{}]", r.2),
                    format!(
                        "service '{}' is also claimed by VirtualService {} ({}), which applies",
                        svc.hostname,
                        winner.id(),
                        winner.origin.file
                    ),
                ));
            }
        }
        Some(winner)
    }

    /// Warns about each exact DestinationRule that names `svc` after an
    /// earlier one did under another name (a hostname and an alias): only
    /// the first applies. Rules with the same host were reported at load time.
    fn rule_conflicts(&mut self, svc: &MergedService) {
        let config = self.config;
        let mut exact = config.destination_rules.iter().filter_map(|dr| {
            let p = HostPattern::parse(&dr.spec.host).ok()?;
            (!p.is_wildcard() && names(svc).any(|n| p.matches(n))).then_some((dr, p))
        });
        let Some((first, first_host)) = exact.next() else {
            return;
        };
        for (dr, host) in exact {
            if host == first_host {
                continue;
            }
            self.report(dr.diagnostic(
                Severity::Warning,
                "spec.host",
                format!(
                    "host '{}' names service '{}', which already has DestinationRule {} \
                     ({}, host '{}'); only that one applies",
                    dr.spec.host,
                    svc.hostname,
                    first.id(),
                    first.origin.file,
                    first.spec.host
                ),
            ));
        }
    }

    /// Registers an exact domain unless an earlier virtual host has it.
    fn domain(&mut self, domain: String, index: usize) {
        self.table.exact.entry(domain.into()).or_insert(index);
    }

    /// One virtual host per port of `svc`, with the claimed VirtualService's
    /// routes or the default route.
    fn service_hosts(&mut self, svc: &MergedService, claim: Option<&Resource<VirtualService>>) {
        let default = default_port(svc);
        let ports = if svc.ports.is_empty() {
            vec![default.clone()]
        } else {
            svc.ports.clone()
        };
        let base = match claim {
            Some(vs) => format!("VirtualService {}", vs.id()),
            None => svc.hostname.to_string(),
        };
        for port in &ports {
            let routes = match claim {
                Some(vs) => self.routes(vs, Some(port.number)),
                None => vec![self.default_route(svc, port)],
            };
            let is_default = port.number == default.number;
            let mut domains: Vec<String> =
                names(svc).map(|n| format!("{n}:{}", port.number)).collect();
            if is_default {
                domains.extend(names(svc).map(str::to_string));
            }
            let index = self.table.virtual_hosts.len();
            let own = [
                format!("{}:{}", svc.hostname, port.number),
                svc.hostname.to_string(),
            ];
            for d in &domains {
                if own.contains(d) {
                    self.domain(d.clone(), index);
                } else {
                    self.alias_domains.push((d.clone(), index));
                }
            }
            let name = if ports.len() == 1 {
                base.clone()
            } else {
                format!("{base} port {}", port.number)
            };
            self.table.virtual_hosts.push(Arc::new(VirtualHost {
                name,
                domains,
                routes,
            }));
        }
    }

    /// Virtual hosts for a VirtualService's hosts that are not services:
    /// wildcards, and exact names that resolve to nothing (with a warning).
    fn virtual_service_hosts(&mut self, vs: &Resource<VirtualService>) {
        let mut exact = Vec::new();
        let mut wild = Vec::new();
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            match HostPattern::parse(host) {
                Ok(HostPattern::Exact(h)) => {
                    if self.lookup(&h).is_none() {
                        self.report(vs.diagnostic(
                            Severity::Warning,
                            format!("spec.hosts[{i}]"),
                            format!("host '{h}' resolves to no service"),
                        ));
                        exact.push(h.to_string());
                    }
                }
                Ok(HostPattern::Suffix(s)) => wild.push((format!("*{s}"), s)),
                Ok(HostPattern::Any) => wild.push(("*".to_string(), String::new())),
                Err(_) => {} // rejected when the config was loaded
            }
        }
        if !exact.is_empty() {
            let routes = self.routes(vs, None);
            let index = self.table.virtual_hosts.len();
            for d in &exact {
                self.domain(d.clone(), index);
            }
            self.table.virtual_hosts.push(Arc::new(VirtualHost {
                name: format!("VirtualService {}", vs.id()),
                domains: exact,
                routes,
            }));
        }
        if !wild.is_empty() {
            let routes = self.routes(vs, None);
            let index = self.table.virtual_hosts.len();
            for (domain, suffix) in &wild {
                match self.table.wildcards.iter().find(|(s, _)| s == suffix) {
                    None => self.table.wildcards.push((suffix.clone(), index)),
                    Some(&(_, earlier)) => {
                        let earlier = self
                            .table
                            .virtual_hosts
                            .get(earlier)
                            .map(|v| v.name.clone());
                        self.report(vs.diagnostic(
                            Severity::Warning,
                            "spec.hosts",
                            format!(
                                "host '{domain}' is already routed by {}, which applies",
                                earlier.unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            self.table.virtual_hosts.push(Arc::new(VirtualHost {
                name: format!("VirtualService {}", vs.id()),
                domains: wild.into_iter().map(|(d, _)| d).collect(),
                routes,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
