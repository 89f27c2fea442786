//! What the health checker knows about each probed endpoint, for explain
//! and metrics.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use parking_lot::RwLock;

/// The active check's verdict on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No verdict yet (routable): fewer results than a threshold so far.
    Unchecked,
    Passing,
    /// Left out of balancing while other endpoints are in.
    Failing,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Unchecked => "unchecked",
            Verdict::Passing => "passing",
            Verdict::Failing => "failing",
        })
    }
}

/// How one probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Pass,
    /// Failed, and why (`connect: connection refused`, `status 503`,
    /// `timed out after 1s`, `NOT_SERVING`).
    Fail(String),
}

impl ProbeOutcome {
    /// The probe passed.
    pub fn passed(&self) -> bool {
        matches!(self, ProbeOutcome::Pass)
    }
}

/// One probed endpoint's state.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointHealth {
    /// The check probing it (`http reviews/v2:9080`).
    pub check: String,
    pub verdict: Verdict,
    /// The last probe's outcome; `None` before the first one ends.
    pub last: Option<ProbeOutcome>,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
    /// When the last probe ended.
    pub last_probe: Option<SystemTime>,
    /// Probes finished since the endpoint was first checked.
    pub probes: u64,
}

/// Every endpoint the checker probes, by address (`ip:port`).
#[derive(Debug, Default)]
pub struct HealthBoard {
    endpoints: RwLock<BTreeMap<String, EndpointHealth>>,
}

impl HealthBoard {
    /// The state of the endpoint at `authority`, if it is probed.
    pub fn get(&self, authority: &str) -> Option<EndpointHealth> {
        self.endpoints.read().get(authority).cloned()
    }

    /// Every probed endpoint, ordered by address.
    pub fn all(&self) -> Vec<(String, EndpointHealth)> {
        self.endpoints
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(super) fn put(&self, authority: &str, health: EndpointHealth) {
        self.endpoints.write().insert(authority.to_string(), health);
    }

    pub(super) fn remove(&self, authority: &str) {
        self.endpoints.write().remove(authority);
    }
}
