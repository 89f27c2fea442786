//! What the adapter has told the catalog about each followed service, and
//! the changes a new answer from Consul makes to it.
//!
//! A `/v1/health/service/<name>` answer is the whole instance list of that
//! service, so applying one is a diff against what was sent before: new or
//! changed instances are upserts, missing ones removals. Nothing of a
//! service outlives an answer that no longer lists it.
//!
//! Connect sidecar proxies are joined to the instances they front: an
//! answer of a sidecar service (`web-sidecar-proxy`) changes the endpoints
//! of its destination (`web`), which are diffed and sent again
//! ([`Synced::apply`]).

use std::collections::{BTreeMap, BTreeSet};

use anymesh_core::model::MeshProxy;
use anymesh_core::{Change, Endpoint, Health, Service, SourceStatus, SourceView};

use crate::api::ServiceEntry;
use crate::decode::{Decoder, Instance, Sidecar};

/// One followed service.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Followed {
    /// The index of the last answer applied (0: none yet).
    pub index: u64,
    /// The instances of the last answer, by native id, before the join.
    pub instances: BTreeMap<String, Instance>,
    /// The Connect sidecars of the last answer (a sidecar service's).
    pub sidecars: Vec<Sidecar>,
    /// The endpoints sent: the instances joined with their sidecars.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub declared: Option<Service>,
    /// Instances skipped when decoding, with why.
    pub problems: Vec<String>,
    /// Instances skipped when joined with their sidecars, with why.
    pub join_problems: Vec<String>,
}

/// Every followed service, by Consul name.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Synced {
    pub catalog_index: u64,
    /// Every service name in the catalog (followed or not).
    pub catalog: Vec<String>,
    pub services: BTreeMap<String, Followed>,
    /// Every followed sidecar by the native id of the instance it fronts,
    /// then by its own native id.
    pub sidecars: BTreeMap<String, BTreeMap<String, Sidecar>>,
}

/// How many problems a status message names.
const NAMED_PROBLEMS: usize = 3;

impl Followed {
    /// Decodes a full answer into a fresh state.
    pub(crate) fn decode(
        decoder: &Decoder,
        name: &str,
        index: u64,
        entries: &[ServiceEntry],
    ) -> Self {
        let mut f = Followed {
            index,
            ..Followed::default()
        };
        for e in entries {
            if Decoder::is_proxy(e) {
                f.sidecars.extend(decoder.sidecar(e));
                continue;
            }
            match decoder.instance(e) {
                Ok(i) => {
                    f.instances
                        .insert(i.endpoint.provenance.native_id.clone(), i);
                }
                Err(p) => f.problems.push(format!("service {name:?}: {p}")),
            }
        }
        let (declared, problem) = decoder.service(name, entries);
        f.declared = declared;
        f.problems.extend(problem);
        f
    }

    /// Replaces `self` with `next`; returns the changes that make the
    /// catalog agree.
    pub(crate) fn replace(&mut self, next: Followed) -> Vec<Change> {
        let mut out = Vec::new();
        if self.declared != next.declared {
            match &next.declared {
                Some(svc) => out.push(Change::UpsertService(svc.clone())),
                None => {
                    // Removing a declaration removes the service's endpoints
                    // too: send the remaining ones again.
                    if let Some(old) = &self.declared {
                        out.push(Change::RemoveService(old.hostname.clone()));
                    }
                    out.extend(next.endpoints.values().cloned().map(Change::UpsertEndpoint));
                }
            }
        }
        let redeclared_away = self.declared.is_some() && next.declared.is_none();
        for (id, ep) in &self.endpoints {
            if !next.endpoints.contains_key(id) && !redeclared_away {
                out.push(Change::RemoveEndpoint(ep.key()));
            }
        }
        if !redeclared_away {
            for (id, ep) in &next.endpoints {
                if self.endpoints.get(id) != Some(ep) {
                    out.push(Change::UpsertEndpoint(ep.clone()));
                }
            }
        }
        *self = next;
        out
    }

    /// The changes that take this service out of the catalog.
    pub(crate) fn removal(&self) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .endpoints
            .values()
            .map(|ep| Change::RemoveEndpoint(ep.key()))
            .collect();
        if let Some(svc) = &self.declared {
            out.push(Change::RemoveService(svc.hostname.clone()));
        }
        out
    }
}

impl Synced {
    /// Joins every followed service's instances with their sidecars (after
    /// a sync); sends nothing.
    pub(crate) fn join_all(&mut self) {
        self.sidecars.clear();
        for f in self.services.values() {
            for sc in &f.sidecars {
                index(&mut self.sidecars, sc);
            }
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let (endpoints, problems) = self.joined(&name);
            if let Some(f) = self.services.get_mut(&name) {
                f.endpoints = endpoints;
                f.join_problems = problems;
            }
        }
    }

    /// Applies a new answer of service `name`; returns the changes that make
    /// the catalog agree, those of the services whose sidecars it holds
    /// included.
    pub(crate) fn apply(&mut self, name: &str, next: Followed) -> Vec<Change> {
        let Some(f) = self.services.get_mut(name) else {
            return Vec::new();
        };
        let old = std::mem::replace(f, next);
        let (sidecars, declared) = (old.sidecars, old.declared);
        // What was sent stays until the diff against the new join.
        f.endpoints = old.endpoints;
        let new_sidecars = f.sidecars.clone();
        let mut affected = self.reindex(&sidecars, &new_sidecars);
        affected.remove(name);
        let mut changes = self.rejoin(name, Some(declared));
        for other in affected {
            changes.extend(self.rejoin(&other, None));
        }
        changes
    }

