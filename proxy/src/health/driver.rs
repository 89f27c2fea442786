//! The checker's one task: follow the routing, run probes when due, turn
//! their outcomes into verdicts.
//!
//! Each turn of the loop: look at the routing in force (at most every
//! [`REFRESH`], and only rebuilds when the table changed), start the probes
//! that are due, then wait for the next one due, a probe's outcome, or the
//! stop signal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anymesh_core::routes::RouteTable;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::board::{EndpointHealth, HealthBoard, ProbeOutcome, Verdict};
use super::probe::{Prober, Target};
use super::tally::Tally;
use super::HealthCheck;
use crate::balance::{random_below, ActiveHealth, EndpointState};
use crate::router::Router;

/// How often the routing is looked at for new or gone endpoints.
pub(super) const REFRESH: Duration = Duration::from_millis(500);

/// One probed address.
struct Entry {
    /// Index into the checks.
    check: usize,
    /// The service hostname of the first cluster the check matched.
    host: String,
    /// This address's state in every cluster of the table holding it.
    states: Vec<Arc<EndpointState>>,
    tally: Tally,
    health: EndpointHealth,
    due: Instant,
    /// A probe is running (or waiting for a permit).
    running: bool,
    /// Tells a late outcome for a forgotten and re-added address apart.
    generation: u64,
}

/// An outcome coming back from a probe task.
struct Finished {
    authority: String,
    generation: u64,
    outcome: ProbeOutcome,
}

/// The checker's state; [`run`](Self::run) is its task.
pub(super) struct Driver {
    checks: Arc<[HealthCheck]>,
    router: Arc<Router>,
    board: Arc<HealthBoard>,
    prober: Arc<dyn Prober>,
    permits: Arc<Semaphore>,
    entries: HashMap<String, Entry>,
    /// The table the entries were built from.
    table: Option<Arc<RouteTable>>,
    probes: JoinSet<Finished>,
    generation: u64,
}

impl Driver {
    pub(super) fn new(
        checks: Vec<HealthCheck>,
        max_concurrent_probes: usize,
        router: Arc<Router>,
        board: Arc<HealthBoard>,
        prober: Arc<dyn Prober>,
    ) -> Self {
        Self {
            checks: checks.into(),
            router,
            board,
            prober,
            permits: Arc::new(Semaphore::new(max_concurrent_probes.max(1))),
            entries: HashMap::new(),
            table: None,
            probes: JoinSet::new(),
            generation: 0,
        }
    }

