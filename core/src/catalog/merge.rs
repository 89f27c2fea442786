//! Merging the sources into a [`Snapshot`], whole or one service at a time.
//!
//! [`CatalogState::snapshot`] merges every service. [`CatalogState::publish`]
//! merges only the services a change touched since the last publish (the
//! catalog's `dirty` set), and shares every other service with the previous
//! snapshot: [`Snapshot::services`] is a persistent map, so a new version
//! costs the changed services plus O(log n) per change, not the catalog.
//! Both go through [`CatalogState::merge_host`], so they agree; a property
//! test checks that they do.
//!
//! Aliases are the one cross-service part: the grants are recomputed from
//! the claims of the services that declare aliases (usually few), and when
//! they change every claimant is re-merged and the [`ChangeLog`] says
//! "aliases changed", which makes the route compiler start over.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::{
    AliasConflict, AliasLoss, CatalogState, MergedService, Shadowed, Snapshot, SourceState,
};
use crate::model::{Endpoint, EndpointKey, Hostname, Protocol, ServicePort, SourceId};

/// How many versions of changes a snapshot remembers.
const LOG_VERSIONS: usize = 32;

/// One service's contributions, before the alias grants are known.
#[derive(Default)]
struct Acc {
    /// Each alias with the index of the first source declaring it.
    aliases: Vec<(Hostname, usize)>,
    ports: Vec<ServicePort>,
    sources: Vec<SourceId>,
    endpoints: Vec<Arc<Endpoint>>,
    seen: HashMap<(String, Vec<u16>), EndpointKey>,
    shadowed: Vec<Shadowed>,
}

/// What the last [`CatalogState::publish`] built.
#[derive(Debug, Clone)]
pub(super) struct Published {
    version: u64,
    services: imbl::OrdMap<Hostname, Arc<MergedService>>,
    /// The alias claims of every service that declares aliases.
    claims: BTreeMap<Hostname, Vec<(Hostname, usize)>>,
    aliases: HashMap<Hostname, Hostname>,
    conflicts: Vec<AliasConflict>,
    changes: ChangeLog,
}

/// What changed between two snapshot versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Only these services (hostnames; added, removed or modified).
    Services(BTreeSet<Hostname>),
    /// Something beyond single services (alias grants), or versions the log
    /// no longer covers: treat everything as changed.
    Everything,
}

/// The services each recent version changed, oldest first.
#[derive(Debug, Clone, Default)]
pub struct ChangeLog {
    /// (version, what changed from the version before it); `None`: everything.
    entries: VecDeque<(u64, Option<Arc<BTreeSet<Hostname>>>)>,
}

impl ChangeLog {
    fn push(&mut self, version: u64, changed: Option<Arc<BTreeSet<Hostname>>>) {
        if self.entries.back().is_some_and(|(v, _)| *v + 1 != version) {
            self.entries.clear();
        }
        self.entries.push_back((version, changed));
        while self.entries.len() > LOG_VERSIONS {
            self.entries.pop_front();
        }
    }
}

impl Snapshot {
    /// What changed since version `since` of the same catalog (`since` <
    /// this version): the services, when the log still covers that range.
    pub fn changed_since(&self, since: u64) -> Changed {
        if since == self.version {
            return Changed::Services(BTreeSet::new());
        }
        let covered = self
            .changes
            .entries
            .front()
            .is_some_and(|(v, _)| *v <= since + 1)
            && self
                .changes
                .entries
                .back()
                .is_some_and(|(v, _)| *v == self.version)
            && since < self.version;
        if !covered {
            return Changed::Everything;
        }
        let mut out = BTreeSet::new();
        for (v, hosts) in &self.changes.entries {
            if *v <= since {
                continue;
            }
            match hosts {
                Some(h) => out.extend(h.iter().cloned()),
                None => return Changed::Everything,
            }
        }
        Changed::Services(out)
    }
}

impl CatalogState {
    /// Merges every source into one immutable snapshot, from scratch.
    pub fn snapshot(&self, version: u64) -> Snapshot {
        self.merge_all(version).0
    }

