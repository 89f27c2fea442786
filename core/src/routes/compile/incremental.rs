//! Incremental compilation: after a catalog change, recompile only the
//! services that changed and the parts that refer to them, and reuse the
//! rest of the previous table.
//!
//! The table is cut into *units*: one per service (its virtual hosts, one per
//! port, with their domains), and one for the VirtualServices' own hosts
//! (wildcards and exact hosts that name no service). A unit is a function of
//! its service, the config, and the services it looked up (destination
//! hosts, VirtualService hosts), which the compiler records. So when the
//! catalog's [`Snapshot::changed_since`] names the changed services, the
//! units to redo are those services' own and every unit that looked up one
//! of their names. Clusters are shared by name, as in a full compile; a
//! cluster of a changed service is rebuilt once, in place, and every unit
//! that refers to it is among those redone, so no route keeps an old one.
//!
//! Each unit keeps its slots in `virtual_hosts`; clusters keep theirs. A
//! unit or cluster that goes away leaves an unused slot (an empty virtual
//! host reached by no domain, a cluster with an empty name that no route
//! refers to), reused by the next one that needs a slot. When unused slots
//! pile up, or the config changes, or aliases change, or the catalog's log
//! does not cover the versions since the last compile, the table is built
//! again from scratch. Positions of virtual hosts and clusters therefore
//! differ from a full [`compile`](super::compile); what a request finds
//! (every domain's virtual host, its routes, their clusters and endpoints)
//! and the diagnostics do not. A property test checks that.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::{active_virtual_services, alias_diagnostics, ClusterStore, Compiler};
use crate::catalog::{Changed, Snapshot};
use crate::config::{ConfigSet, Diagnostic};
use crate::model::Hostname;
use crate::routes::table::{Cluster, LbPolicy, RouteAction, RouteTable, VirtualHost};

/// A part of the table compiled as one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum UnitKey {
    /// A service's virtual hosts.
    Service(Hostname),
    /// The virtual hosts of VirtualService hosts that are not services.
    /// Sorts last, as in a full compile.
    VirtualServiceHosts,
}

#[derive(Debug, Default)]
struct Unit {
    /// Its slots in `virtual_hosts`, in the order built.
    slots: Vec<usize>,
    /// The exact domains it registered, with their slots.
    domains: Vec<(Arc<str>, usize)>,
    /// The clusters its routes use (each once).
    clusters: Vec<String>,
    /// The names it looked up in the catalog.
    lookups: BTreeSet<Hostname>,
    diagnostics: Vec<Diagnostic>,
}

/// The previous compile's table and how it was cut into units.
#[derive(Debug)]
struct Built {
    catalog_version: u64,
    config: Arc<ConfigSet>,
    virtual_hosts: Vec<Arc<VirtualHost>>,
    free_hosts: Vec<usize>,
    exact: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    wildcards: Vec<(String, usize)>,
    store: ClusterStore,
    /// How many units use each cluster.
    cluster_refs: HashMap<String, usize>,
    units: BTreeMap<UnitKey, Unit>,
    /// Name looked up → the units that looked it up.
    dependents: HashMap<Hostname, BTreeSet<UnitKey>>,
}

/// Compiles route tables, each from the previous one when it can.
#[derive(Debug, Default)]
pub struct IncrementalCompiler {
    built: Option<Built>,
    /// What the last call did.
    last: Option<Pass>,
}

/// What one [`IncrementalCompiler::compile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Built from scratch (else from the previous table).
    pub full: bool,
    /// Units (services, plus the VirtualServices' own hosts) compiled.
    pub units: usize,
    /// Of the time taken, copying out the table (its vectors and domain map).
    pub copy: std::time::Duration,
}

impl IncrementalCompiler {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the last compile did.
    pub fn last_pass(&self) -> Option<Pass> {
        self.last
    }