    /// Takes service `name` out: the changes that remove it, and those of
    /// the services whose sidecars it held.
    pub(crate) fn remove(&mut self, name: &str) -> Vec<Change> {
        let Some(f) = self.services.remove(name) else {
            return Vec::new();
        };
        let mut changes = f.removal();
        for other in self.reindex(&f.sidecars, &[]) {
            changes.extend(self.rejoin(&other, None));
        }
        changes
    }

    /// Replaces `old` sidecars with `new` in the index; returns the services
    /// they front.
    fn reindex(&mut self, old: &[Sidecar], new: &[Sidecar]) -> BTreeSet<String> {
        let mut affected = BTreeSet::new();
        if old == new {
            return affected;
        }
        for sc in old {
            if let Some(by_proxy) = self.sidecars.get_mut(&sc.fronts) {
                by_proxy.remove(&sc.proxy);
                if by_proxy.is_empty() {
                    self.sidecars.remove(&sc.fronts);
                }
            }
            affected.insert(sc.destination.clone());
        }
        for sc in new {
            index(&mut self.sidecars, sc);
            affected.insert(sc.destination.clone());
        }
        affected
    }

    /// Joins service `name` again and diffs it against what was sent. With
    /// `declared`, the service's new answer replaced that declaration.
    fn rejoin(&mut self, name: &str, declared: Option<Option<Service>>) -> Vec<Change> {
        if !self.services.contains_key(name) {
            return Vec::new();
        }
        let (endpoints, problems) = self.joined(name);
        let Some(f) = self.services.get_mut(name) else {
            return Vec::new();
        };
        f.join_problems = problems;
        let mut sent = Followed {
            declared: declared.unwrap_or_else(|| f.declared.clone()),
            endpoints: std::mem::take(&mut f.endpoints),
            ..Followed::default()
        };
        let changes = sent.replace(Followed {
            declared: f.declared.clone(),
            endpoints,
            ..Followed::default()
        });
        f.endpoints = sent.endpoints;
        changes
    }

    /// The endpoints of service `name`: its instances with their sidecars'
    /// mesh proxies, and the instances refused, with why. Of two sidecars
    /// fronting one instance, the first by proxy id is used.
    fn joined(&self, name: &str) -> (BTreeMap<String, Endpoint>, Vec<String>) {
        let mut endpoints = BTreeMap::new();
        let mut problems = Vec::new();
        let Some(f) = self.services.get(name) else {
            return (endpoints, problems);
        };
        for (id, inst) in &f.instances {
            let sidecar = self.sidecars.get(id).and_then(|m| m.values().next());
            match join(inst, sidecar) {
                Ok(ep) => {
                    endpoints.insert(id.clone(), ep);
                }
                Err(p) => problems.push(format!("service {name:?}: instance {id}: {p}")),
            }
        }
        (endpoints, problems)
    }

    /// The whole view, for a `Reset`.
    pub(crate) fn view(&self) -> SourceView {
        SourceView {
            services: self
                .services
                .values()
                .filter_map(|f| f.declared.clone())
                .collect(),
            endpoints: self
                .services
                .values()
                .flat_map(|f| f.endpoints.values().cloned())
                .collect(),
        }
    }

    /// `Healthy`, or `Degraded` naming the first few skipped instances.
    pub(crate) fn status(&self) -> SourceStatus {
        let problems: Vec<&String> = self
            .services
            .values()
            .flat_map(|f| f.problems.iter().chain(&f.join_problems))
            .collect();
        if problems.is_empty() {
            return SourceStatus::Healthy;
        }
        let n = problems.len();
        let named: Vec<&str> = problems
            .iter()
            .take(NAMED_PROBLEMS)
            .map(|s| s.as_str())
            .collect();
        let more = match n.saturating_sub(NAMED_PROBLEMS) {
            0 => String::new(),
            rest => format!("; and {rest} more"),
        };
        let plural = if n == 1 { "" } else { "s" };
        SourceStatus::Degraded {
            message: format!(
                "{n} consul instance{plural} skipped: {}{more}",
                named.join("; ")
            ),
        }
    }
}

fn index(sidecars: &mut BTreeMap<String, BTreeMap<String, Sidecar>>, sc: &Sidecar) {
    sidecars
        .entry(sc.fronts.clone())
        .or_default()
        .insert(sc.proxy.clone(), sc.clone());
}

/// The raw label naming the Connect sidecar in front of an endpoint.
pub(crate) const SIDECAR_LABEL: &str = "consul.connect_proxy";

/// An instance with the mesh proxy its sidecar (if any) and meta give it.
/// A sidecar on another address than the instance's cannot be expressed (a
/// proxy listens on the endpoint's address): the instance is refused rather
/// than reached in plaintext.
fn join(inst: &Instance, sidecar: Option<&Sidecar>) -> Result<Endpoint, String> {
    let mut ep = inst.endpoint.clone();
    let Some(sc) = sidecar else {
        return Ok(ep);
    };
    if sc.address != ep.address {
        return Err(format!(
            "its Connect sidecar {} listens on {}, not on the instance's address {}; \
             anymesh expects the proxy on the instance's address",
            sc.proxy, sc.address, ep.address
        ));
    }
    if sc.port == 0 {
        return Err(format!("its Connect sidecar {} has no port", sc.proxy));
    }
    let port = if inst.meta_port {
        inst.identity.port
    } else {
        sc.port
    };
    ep.mesh = Some(MeshProxy {
        port,
        ..inst.identity.clone()
    });
    if sc.unhealthy {
        // Every request goes through the proxy.
        ep.health = Health::Unhealthy;
    }
    ep.provenance
        .raw_labels
        .insert(SIDECAR_LABEL.into(), sc.proxy.clone());
    Ok(ep)
}

#[cfg(test)]
mod tests;
