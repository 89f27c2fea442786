//! Mapping a full view: service declarations follow their endpoints.

use std::collections::{BTreeMap, BTreeSet};

use super::{merge_aliases, Mapping, MappingError};
use crate::model::{Hostname, Service};
use crate::registry::SourceView;

impl Mapping {
    /// Maps a full view. A declared service takes its hostnames (and label
    /// aliases) from its endpoints in the view, or from the defaults when it
    /// has none; endpoints with aliases but no declaration get an empty one
    /// (no ports) to carry the aliases.
    pub(super) fn map_view(&self, view: SourceView) -> (SourceView, Vec<MappingError>) {
        let mut problems = Vec::new();
        let mut endpoints = Vec::with_capacity(view.endpoints.len());
        let mut targets: BTreeMap<Hostname, BTreeMap<Hostname, BTreeSet<Hostname>>> =
            BTreeMap::new();
        for ep in view.endpoints {
            let native = ep.service.clone();
            match self.map_endpoint(ep) {
                Ok(m) => {
                    let host = m.endpoint.service.clone();
                    targets
                        .entry(native)
                        .or_default()
                        .entry(host)
                        .or_default()
                        .extend(m.aliases);
                    problems.extend(m.problems);
                    endpoints.push(m.endpoint);
                }
                Err(e) => problems.push(e),
            }
        }
        let mut services: BTreeMap<Hostname, Service> = BTreeMap::new();
        let mut add = |svc: Service| match services.get_mut(&svc.hostname) {
            Some(have) => {
                merge_aliases(&mut have.aliases, svc.aliases, &svc.hostname);
            }
            None => {
                services.insert(svc.hostname.clone(), svc);
            }
        };
        for svc in view.services {
            match targets.remove(&svc.hostname) {
                Some(hosts) => {
                    for (host, aliases) in hosts {
                        let mut s = svc.clone();
                        merge_aliases(&mut s.aliases, aliases, &host);
                        s.hostname = host;
                        add(s);
                    }
                }
                None => {
                    if let Some(s) = self.map_service(svc, &self.labels.defaults, &mut problems) {
                        add(s);
                    }
                }
            }
        }
        for (host, aliases) in targets.into_values().flatten() {
            if !aliases.is_empty() {
                add(Service {
                    hostname: host,
                    aliases: aliases.into_iter().collect(),
                    ports: vec![],
                });
            }
        }
        let services = services.into_values().collect();
        (
            SourceView {
                services,
                endpoints,
            },
            problems,
        )
    }
}