    /// Runs until `stop` turns true or its sender is gone; running probes
    /// are dropped then.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.checks.is_empty() {
            return;
        }
        tracing::info!(checks = self.checks.len(), "active health checks started");
        let mut next_refresh = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_refresh {
                self.refresh(now);
                next_refresh = now + REFRESH;
            }
            self.start_due(now);
            let wake = self
                .entries
                .values()
                .filter(|e| !e.running)
                .map(|e| e.due)
                .min()
                .map_or(next_refresh, |due| due.min(next_refresh));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                Some(done) = self.probes.join_next(), if !self.probes.is_empty() => {
                    if let Ok(finished) = done {
                        self.record(finished);
                    }
                }
                r = stop.wait_for(|s| *s) => {
                    let _ = r;
                    return;
                }
            }
        }
    }

    /// Follows a new route table: addresses of clusters some check applies
    /// to get an entry (the first such check in the list probes them),
    /// entries of addresses no longer there go, and every entry's verdict is
    /// written to the states of the new table.
    fn refresh(&mut self, now: Instant) {
        let routing = self.router.current();
        if self
            .table
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &routing.table))
        {
            return;
        }
        // Address → (check, service host), first matching check first.
        let mut wanted: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
        for (i, check) in self.checks.iter().enumerate() {
            for cluster in routing
                .table
                .clusters
                .iter()
                .filter(|c| check.applies_to(c))
            {
                for ep in &cluster.endpoints {
                    wanted
                        .entry(ep.authority.as_str())
                        .or_insert((i, cluster.service.as_str()));
                }
            }
        }
        // Every cluster's state for each wanted address.
        let mut states: HashMap<&str, Vec<Arc<EndpointState>>> = HashMap::new();
        for (cluster, lb) in routing.table.clusters.iter().zip(&routing.lbs) {
            for (i, ep) in cluster.endpoints.iter().enumerate() {
                if !wanted.contains_key(ep.authority.as_str()) {
                    continue;
                }
                if let Some(state) = lb.endpoint_state(i) {
                    let list = states.entry(ep.authority.as_str()).or_default();
                    if !list.iter().any(|s| Arc::ptr_eq(s, state)) {
                        list.push(state.clone());
                    }
                }
            }
        }
        // Forget what is gone (or is now probed by another check).
        self.entries.retain(|authority, entry| {
            let keep = wanted
                .get(authority.as_str())
                .is_some_and(|(check, _)| *check == entry.check);
            if !keep {
                for s in &entry.states {
                    s.set_active_health(ActiveHealth::Unchecked);
                }
                self.board.remove(authority);
            }
            keep
        });
        // New addresses, spread evenly over their check's first interval.
        let new: Vec<(&str, usize, &str)> = wanted
            .iter()
            .filter(|(a, _)| !self.entries.contains_key(**a))
            .map(|(a, (c, h))| (*a, *c, *h))
            .collect();
        let count = new.len() as u32;
        for (k, (authority, check, host)) in new.into_iter().enumerate() {
            self.generation += 1;
            let offset = self.checks[check].interval * k as u32 / count.max(1);
            let health = EndpointHealth {
                check: self.checks[check].label(),
                verdict: Verdict::Unchecked,
                last: None,
                consecutive_passes: 0,
                consecutive_failures: 0,
                last_probe: None,
                probes: 0,
            };
            self.board.put(authority, health.clone());
            self.entries.insert(
                authority.to_string(),
                Entry {
                    check,
                    host: host.to_string(),
                    states: Vec::new(),
                    tally: Tally::default(),
                    health,
                    due: now + offset,
                    running: false,
                    generation: self.generation,
                },
            );
        }
        for (authority, entry) in &mut self.entries {
            entry.states = states.remove(authority.as_str()).unwrap_or_default();
            let verdict = active(entry.tally.verdict);
            for s in &entry.states {
                s.set_active_health(verdict);
            }
        }
        tracing::debug!(
            version = routing.table.version,
            endpoints = self.entries.len(),
            "health checks follow a new route table"
        );
        self.table = Some(routing.table.clone());
    }

    /// Starts every probe that is due; each waits for a permit, then runs
    /// with its check's timeout.
    fn start_due(&mut self, now: Instant) {
        for (authority, entry) in &mut self.entries {
            if entry.running || entry.due > now {
                continue;
            }
            let check = &self.checks[entry.check];
            entry.running = true;
            let next = entry.due + check.interval + jitter(check.jitter);
            entry.due = if next > now {
                next
            } else {
                now + check.interval + jitter(check.jitter)
            };
            let target = Target {
                kind: check.kind.clone(),
                authority: authority.clone(),
                host: entry.host.clone(),
            };
            let (prober, permits, timeout) =
                (self.prober.clone(), self.permits.clone(), check.timeout);
            let (authority, generation) = (authority.clone(), entry.generation);
            self.probes.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let outcome = match tokio::time::timeout(timeout, prober.probe(target)).await {
                    Ok(outcome) => outcome,
                    Err(_) => ProbeOutcome::Fail(format!("timed out after {timeout:?}")),
                };
                Finished {
                    authority,
                    generation,
                    outcome,
                }
            });
        }
    }

    /// Counts a probe's outcome and writes a changed verdict out.
    fn record(&mut self, finished: Finished) {
        let Some(entry) = self.entries.get_mut(&finished.authority) else {
            return;
        };
        if entry.generation != finished.generation {
            return;
        }
        entry.running = false;
        let check = &self.checks[entry.check];
        let changed = entry.tally.record(
            finished.outcome.passed(),
            check.healthy_threshold,
            check.unhealthy_threshold,
        );
        if let Some(verdict) = changed {
            for s in &entry.states {
                s.set_active_health(active(verdict));
            }
            match (&finished.outcome, verdict) {
                (ProbeOutcome::Fail(why), Verdict::Failing) => tracing::warn!(
                    endpoint = %finished.authority,
                    check = %entry.health.check,
                    failures = entry.tally.failures,
                    reason = %why,
                    "endpoint fails its health check"
                ),
                _ => tracing::info!(
                    endpoint = %finished.authority,
                    check = %entry.health.check,
                    %verdict,
                    "endpoint health check verdict"
                ),
            }
        }
        let health = &mut entry.health;
        health.verdict = entry.tally.verdict;
        health.consecutive_passes = entry.tally.passes;
        health.consecutive_failures = entry.tally.failures;
        health.last = Some(finished.outcome);
        health.last_probe = Some(SystemTime::now());
        health.probes += 1;
        self.board.put(&finished.authority, health.clone());
    }
}

/// The balancer's form of a verdict.
fn active(verdict: Verdict) -> ActiveHealth {
    match verdict {
        Verdict::Unchecked => ActiveHealth::Unchecked,
        Verdict::Passing => ActiveHealth::Passing,
        Verdict::Failing => ActiveHealth::Failing,
    }
}

/// A uniform draw in `0..=max` (at millisecond grain).
fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis().min(u128::from(u32::MAX)) as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(random_below(ms + 1))
}
