//! Per-endpoint state shared by every cluster holding the endpoint and kept
//! across route-table swaps: in-flight count, active-health verdict, outlier
//! state and latency estimate.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::epoch;
use super::ewma::Ewma;
use crate::resilience::outlier::OutlierState;

/// Per-endpoint state shared by every cluster holding the endpoint.
///
/// A pick touches both the `Arc` counts and `in_flight`; the padding (rather
/// than an alignment, which would push `in_flight` onto the line after the
/// counts) makes the `Arc` allocation a whole number of 128-byte lines, so
/// both sit on the first line and no two endpoints share one.
#[repr(C)]
pub(crate) struct EndpointState {
    fields: Fields,
    _pad: [u8; PAD],
}

/// Size of `Arc`'s two counts before the value.
const ARC_COUNTS: usize = 2 * std::mem::size_of::<usize>();
const PAD: usize = (128 - (ARC_COUNTS + std::mem::size_of::<Fields>()) % 128) % 128;

/// The fields of [`EndpointState`], the hot ones first.
#[repr(C)]
pub(crate) struct Fields {
    pub(super) in_flight: AtomicUsize,
    /// The active health check's verdict ([`ActiveHealth`] as a `u8`).
    active: AtomicU8,
    /// Latency estimate for the peak-EWMA balancer.
    pub(super) ewma: Ewma,
    /// Passive health (outlier detection).
    pub(super) outlier: OutlierState,
    /// Origin of the times kept in atomics (the state's creation).
    pub(super) base: Instant,
}

impl Deref for EndpointState {
    type Target = Fields;

    fn deref(&self) -> &Fields {
        &self.fields
    }
}

/// What the active health checker last concluded about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ActiveHealth {
    /// Not checked (no check configured, or no verdict yet).
    Unchecked = 0,
    Passing = 1,
    Failing = 2,
}

impl ActiveHealth {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ActiveHealth::Passing,
            2 => ActiveHealth::Failing,
            _ => ActiveHealth::Unchecked,
        }
    }
}

impl EndpointState {
    /// The active health check's verdict.
    pub(crate) fn active_health(&self) -> ActiveHealth {
        ActiveHealth::from_u8(self.active.load(Ordering::Relaxed))
    }

    /// Records the active health check's verdict.
    pub(crate) fn set_active_health(&self, verdict: ActiveHealth) {
        let old = ActiveHealth::from_u8(self.active.swap(verdict as u8, Ordering::AcqRel));
        if (old == ActiveHealth::Failing) != (verdict == ActiveHealth::Failing) {
            epoch::changed();
        }
    }
}

impl fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointState")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("active", &self.active_health())
            .finish()
    }
}

impl Default for EndpointState {
    fn default() -> Self {
        let base = Instant::now();
        Self {
            fields: Fields {
                in_flight: AtomicUsize::new(0),
                active: AtomicU8::new(0),
                ewma: Ewma::new(),
                outlier: OutlierState::new(base),
                base,
            },
            _pad: [0; PAD],
        }
    }
}

/// One request in flight to an endpoint; decrements the count on drop.
#[derive(Debug)]
pub struct InFlight(pub(super) Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
