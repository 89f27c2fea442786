//! What the request path tells a cluster's balancer about attempts
//! (outlier detection and the latency EWMA), and what `anymesh explain`
//! reads back: each health source's verdict on an endpoint.

use anymesh_core::routes::OutlierDetection;
use tokio::time::Instant;

use super::{epoch, ActiveHealth, ClusterLb, EndpointState, Kind};
use crate::resilience::outlier::{AttemptOutcome, OutlierVerdict, Tripped};

impl ClusterLb {
    /// Reports the outcome of an attempt sent to `cluster().endpoints[index]`:
    /// feeds the latency EWMA (peak-EWMA clusters) and outlier detection
    /// (when the cluster has it), ejecting the endpoint when a threshold is
    /// reached and the cluster allows one more ejection.
    ///
    /// A success costs a few atomic loads (and a clock read for peak EWMA).
    pub(crate) fn report(&self, index: usize, outcome: AttemptOutcome) {
        let Some(state) = self.states.get(index) else {
            return;
        };
        if let (Some(Kind::PeakEwma), AttemptOutcome::Response { latency, .. }) =
            (self.tiers.first().map(|t| &t.kind), outcome)
        {
            state.ewma.observe(state.base, Instant::now(), latency);
        }
        let Some(config) = &self.cluster.policy.outlier else {
            return;
        };
        for tripped in state.outlier.record(&outcome, config).into_iter().flatten() {
            self.consider_ejection(index, state, tripped, config);
        }
    }

    /// A counter of endpoint `index` reached its threshold: eject it when
    /// the cluster allows one more ejection (Envoy: within
    /// `max_ejection_percent` counting this one, but the first ejection is
    /// always allowed).
    #[cold]
    fn consider_ejection(
        &self,
        index: usize,
        state: &EndpointState,
        tripped: Tripped,
        config: &OutlierDetection,
    ) {
        let now = Instant::now();
        let _decisions = self.eject.lock();
        let n = self.states.len();
        let ejected = self
            .states
            .iter()
            .filter(|s| s.outlier.is_ejected(now))
            .count();
        let max = config.max_ejection_percent.min(100) as usize;
        let may_eject = || ejected == 0 || 100 * (ejected + 1) <= max * n;
        if state.outlier.eject(tripped, config, now, may_eject) {
            epoch::changed();
            let endpoint = self.cluster.endpoints.get(index);
            tracing::info!(
                cluster = %self.cluster.name,
                endpoint = endpoint.map_or("", |e| e.authority.as_str()),
                reason = %tripped.reason,
                failures = tripped.failures,
                "endpoint ejected"
            );
        } else if !state.outlier.is_ejected(now) {
            tracing::debug!(
                cluster = %self.cluster.name,
                ejected,
                "ejection refused by max_ejection_percent"
            );
        }
    }

    /// Each health source's verdict on `cluster().endpoints[index]` (for
    /// `anymesh explain`); `None` when there is no such endpoint.
    pub(crate) fn verdicts(&self, index: usize) -> Option<EndpointVerdicts> {
        let state = self.states.get(index)?;
        let outlier = match &self.cluster.policy.outlier {
            Some(config) => state.outlier.verdict(config, Instant::now()),
            None => OutlierVerdict::NotConfigured,
        };
        Some(EndpointVerdicts {
            active: state.active_health(),
            outlier,
        })
    }
}

/// Each health source's verdict on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndpointVerdicts {
    /// The active health check's.
    pub(crate) active: ActiveHealth,
    /// Outlier detection's (passive health).
    pub(crate) outlier: OutlierVerdict,
}
