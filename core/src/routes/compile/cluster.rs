//! Clusters: a destination resolved to (service, subset, port), its eligible
//! endpoints, the excluded ones with reasons, its load balancer and its
//! DestinationRule policies (merged for the subset and port as Istio merges
//! them: see [`crate::config::DestinationRule::policy`]).

use std::sync::Arc;

use http::HeaderName;

use super::policy::cluster_policy;
use super::{default_port, names, Compiler};
use crate::catalog::MergedService;
use crate::config::{
    self, Destination, LoadBalancerSettings, Resource, Severity, SimpleLb, VirtualService,
};
use crate::model::{Endpoint, Health, Hostname, Labels, Protocol, ServicePort};
use crate::routes::policy::ClusterPolicy;
use crate::routes::table::{
    Cluster, ClusterEndpoint, Excluded, ExclusionReason, HashKey, HashPolicy, LbPolicy,
    Origination, UpstreamTls,
};

/// What a cluster is built from.
struct Spec<'s> {
    service: Hostname,
    endpoints_of: Option<&'s MergedService>,
    subset: Option<String>,
    /// `None`: the subset is unknown, so nothing is selected.
    selector: Option<Labels>,
    port: ServicePort,
    lb: LbPolicy,
    policy: ClusterPolicy,
}

impl Compiler<'_> {
    /// The cluster a destination of `vs` (at field path `at`, the
    /// destination's own: `spec.http[0].route[1].destination`) goes to, for a
    /// request on `request_port`. Problems are reported; a destination that
    /// cannot be served still gets a cluster (with no endpoints), so requests
    /// sent to it get 503 rather than falling through to other routes.
    pub(super) fn destination(
        &mut self,
        vs: &Resource<VirtualService>,
        at: &str,
        d: &Destination,
        request_port: Option<u16>,
    ) -> Option<Arc<Cluster>> {
        let host = Hostname::new(&d.host).ok()?; // rejected when loaded
        let wanted = d.port.and_then(|p| u16::try_from(p.number).ok());
        let Some(svc) = self.lookup(&host) else {
            self.report(vs.diagnostic(
                Severity::Warning,
                format!("{at}.host"),
                format!(
                    "host '{host}' resolves to no service; requests sent to this destination get 503"
                ),
            ));
            let number = wanted.or(request_port).unwrap_or(80);
            return Some(self.cluster(Spec {
                service: host,
                endpoints_of: None,
                subset: d.subset.clone(),
                selector: Some(Labels::new()),
                port: stand_in_port(number),
                lb: LbPolicy::default(),
                policy: ClusterPolicy::default(),
            }));
        };
        let port = match wanted {
            Some(n) => svc
                .ports
                .iter()
                .find(|p| p.number == n)
                .cloned()
                .unwrap_or_else(|| {
                    self.report(vs.diagnostic(
                        Severity::Warning,
                        format!("{at}.port.number"),
                        format!("service '{}' declares no port {n}", svc.hostname),
                    ));
                    stand_in_port(n)
                }),
            None => request_port
                .and_then(|n| svc.ports.iter().find(|p| p.number == n).cloned())
                .unwrap_or_else(|| default_port(&svc)),
        };
        let rule = self.config.destination_rule_for(names(&svc));
        let selector = match (&d.subset, rule) {
            (None, _) => Some(Labels::new()),
            (Some(name), Some(dr)) if dr.spec.subset(name).is_some() => {
                dr.spec.subset(name).map(|s| s.labels.clone())
            }
            (Some(name), rule) => {
                let why = match rule {
                    Some(dr) => format!("its DestinationRule {} does not define it", dr.id()),
                    None => "no DestinationRule applies to it".to_string(),
                };
                self.report(vs.diagnostic(
                    Severity::Error,
                    format!("{at}.subset"),
                    format!(
                        "unknown subset '{name}' of service '{}': {why}; \
                         requests sent to this destination get 503",
                        svc.hostname
                    ),
                ));
                None
            }
        };
        let merged = rule
            .map(|dr| dr.spec.policy(d.subset.as_deref(), Some(port.number)))
            .unwrap_or_default();
        Some(self.cluster(Spec {
            service: svc.hostname.clone(),
            endpoints_of: Some(svc.as_ref()),
            subset: d.subset.clone(),
            selector,
            port,
            lb: lb_policy(merged.load_balancer),
            policy: cluster_policy(&merged),
        }))
    }

    /// The cluster of a service's default route on `port`.
    pub(super) fn default_cluster(
        &mut self,
        svc: &MergedService,
        port: &ServicePort,
    ) -> Arc<Cluster> {
        let rule = self.config.destination_rule_for(names(svc));
        let merged = rule
            .map(|dr| dr.spec.policy(None, Some(port.number)))
            .unwrap_or_default();
        self.cluster(Spec {
            service: svc.hostname.clone(),
            endpoints_of: Some(svc),
            subset: None,
            selector: Some(Labels::new()),
            port: port.clone(),
            lb: lb_policy(merged.load_balancer),
            policy: cluster_policy(&merged),
        })
    }

    /// Finds or builds the cluster for (service, subset, port).
    fn cluster(&mut self, spec: Spec<'_>) -> Arc<Cluster> {
        let name = Cluster::cluster_name(&spec.service, spec.subset.as_deref(), spec.port.number);
        let store = &mut self.store;
        let existing = store.by_name.get(&name).copied();
        if let Some(c) = existing.and_then(|i| store.slots.get(i)) {
            let stale = store
                .stale
                .as_ref()
                .is_some_and(|s| s.contains(&spec.service))
                && !store.fresh.contains(&name);
            if !stale {
                return c.clone();
            }
        }
        let index = existing
            .or_else(|| store.free.pop())
            .unwrap_or(store.slots.len());
        let tls = spec.policy.tls.as_ref();
        let origination = Origination::of(tls, &spec.service, &name);
        let (endpoints, excluded) = match (&spec.endpoints_of, &spec.selector) {
            (Some(svc), Some(selector)) => {
                let secure =
                    |ep: &Endpoint, port| UpstreamTls::decide(tls, ep, port, origination.as_ref());
                select(svc, selector, &spec.port, secure)
            }
            _ => (Vec::new(), Vec::new()),
        };
        let cluster = Arc::new(Cluster {
            name: name.clone(),
            index,
            service: spec.service,
            subset: spec.subset,
            selector: spec.selector.unwrap_or_default(),
            port: spec.port,
            lb: spec.lb,
            policy: spec.policy,
            endpoints,
            excluded,
        });
        let store = &mut self.store;
        if store.stale.is_some() {
            store.fresh.insert(name.clone());
        }
        store.by_name.insert(name, index);
        match store.slots.get_mut(index) {
            Some(slot) => *slot = cluster.clone(),
            None => store.slots.push(cluster.clone()),
        }
        cluster
    }
}

