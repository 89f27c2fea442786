//! What the adapter has told the catalog, as a [`State`]; what etcd said, as
//! an [`Input`]; [`State::step`] says what to send.
//!
//! ```text
//!            Listed: Reset + Healthy (or Error naming invalid keys)
//!   Empty ─────────────────────────────────────────────► Watching{revision, endpoints, invalid}
//!    ▲ │ Failed: Error                                     │   ▲  │ Events: Upsert/Remove, and a
//!    │ └──► Empty (backoff, reconnect, list)               │   │  │ status when the set of invalid
//!    │                                                     │   └──┘ keys changes
//!    │           Failed: Error (the last good view stays)  │
//!    ├─────────────────────────────────────────────────────┤
//!    │                                                     │ Compacted: nothing yet
//!    │   Listed: Reset (+ status)                          ▼
//!    └─────────────── Relist ◄─────────────────────────────┘
//!                 (list again at once, no backoff)
//! ```
//!
//! A failure never sends a `Reset`: the catalog keeps the last good view,
//! marked stale, until the next successful list. Every list, the first and
//! every one after a reconnect or a compaction, sends a full `Reset`, so no
//! change made while the adapter was not watching is ever missed.

use std::collections::BTreeMap;

use anymesh_core::{Change, Endpoint, EndpointKey, SourceStatus, SourceView};

use crate::decode::Decoder;

/// One key and its value as etcd returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Put(Kv),
    Delete { key: Vec<u8> },
}

/// What etcd (or the connection to it) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// A prefix get succeeded at `revision`.
    Listed { revision: i64, kvs: Vec<Kv> },
    /// One watch response: its events happened together at `revision`.
    Events { revision: i64, events: Vec<Event> },
    /// The watch (or a ranged read) needs history etcd has compacted away.
    Compacted { compact_revision: i64 },
    /// Connecting, listing or watching failed.
    Failed(String),
}

/// The adapter's side of the conversation with the catalog.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum State {
    /// Nothing listed since the start or since the last failure.
    #[default]
    Empty,
    /// Listed at some revision and watching from the next.
    Watching(Synced),
    /// The watch window was compacted: list again at once.
    Relist,
}

/// What one successful list plus the watch events since then say.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Synced {
    /// The revision of the last list or watch response applied.
    pub revision: i64,
    /// Valid endpoints by key.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Keys whose values were rejected, with why.
    pub invalid: BTreeMap<String, String>,
}

/// How many invalid keys a status message names.
const NAMED_INVALID_KEYS: usize = 3;

impl State {
    /// The revision to watch from, when watching.
    pub(crate) fn watch_from(&self) -> Option<i64> {
        match self {
            State::Watching(s) => Some(s.revision + 1),
            _ => None,
        }
    }

    /// Folds one input in; returns the next state and the changes to send.
    pub(crate) fn step(self, input: Input, decoder: &Decoder) -> (State, Vec<Change>) {
        match (self, input) {
            (_, Input::Listed { revision, kvs }) => {
                let mut synced = Synced {
                    revision,
                    ..Synced::default()
                };
                for kv in kvs {
                    synced.put(kv, decoder);
                }
                let view = SourceView {
                    services: Vec::new(),
                    endpoints: synced.endpoints.values().cloned().collect(),
                };
                let status = synced.status();
                (State::Watching(synced), vec![Change::Reset(view), status])
            }
            (State::Watching(mut synced), Input::Events { revision, events }) => {
                let invalid_before = synced.invalid.clone();
                let mut out = Vec::new();
                for event in events {
                    out.extend(synced.apply(event, decoder));
                }
                synced.revision = synced.revision.max(revision);
                if synced.invalid != invalid_before {
                    out.push(synced.status());
                }
                (State::Watching(synced), out)
            }
            // Events without a list to apply them to: the driver relists.
            (state, Input::Events { .. }) => (state, Vec::new()),
            (_, Input::Compacted { .. }) => (State::Relist, Vec::new()),
            (_, Input::Failed(message)) => (
                State::Empty,
                vec![Change::Status(SourceStatus::Error { message })],
            ),
        }
    }
}

impl Synced {
    /// Records a put; returns the endpoint when it is new or changed, or the
    /// key when a previously valid endpoint is gone (a value now invalid).
    fn put(&mut self, kv: Kv, decoder: &Decoder) -> Option<Change> {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        match decoder.decode(&kv.key, &kv.value) {
            Ok(Some(ep)) => {
                self.invalid.remove(&key);
                if self.endpoints.get(&key) == Some(&ep) {
                    return None;
                }
                self.endpoints.insert(key, ep.clone());
                Some(Change::UpsertEndpoint(ep))
            }
            Ok(None) => {
                self.invalid.remove(&key);
                self.remove(key)
            }
            Err(e) => {
                if !self.invalid.contains_key(&key) {
                    tracing::warn!(error = %e, "etcd value skipped");
                }
                self.invalid.insert(key.clone(), e.to_string());
                self.remove(key)
            }
        }
    }

    fn remove(&mut self, key: String) -> Option<Change> {
        let ep = self.endpoints.remove(&key)?;
        Some(Change::RemoveEndpoint(EndpointKey {
            source: ep.provenance.source,
            native_id: key.into(),
        }))
    }

    fn apply(&mut self, event: Event, decoder: &Decoder) -> Option<Change> {
        match event {
            Event::Put(kv) => self.put(kv, decoder),
            Event::Delete { key } => {
                let key = String::from_utf8_lossy(&key).into_owned();
                self.invalid.remove(&key);
                self.remove(key)
            }
        }
    }

    /// `Healthy`, or `Degraded` naming the first few invalid keys (the
    /// registry is reachable and the rest of its view is current).
    fn status(&self) -> Change {
        if self.invalid.is_empty() {
            return Change::Status(SourceStatus::Healthy);
        }
        let n = self.invalid.len();
        let named: Vec<&str> = self
            .invalid
            .values()
            .take(NAMED_INVALID_KEYS)
            .map(String::as_str)
            .collect();
        let more = match n.saturating_sub(NAMED_INVALID_KEYS) {
            0 => String::new(),
            rest => format!("; and {rest} more"),
        };
        let plural = if n == 1 { "" } else { "s" };
        Change::Status(SourceStatus::Degraded {
            message: format!("{n} etcd key{plural} skipped: {}{more}", named.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests;