    /// The table for `snapshot` and `config`: the same routing as
    /// [`compile`](super::compile) gives, with the same diagnostics.
    pub fn compile(
        &mut self,
        snapshot: &Snapshot,
        config: &Arc<ConfigSet>,
        version: u64,
    ) -> (RouteTable, Vec<Diagnostic>) {
        let changed = match &self.built {
            Some(b) if Arc::ptr_eq(&b.config, config) && !b.crowded() => {
                snapshot.changed_since(b.catalog_version)
            }
            _ => Changed::Everything,
        };
        let (mut built, affected, full) = match (self.built.take(), changed) {
            (Some(mut b), Changed::Services(hosts)) => {
                let affected = b.affected(snapshot, &hosts);
                b.store.stale = Some(Arc::new(hosts));
                (b, affected, false)
            }
            _ => {
                let mut b = Built::empty(config.clone());
                let mut affected: BTreeSet<UnitKey> = snapshot
                    .services
                    .keys()
                    .map(|h| UnitKey::Service(h.clone()))
                    .collect();
                affected.insert(UnitKey::VirtualServiceHosts);
                b.store.stale = None;
                (b, affected, true)
            }
        };
        let units = affected.len();
        built.catalog_version = snapshot.version;
        for key in affected {
            built.redo(snapshot, config, key);
        }
        built.store.stale = None;
        built.store.fresh.clear();
        let start = std::time::Instant::now();
        let out = built.table(snapshot, version);
        self.last = Some(Pass {
            full,
            units,
            copy: start.elapsed(),
        });
        self.built = Some(built);
        out
    }
}

impl Built {
    fn empty(config: Arc<ConfigSet>) -> Self {
        Self {
            catalog_version: 0,
            config,
            virtual_hosts: Vec::new(),
            free_hosts: Vec::new(),
            exact: HashMap::default(),
            wildcards: Vec::new(),
            store: ClusterStore::default(),
            cluster_refs: HashMap::new(),
            units: BTreeMap::new(),
            dependents: HashMap::new(),
        }
    }

    /// Too many unused slots: better to start over.
    fn crowded(&self) -> bool {
        let unused = self.free_hosts.len() + self.store.free.len();
        let slots = self.virtual_hosts.len() + self.store.slots.len();
        unused > 64 + slots / 4
    }

    /// The units to redo when `hosts` changed: theirs, and every unit that
    /// looked up one of their names (before or after the change).
    fn affected(&self, snapshot: &Snapshot, hosts: &BTreeSet<Hostname>) -> BTreeSet<UnitKey> {
        let mut out = BTreeSet::new();
        for h in hosts {
            let key = UnitKey::Service(h.clone());
            if self.units.contains_key(&key) || snapshot.services.contains_key(h) {
                out.insert(key);
            }
            // Aliases are unchanged (else this is no incremental pass), so
            // the snapshot's are the ones looked up before too.
            let aliases = snapshot.services.get(h).map(|s| s.aliases.clone());
            let names = std::iter::once(h).chain(aliases.iter().flatten());
            for name in names {
                if let Some(units) = self.dependents.get(name) {
                    out.extend(units.iter().cloned());
                }
            }
        }
        out
    }

    /// Compiles one unit again and puts it in place of its previous version.
    fn redo(&mut self, snapshot: &Snapshot, config: &ConfigSet, key: UnitKey) {
        let old = self.units.remove(&key).unwrap_or_default();
        let store = std::mem::take(&mut self.store);
        let mut c = Compiler::new(snapshot, config, store);
        let active = active_virtual_services(config);
        let present = match &key {
            UnitKey::Service(h) => match snapshot.services.get(h) {
                Some(svc) => {
                    c.rule_conflicts(svc);
                    let claim = c.claim(svc, &active);
                    c.service_hosts(svc, claim);
                    for (domain, index) in std::mem::take(&mut c.alias_domains) {
                        c.domain(domain, index);
                    }
                    true
                }
                None => false,
            },
            UnitKey::VirtualServiceHosts => {
                for vs in &active {
                    c.virtual_service_hosts(vs);
                }
                true
            }
        };
        self.store = std::mem::take(&mut c.store);

        // Forget the old version's domains (unless a unit redone before
        // this one has taken them: a VirtualService host that is now a
        // service) and dependencies.
        for (d, slot) in &old.domains {
            if self.exact.get(d) == Some(slot) {
                self.exact.remove(d);
            }
        }
        for name in &old.lookups {
            if let Some(units) = self.dependents.get_mut(name) {
                units.remove(&key);
                if units.is_empty() {
                    self.dependents.remove(name);
                }
            }
        }

        // Slots: the old version's first, then unused ones, then new ones.
        let mut spare = old.slots.into_iter();
        let mut slots = Vec::with_capacity(c.table.virtual_hosts.len());
        for vh in c.table.virtual_hosts.drain(..) {
            let slot = spare
                .next()
                .or_else(|| self.free_hosts.pop())
                .unwrap_or(self.virtual_hosts.len());
            match self.virtual_hosts.get_mut(slot) {
                Some(s) => *s = vh,
                None => self.virtual_hosts.push(vh),
            }
            slots.push(slot);
        }
        for slot in spare {
            self.virtual_hosts[slot] = unused_host();
            self.free_hosts.push(slot);
        }
        let mut domains = Vec::with_capacity(c.table.exact.len());
        for (domain, local) in c.table.exact.drain() {
            self.exact.insert(domain.clone(), slots[local]);
            domains.push((domain, slots[local]));
        }
        if key == UnitKey::VirtualServiceHosts {
            self.wildcards = c
                .table
                .wildcards
                .drain(..)
                .map(|(suffix, local)| (suffix, slots[local]))
                .collect();
            self.wildcards
                .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        }

        // Clusters: count the new version's uses before dropping the old's.
        let clusters = used_clusters(slots.iter().map(|&s| &self.virtual_hosts[s]));
        for name in &clusters {
            *self.cluster_refs.entry(name.clone()).or_default() += 1;
        }
        for name in &old.clusters {
            self.release_cluster(name);
        }

        if !present {
            return;
        }
        let lookups: BTreeSet<Hostname> = c.lookups.drain(..).collect();
        for name in &lookups {
            self.dependents
                .entry(name.clone())
                .or_default()
                .insert(key.clone());
        }
        self.units.insert(
            key,
            Unit {
                slots,
                domains,
                clusters,
                lookups,
                diagnostics: std::mem::take(&mut c.diagnostics),
            },
        );
    }