    /// The snapshot, and the alias claims of every service declaring aliases.
    fn merge_all(&self, version: u64) -> (Snapshot, BTreeMap<Hostname, Vec<(Hostname, usize)>>) {
        let hosts: BTreeSet<&Hostname> = self.sources.iter().flat_map(|s| s.hosts()).collect();
        let mut accs: BTreeMap<Hostname, Acc> = BTreeMap::new();
        for host in hosts {
            if let Some(acc) = self.merge_host(host) {
                accs.insert(host.clone(), acc);
            }
        }
        let claims: BTreeMap<Hostname, Vec<(Hostname, usize)>> = accs
            .iter()
            .filter(|(_, a)| !a.aliases.is_empty())
            .map(|(h, a)| (h.clone(), a.aliases.clone()))
            .collect();
        let (aliases, alias_conflicts) =
            grant_aliases(&claims, |h| accs.contains_key(h), &self.sources);
        let services = accs
            .into_iter()
            .map(|(host, acc)| {
                let svc = finalize(host.clone(), acc, &aliases);
                (host, Arc::new(svc))
            })
            .collect();
        let snap = Snapshot {
            version,
            services,
            aliases,
            alias_conflicts,
            sources: self.sources.iter().map(|s| s.info.clone()).collect(),
            changes: ChangeLog::default(),
        };
        (snap, claims)
    }

