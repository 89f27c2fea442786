//! What the adapter has told the catalog, as a [`State`]; what Eureka said,
//! as an [`Input`]; [`State::step`] says what to send and whether a full
//! fetch is needed.
//!
//! ```text
//!          Full: Reset + Healthy/Degraded
//!   Empty ───────────────────────────────► Synced{instances} ◄──┐ Delta, hashcode matches:
//!    ▲ │ Delta: Refetch                     │   │  │            │ the differences as
//!    │ └─ (nothing to apply it to)          │   │  └────────────┘ upserts and removes
//!    │                                      │   │
//!    │   Failed: Error (last good view      │   │ Delta, hashcode differs: nothing sent,
//!    └──────────────── stays, stale) ───────┘   │ Refetch (a full fetch replaces the view)
//!                                               ▼
//!                                  Full: Reset (+ status)
//! ```
//!
//! A delta is applied to a copy of the instances first; only when the
//! reconcile hashcode of the result equals the server's `apps__hashcode` is
//! the copy kept and its differences sent. So a lost or partial delta never
//! reaches the catalog: the full fetch that follows replaces the view whole.

use std::collections::BTreeMap;

use anymesh_core::{Change, Endpoint, Hostname, Service, SourceStatus, SourceView, ViewMaps};

use crate::decode::{Action, Applications, Instance};
use crate::hashcode::reconcile_hashcode;
use crate::translate::Translator;

/// What the Eureka server (or the connection to it) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// `GET /apps` succeeded.
    Full(Applications),
    /// `GET /apps/delta` succeeded.
    Delta(Applications),
    /// Every server failed.
    Failed(String),
}

/// What [`State::step`] asks of the driver besides sending changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Poll the delta after the refresh interval.
    Poll,
    /// Fetch the full registry at once, for this reason.
    Refetch(String),
    /// Back off, then fetch the full registry.
    Backoff,
}

/// The adapter's side of the conversation with the catalog.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum State {
    /// Nothing fetched since the start or since the last failure.
    #[default]
    Empty,
    Synced(Synced),
}

/// The registry as the last full fetch plus the deltas since say.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Synced {
    /// Every instance by `<APP>/<id>`, whatever its status.
    pub instances: BTreeMap<String, Instance>,
    /// `versions__delta` of the last document applied.
    pub version: Option<String>,
    /// Instances of the last full fetch that could not be read.
    unreadable: Vec<String>,
    derived: Derived,
}

/// What the instances mean for the catalog.
#[derive(Debug, Clone, Default, PartialEq)]
struct Derived {
    services: BTreeMap<Hostname, Service>,
    endpoints: BTreeMap<String, Endpoint>,
    /// Instances (or applications) without an endpoint, with why.
    invalid: BTreeMap<String, String>,
}

/// How many skipped instances a status message names.
const NAMED_INVALID: usize = 3;

impl State {
    /// Whether a delta can be applied: a full fetch happened, the registry
    /// was not empty and its version is not `-1` (Netflix's client fetches
    /// in full otherwise).
    pub(crate) fn wants_delta(&self) -> bool {
        matches!(self, State::Synced(s)
            if !s.instances.is_empty() && s.version.as_deref().map(str::trim) != Some("-1"))
    }

    /// Folds one input in; returns the next state, the changes to send and
    /// what to do next.
    pub(crate) fn step(self, input: Input, tr: &Translator) -> (State, Vec<Change>, Next) {
        match (self, input) {
            (_, Input::Full(apps)) => {
                let mut instances = BTreeMap::new();
                for inst in apps.instances {
                    instances.insert(inst.key(), inst);
                }
                let derived = derive(&instances, tr);
                let view = SourceView {
                    services: derived.services.values().cloned().collect(),
                    endpoints: derived.endpoints.values().cloned().collect(),
                };
                let synced = Synced {
                    instances,
                    version: apps.version_delta,
                    unreadable: apps.problems,
                    derived,
                };
                let status = synced.status();
                (
                    State::Synced(synced),
                    vec![Change::Reset(view), status],
                    Next::Poll,
                )
            }
            (State::Synced(synced), Input::Delta(delta)) => synced.apply(delta, tr),
            (State::Empty, Input::Delta(_)) => (
                State::Empty,
                Vec::new(),
                Next::Refetch("no full fetch to apply a delta to".into()),
            ),
            (_, Input::Failed(message)) => (
                State::Empty,
                vec![Change::Status(SourceStatus::Error { message })],
                Next::Backoff,
            ),
        }
    }
}

