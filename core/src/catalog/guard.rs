//! The mass-deregistration guard.
//!
//! A registry that suddenly removes most of a service's endpoints (or all of
//! them, or answers an empty list after having data) is more often broken
//! than right. Per source and service, when one change would remove more than
//! `max_removal_share` of the endpoints being served, or leave none, the
//! removed endpoints are *held*: still served, for `grace`, with a warning.
//! If the registry gives them back meanwhile, the hold ends; if not, they are
//! released when the grace period is over. Gradual removals pass untouched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::model::{Endpoint, Hostname, SourceId};

/// Guard settings of one source. `None` at the source means disabled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardSettings {
    /// A change removing more than this share (0..1) of a service's served
    /// endpoints is held. Emptying a service always is.
    pub max_removal_share: f64,
    /// How long removed endpoints are held before the removal is applied.
    pub grace: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            max_removal_share: 0.5,
            grace: Duration::from_secs(60),
        }
    }
}

/// An endpoint the registry removed but the guard still serves.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Held {
    pub endpoint: Arc<Endpoint>,
    pub since: SystemTime,
}

/// Served endpoints (registry's ∪ held) of `services`, by id, before a change.
/// `index` lists the ids in `desired` of each service.
pub(super) fn served_by_service(
    desired: &BTreeMap<Arc<str>, Arc<Endpoint>>,
    index: &HashMap<Hostname, BTreeSet<Arc<str>>>,
    held: &BTreeMap<Arc<str>, Held>,
    services: &[Hostname],
) -> HashMap<Hostname, BTreeMap<Arc<str>, Arc<Endpoint>>> {
    let mut out: HashMap<Hostname, BTreeMap<Arc<str>, Arc<Endpoint>>> = services
        .iter()
        .map(|s| (s.clone(), BTreeMap::new()))
        .collect();
    // Most changes (upserts) can remove nothing: look nothing up.
    if out.is_empty() {
        return out;
    }
    for (service, m) in &mut out {
        let ids = index.get(service).into_iter().flatten();
        for id in ids {
            if let Some(e) = desired.get(id) {
                m.insert(id.clone(), e.clone());
            }
        }
    }
    for (id, h) in held {
        if let Some(m) = out.get_mut(&h.endpoint.service) {
            m.insert(id.clone(), h.endpoint.clone());
        }
    }
    out
}

/// After a change to `desired`: holds mass removals, releases holds the
/// registry no longer justifies. Returns whether the held set changed.
pub(super) fn reconcile(
    settings: Option<&GuardSettings>,
    source: &SourceId,
    before: HashMap<Hostname, BTreeMap<Arc<str>, Arc<Endpoint>>>,
    desired: &BTreeMap<Arc<str>, Arc<Endpoint>>,
    index: &HashMap<Hostname, BTreeSet<Arc<str>>>,
    held: &mut BTreeMap<Arc<str>, Held>,
    now: SystemTime,
) -> bool {
    let mut changed = false;
    // What the registry lists again is no longer held.
    let before_len = held.len();
    held.retain(|id, _| !desired.contains_key(id));
    changed |= held.len() != before_len;
    for (service, served) in before {
        if served.is_empty() {
            continue;
        }
        let remaining = index.get(&service).map_or(0, BTreeSet::len);
        let removed: Vec<(&Arc<str>, &Arc<Endpoint>)> = served
            .iter()
            .filter(|(id, _)| !desired.contains_key(*id))
            .collect();
        if removed.is_empty() {
            continue;
        }
        let mass = settings.is_some_and(|g| {
            remaining == 0 || removed.len() as f64 / served.len() as f64 > g.max_removal_share
        });
        if mass {
            let new = removed
                .iter()
                .filter(|(id, _)| !held.contains_key(*id))
                .count();
            if new > 0 {
                tracing::warn!(
                    source = %source,
                    service = %service,
                    removed = removed.len(),
                    served = served.len(),
                    grace = ?settings.map(|g| g.grace),
                    "registry update would remove too many endpoints; serving the previous set for the grace period"
                );
            }
            for (id, e) in removed {
                held.entry(id.clone()).or_insert_with(|| {
                    changed = true;
                    Held {
                        endpoint: e.clone(),
                        since: now,
                    }
                });
            }
        } else {
            let before_len = held.len();
            held.retain(|_, h| h.endpoint.service != service);
            changed |= held.len() != before_len;
        }
    }
    changed
}

/// Releases holds older than the grace period. Returns whether any ended.
pub(super) fn expire(
    settings: Option<&GuardSettings>,
    source: &SourceId,
    held: &mut BTreeMap<Arc<str>, Held>,
    now: SystemTime,
) -> bool {
    let grace = settings.map_or(Duration::ZERO, |g| g.grace);
    let before = held.len();
    held.retain(|_, h| {
        let keep = h.since + grace > now;
        if !keep {
            tracing::warn!(
                source = %source,
                service = %h.endpoint.service,
                endpoint = %h.endpoint.provenance.native_id,
                "guard grace period over; applying the registry's removal"
            );
        }
        keep
    });
    held.len() != before
}

/// When the earliest hold ends.
pub(super) fn next_expiry(
    settings: Option<&GuardSettings>,
    held: &BTreeMap<Arc<str>, Held>,
) -> Option<SystemTime> {
    let grace = settings.map_or(Duration::ZERO, |g| g.grace);
    held.values().map(|h| h.since + grace).min()
}

#[cfg(test)]
mod tests;