    /// The next snapshot to publish: re-merges only the services changed
    /// since the last call and shares the rest with the previous snapshot.
    /// Equal to [`snapshot`](Self::snapshot), plus a [`ChangeLog`].
    pub fn publish(&mut self, version: u64) -> Snapshot {
        let dirty = std::mem::take(&mut self.dirty);
        let Some(mut p) = self.published.take() else {
            return self.publish_from_scratch(version);
        };
        let mut changed: BTreeSet<Hostname> = BTreeSet::new();
        let mut merged: BTreeMap<Hostname, Option<Acc>> = BTreeMap::new();
        for host in dirty {
            let acc = self.merge_host(&host);
            match acc.as_ref().filter(|a| !a.aliases.is_empty()) {
                Some(a) => p.claims.insert(host.clone(), a.aliases.clone()),
                None => p.claims.remove(&host),
            };
            merged.insert(host, acc);
        }
        let exists = |h: &Hostname| match merged.get(h) {
            Some(acc) => acc.is_some(),
            None => p.services.contains_key(h),
        };
        let (aliases, conflicts) = grant_aliases(&p.claims, exists, &self.sources);
        let aliases_changed = aliases != p.aliases || conflicts != p.conflicts;
        if aliases_changed {
            // A grant won or lost changes the claimant's alias list.
            let claimants: Vec<Hostname> = p
                .claims
                .keys()
                .chain(
                    p.services
                        .values()
                        .filter(|s| !s.aliases.is_empty())
                        .map(|s| &s.hostname),
                )
                .filter(|h| !merged.contains_key(*h))
                .cloned()
                .collect();
            for host in claimants {
                let acc = self.merge_host(&host);
                merged.insert(host, acc);
            }
        }
        for (host, acc) in merged {
            let new = acc.map(|acc| finalize(host.clone(), acc, &aliases));
            let same = match (&new, p.services.get(&host)) {
                (Some(n), Some(old)) => n == old.as_ref(),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            match new {
                Some(n) => p.services.insert(host.clone(), Arc::new(n)),
                None => p.services.remove(&host),
            };
            changed.insert(host);
        }
        if p.version + 1 == version {
            let entry = (!aliases_changed).then(|| Arc::new(changed));
            p.changes.push(version, entry);
        } else {
            p.changes = ChangeLog::default();
            p.changes.push(version, None);
        }
        p.version = version;
        p.aliases = aliases;
        p.conflicts = conflicts;
        let snap = Snapshot {
            version,
            services: p.services.clone(),
            aliases: p.aliases.clone(),
            alias_conflicts: p.conflicts.clone(),
            sources: self.sources.iter().map(|s| s.info.clone()).collect(),
            changes: p.changes.clone(),
        };
        self.published = Some(p);
        snap
    }

    fn publish_from_scratch(&mut self, version: u64) -> Snapshot {
        let (mut snap, claims) = self.merge_all(version);
        snap.changes.push(version, None);
        self.published = Some(Published {
            version,
            services: snap.services.clone(),
            claims,
            aliases: snap.aliases.clone(),
            conflicts: snap.alias_conflicts.clone(),
            changes: snap.changes.clone(),
        });
        snap
    }

    /// Everything every source says about `host`, in precedence order;
    /// `None` when no source declares it or has endpoints for it.
    fn merge_host(&self, host: &Hostname) -> Option<Acc> {
        fn add_source(acc: &mut Acc, id: &SourceId) {
            if !acc.sources.contains(id) {
                acc.sources.push(id.clone());
            }
        }
        let mut acc = Acc::default();
        let mut found = false;
        for (rank, src) in self.sources.iter().enumerate() {
            if let Some(svc) = src.services.get(host) {
                found = true;
                add_source(&mut acc, &src.info.source);
                for a in &svc.aliases {
                    if *a != svc.hostname && !acc.aliases.iter().any(|(b, _)| b == a) {
                        acc.aliases.push((a.clone(), rank));
                    }
                }
                for p in &svc.ports {
                    // The first (highest-precedence) source to declare a port number wins.
                    if !acc.ports.iter().any(|q| q.number == p.number) {
                        acc.ports.push(p.clone());
                    }
                }
            }
            for ep in src.served_of(host) {
                found = true;
                add_source(&mut acc, &src.info.source);
                let mut nums: Vec<u16> = ep.ports.iter().map(|p| p.number).collect();
                nums.sort_unstable();
                let key = ep.key();
                match acc.seen.get(&(ep.address.clone(), nums.clone())) {
                    Some(winner) if winner.source != key.source => {
                        acc.shadowed.push(Shadowed {
                            endpoint: key,
                            by: winner.clone(),
                        });
                    }
                    _ => {
                        acc.seen.insert((ep.address.clone(), nums), key);
                        acc.endpoints.push(ep.clone());
                    }
                }
            }
        }
        found.then_some(acc)
    }
}

/// The merged service, given every alias grant.
fn finalize(host: Hostname, acc: Acc, granted: &HashMap<Hostname, Hostname>) -> MergedService {
    let mut ports = acc.ports;
    if ports.is_empty() {
        // Endpoints without a service declaration: one implicit HTTP port.
        if let Some(n) = acc.endpoints.iter().find_map(|e| e.ports.first()) {
            ports.push(ServicePort {
                name: "http".into(),
                number: n.number,
                protocol: Protocol::Http,
            });
        }
    }
    let aliases = acc
        .aliases
        .into_iter()
        .map(|(a, _)| a)
        .filter(|a| granted.get(a) == Some(&host))
        .collect();
    MergedService {
        hostname: host,
        aliases,
        ports,
        sources: acc.sources,
        endpoints: acc.endpoints,
        shadowed: acc.shadowed,
    }
}

/// Gives each claimed alias to one service: never a name that is a service's
/// hostname (`is_host`); among several claimants, the lowest (source rank,
/// hostname). `claims` maps each hostname that declares aliases to them,
/// each with the index in `sources` of the first source declaring it.
/// Returns the alias map and every refused claim, sorted by alias then service.
fn grant_aliases(
    claims: &BTreeMap<Hostname, Vec<(Hostname, usize)>>,
    is_host: impl Fn(&Hostname) -> bool,
    sources: &[SourceState],
) -> (HashMap<Hostname, Hostname>, Vec<AliasConflict>) {
    let mut owners: HashMap<&Hostname, (usize, &Hostname)> = HashMap::new();
    for (host, aliases) in claims {
        for (a, rank) in aliases {
            if is_host(a) {
                continue;
            }
            let best = owners.entry(a).or_insert((*rank, host));
            if (*rank, host) < *best {
                *best = (*rank, host);
            }
        }
    }
    let mut conflicts = Vec::new();
    for (host, aliases) in claims {
        for (a, rank) in aliases {
            let loss = match owners.get(a) {
                Some((_, owner)) if *owner == host => continue,
                Some((_, owner)) => AliasLoss::ClaimedBy((*owner).clone()),
                None => AliasLoss::IsHostname,
            };
            conflicts.push(AliasConflict {
                alias: a.clone(),
                service: host.clone(),
                // `rank` indexes `sources`: it was enumerated from them.
                source: sources[*rank].info.source.clone(),
                loss,
            });
        }
    }
    conflicts.sort_by(|x, y| (&x.alias, &x.service).cmp(&(&y.alias, &y.service)));
    let map = owners
        .into_iter()
        .map(|(a, (_, host))| (a.clone(), host.clone()))
        .collect();
    (map, conflicts)
}