    /// One use of a cluster fewer; an unused cluster gives up its slot.
    fn release_cluster(&mut self, name: &str) {
        let Some(n) = self.cluster_refs.get_mut(name) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.cluster_refs.remove(name);
        if let Some(slot) = self.store.by_name.remove(name) {
            self.store.slots[slot] = unused_cluster(slot);
            self.store.free.push(slot);
        }
    }

    /// The table as it stands: its vectors and domain map are copied (one
    /// pointer or index per entry); the virtual hosts and clusters are shared.
    fn table(&self, snapshot: &Snapshot, version: u64) -> (RouteTable, Vec<Diagnostic>) {
        let table = RouteTable {
            version,
            catalog_version: snapshot.version,
            virtual_hosts: self.virtual_hosts.clone(),
            exact: self.exact.clone(),
            wildcards: self.wildcards.clone(),
            clusters: self.store.slots.clone(),
        };
        // In a full compile's order: alias conflicts, then each unit's, each once.
        let mut seen = HashSet::new();
        let diagnostics = alias_diagnostics(snapshot)
            .chain(
                self.units
                    .values()
                    .flat_map(|u| u.diagnostics.iter().cloned()),
            )
            .filter(|d| seen.insert(d.clone()))
            .collect();
        (table, diagnostics)
    }
}

/// The clusters a unit's routes forward or mirror to, each once.
fn used_clusters<'a>(hosts: impl Iterator<Item = &'a Arc<VirtualHost>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for vh in hosts {
        for r in &vh.routes {
            let targets = match &r.action {
                RouteAction::Forward(split) => split.targets.iter().map(|t| &t.cluster).collect(),
                _ => Vec::new(),
            };
            for c in targets
                .into_iter()
                .chain(r.mirrors.iter().map(|m| &m.cluster))
            {
                if !out.contains(&c.name) {
                    out.push(c.name.clone());
                }
            }
        }
    }
    out
}

/// The placeholder of an unused virtual host slot.
fn unused_host() -> Arc<VirtualHost> {
    Arc::new(VirtualHost {
        name: String::new(),
        domains: Vec::new(),
        routes: Vec::new(),
    })
}

/// The placeholder of an unused cluster slot: no name, no endpoints.
fn unused_cluster(index: usize) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: String::new(),
        index,
        // A valid constant name: `new` cannot fail on it.
        service: Hostname::new("unused.invalid").unwrap_or_else(|_| unreachable!()),
        subset: None,
        selector: Default::default(),
        port: crate::model::ServicePort {
            name: String::new(),
            number: 0,
            protocol: crate::model::Protocol::Http,
        },
        lb: LbPolicy::RoundRobin,
        policy: Default::default(),
        endpoints: Vec::new(),
        excluded: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