impl Synced {
    fn apply(self, delta: Applications, tr: &Translator) -> (State, Vec<Change>, Next) {
        let mut instances = self.instances.clone();
        for inst in delta.instances {
            match inst.action {
                Some(Action::Deleted) => {
                    instances.remove(&inst.key());
                }
                // ADDED and MODIFIED both replace the instance.
                _ => {
                    instances.insert(inst.key(), inst);
                }
            }
        }
        let local = reconcile_hashcode(instances.values().map(|i| &i.status));
        if delta.hashcode.as_deref() != Some(local.as_str()) {
            let reason = format!(
                "the local apps hashcode {local:?} differs from the server's {:?}",
                delta.hashcode.unwrap_or_default()
            );
            return (State::Synced(self), Vec::new(), Next::Refetch(reason));
        }
        let derived = derive(&instances, tr);
        let mut out = diff(&self.derived, &derived);
        let next = Synced {
            instances,
            version: delta.version_delta.or(self.version),
            unreadable: self.unreadable,
            derived,
        };
        if next.derived.invalid != self.derived.invalid {
            out.push(next.status());
        }
        (State::Synced(next), out, Next::Poll)
    }

    /// `Healthy`, or `Degraded` naming the first few instances skipped.
    fn status(&self) -> Change {
        let all: Vec<&str> = self
            .unreadable
            .iter()
            .chain(self.derived.invalid.values())
            .map(String::as_str)
            .collect();
        if all.is_empty() {
            return Change::Status(SourceStatus::Healthy);
        }
        let n = all.len();
        let more = match n.saturating_sub(NAMED_INVALID) {
            0 => String::new(),
            rest => format!("; and {rest} more"),
        };
        let plural = if n == 1 { "" } else { "s" };
        let named = all[..n.min(NAMED_INVALID)].join("; ");
        Change::Status(SourceStatus::Degraded {
            message: format!("{n} eureka instance{plural} skipped: {named}{more}"),
        })
    }
}

fn derive(instances: &BTreeMap<String, Instance>, tr: &Translator) -> Derived {
    let mut out = Derived::default();
    let mut by_app: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for inst in instances.values() {
        by_app.entry(inst.app.as_str()).or_default().push(inst);
    }
    for (app, insts) in by_app {
        match tr.service(app, insts.iter().copied()) {
            Ok(svc) => {
                out.services.insert(svc.hostname.clone(), svc);
            }
            Err(e) => {
                for inst in insts {
                    out.invalid
                        .insert(inst.key(), format!("instance {}: {e}", inst.key()));
                }
                continue;
            }
        }
        for inst in insts {
            match tr.endpoint(inst) {
                Ok(ep) => {
                    out.endpoints.insert(inst.key(), ep);
                }
                Err(e) => {
                    out.invalid
                        .insert(inst.key(), format!("instance {}: {e}", inst.key()));
                }
            }
        }
    }
    out
}

/// The changes that turn `old` into `new` ([`ViewMaps::diff`]).
fn diff(old: &Derived, new: &Derived) -> Vec<Change> {
    fn maps(d: &Derived) -> ViewMaps<'_> {
        ViewMaps {
            services: &d.services,
            endpoints: &d.endpoints,
        }
    }
    maps(old).diff(&maps(new))
}

#[cfg(test)]
mod tests;