fn stand_in_port(number: u16) -> ServicePort {
    ServicePort {
        name: String::new(),
        number,
        protocol: Protocol::Http,
    }
}

/// Splits a service's endpoints into eligible and excluded ones for a
/// subset selector and port; `secure` says how connections to an eligible
/// endpoint's port are secured.
fn select(
    svc: &MergedService,
    selector: &Labels,
    port: &ServicePort,
    secure: impl Fn(&Endpoint, u16) -> Option<UpstreamTls>,
) -> (Vec<ClusterEndpoint>, Vec<Excluded>) {
    let mut healthy = Vec::new();
    let mut draining = Vec::new();
    let mut excluded = Vec::new();
    for ep in &svc.endpoints {
        let exclude = |reason| Excluded {
            key: ep.key(),
            address: ep.address.clone(),
            reason,
        };
        let missing: Labels = selector
            .iter()
            .filter(|(k, v)| ep.labels.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !missing.is_empty() {
            excluded.push(exclude(ExclusionReason::LabelMismatch { missing }));
            continue;
        }
        let Some(number) = ep.port_for(port) else {
            excluded.push(exclude(ExclusionReason::NoPort));
            continue;
        };
        let ready = ClusterEndpoint {
            key: ep.key(),
            authority: ep.authority(number),
            weight: ep.effective_weight(),
            tls: secure(ep, number),
            endpoint: ep.clone(),
        };
        match ep.health {
            Health::Healthy => healthy.push(ready),
            Health::Draining => draining.push(ready),
            Health::Unhealthy => excluded.push(exclude(ExclusionReason::Unhealthy)),
        }
    }
    if healthy.is_empty() {
        return (draining, excluded);
    }
    excluded.extend(draining.into_iter().map(|e| Excluded {
        key: e.key,
        address: e.endpoint.address.clone(),
        reason: ExclusionReason::Draining,
    }));
    (healthy, excluded)
}

/// Maps a DestinationRule load balancer to the table's policy.
pub(super) fn lb_policy(lb: Option<&LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::RoundRobin;
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = match ch.key() {
            Some(config::HashKey::Header(h)) => HeaderName::from_bytes(h.as_bytes())
                .ok()
                .map(HashKey::Header),
            Some(config::HashKey::Cookie(c)) => Some(HashKey::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl: c.ttl.map(|t| t.0),
            }),
            Some(config::HashKey::SourceIp) => Some(HashKey::SourceIp),
            Some(config::HashKey::QueryParameter(q)) => Some(HashKey::QueryParam(q.to_string())),
            None => None, // rejected when loaded
        };
        return match key {
            Some(key) => LbPolicy::ConsistentHash(HashPolicy {
                key,
                table_size: ch.maglev.and_then(|m| m.table_size).or(ch.ring_size()),
            }),
            None => LbPolicy::RoundRobin,
        };
    }
    match lb.simple {
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => LbPolicy::LeastRequest,
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::PeakEwma) => LbPolicy::PeakEwma,
        Some(SimpleLb::RoundRobin | SimpleLb::Unspecified | SimpleLb::Passthrough) | None => {
            LbPolicy::RoundRobin
        }
    }
}

#[cfg(test)]
mod tests;
