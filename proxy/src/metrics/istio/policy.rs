//! Istio's Telemetry API applied to the standard metrics: which metric is
//! recorded on which side, and each metric's tag overrides (Istio's
//! `metrics[].overrides[]`, composed per workload by
//! [`anymesh_core::telemetry::TelemetryPolicies`]).
//!
//! [`LocalTelemetry`] is the local workload's policy as the request path
//! reads it: core's [`TelemetryPolicy`] (tracing and access logs read it
//! too) plus, per side, a switch per metric and whether any tag override
//! exists. [`PolicyCell`] publishes it with a word a recording reads in
//! one load: the policy's generation, part of the per-thread handle
//! cache's key, and whether each side records anything. Which metrics a
//! series records and with which labels is settled when a thread first
//! sees the series under a generation, so a cached recording costs one
//! load and a branch per metric more than without the Telemetry API. A tag
//! override is applied then ([`SeriesLabels::of`]):
//!
//! - `REMOVE` leaves the label out of that metric's series, so series that
//!   differed only by it become one (as Istio's stats filter does);
//! - `UPSERT` sets the label to its fixed value, added after the standard
//!   labels when it is not one of them.
//!
//! A series is identified by its label text, whichever form it has: the
//! standard form ([`IstioLabels`]) and an overridden one writing the same
//! labels are the same series.

use std::borrow::Cow;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anymesh_core::telemetry::{MetricPolicy, Side, StandardMetric, TagAction, TelemetryPolicy};
use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use super::{encode_pair, IstioLabels, Reporter};

/// The side a reporter records for: `source` is the client side,
/// `destination` the server side.
pub fn side(reporter: Reporter) -> Side {
    match reporter {
        Reporter::Source => Side::Client,
        Reporter::Destination => Side::Server,
    }
}

/// Generations of [`LocalTelemetry`]; 0 is the default policy. Below
/// 2^62, so that [`PolicyCell`]'s word holds them.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Where the local workload's Telemetry policy in force is published
/// (`Metrics::policy`): [`PolicyCell::load`] for its settings,
/// [`PolicyCell::set`] to change it.
///
/// A recording reads one word: the policy's generation and, per side,
/// whether any HTTP metric is on; it loads the policy itself only when a
/// thread first sees a series under that generation.
#[derive(Debug)]
pub struct PolicyCell {
    policy: ArcSwap<LocalTelemetry>,
    /// `generation << 2 | server on << 1 | client on` of `policy`.
    word: AtomicU64,
    /// Keeps `policy` and `word` in step when two writers race.
    writer: parking_lot::Mutex<()>,
}

impl Default for PolicyCell {
    /// The default policy: every metric on, no override.
    fn default() -> Self {
        let policy = LocalTelemetry::default();
        Self {
            word: AtomicU64::new(policy.word()),
            policy: ArcSwap::from_pointee(policy),
            writer: parking_lot::Mutex::new(()),
        }
    }
}

impl PolicyCell {
    /// The policy in force (cheap: no lock, no reference count).
    pub fn load(&self) -> arc_swap::Guard<Arc<LocalTelemetry>> {
        self.policy.load()
    }

    /// Puts `policy` in force for the recordings that follow; returns
    /// whether it differs from the one in force (an equal policy keeps the
    /// handles cached under it).
    pub fn set(&self, policy: Arc<TelemetryPolicy>) -> bool {
        let _writer = self.writer.lock();
        if *self.policy.load().telemetry == *policy {
            return false;
        }
        let new = LocalTelemetry::new(policy);
        let word = new.word();
        self.policy.store(Arc::new(new));
        // After the policy: a recording that reads the new word loads the
        // new policy (or a newer one).
        self.word.store(word, Ordering::Release);
        true
    }

    /// The word a recording reads (see [`PolicyCell::records`]).
    pub(crate) fn word(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// Whether the policy of `word` records any HTTP metric on `side`.
    pub(crate) fn records(word: u64, side: Side) -> bool {
        let bit = match side {
            Side::Client => 1,
            Side::Server => 2,
        };
        word & bit != 0
    }
}

/// The local workload's Telemetry policy in force, as the request path
/// reads it ([`PolicyCell::load`]: `metrics.policy.load()`).
///
/// It dereferences to core's [`TelemetryPolicy`], so the access log and
/// tracing read their settings from the same value:
/// `metrics.policy.load().sampling_percentage(Side::Client, mesh_default)`,
/// `metrics.policy.load().access_log_enabled(Side::Server, configured)`.
/// The standard metrics read the precompiled switches.
#[derive(Debug)]
pub struct LocalTelemetry {
    /// The merged policy (metrics, tracing, access logs, per side).
    pub telemetry: Arc<TelemetryPolicy>,
    /// Tells policies apart in the per-thread handle cache; unique per
    /// value built by [`LocalTelemetry::new`].
    generation: u64,
    client: SideSwitches,
    server: SideSwitches,
}

/// One side's metrics, precompiled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SideSwitches {
    /// Indexed by [`StandardMetric::index`].
    enabled: [bool; StandardMetric::COUNT],
    /// Some metric of the side has a tag override.
    pub(crate) overrides: bool,
    /// Some HTTP metric (count, duration, sizes) is on.
    pub(crate) any_http: bool,
    /// The side's `randomSamplingPercentage` as a sampler, when a
    /// Telemetry sets one (built here, not per request).
    pub(crate) sampler: Option<anymesh_telemetry::trace::Sampler>,
}

impl SideSwitches {
    fn of(side: &anymesh_core::telemetry::SidePolicy) -> Self {
        let enabled = StandardMetric::ALL.map(|m| side.metric(m).enabled);
        Self {
            enabled,
            overrides: side.metrics.iter().any(|m| !m.tags.is_empty()),
            any_http: HTTP_METRICS.iter().any(|m| enabled[m.index()]),
            sampler: side
                .tracing
                .random_sampling_percentage
                .map(anymesh_telemetry::trace::Sampler::new),
        }
    }

    /// Whether `metric` is recorded on this side.
    pub(crate) fn enabled(&self, metric: StandardMetric) -> bool {
        self.enabled[metric.index()]
    }
}

/// The metrics an HTTP exchange records.
const HTTP_METRICS: [StandardMetric; 4] = [
    StandardMetric::RequestCount,
    StandardMetric::RequestDuration,
    StandardMetric::RequestSize,
    StandardMetric::ResponseSize,
];

impl Default for LocalTelemetry {
    /// Every metric on, no override, no tracing or access-log setting:
    /// what a mesh without Telemetry resources gets.
    fn default() -> Self {
        let telemetry = Arc::new(TelemetryPolicy::default());
        Self {
            client: SideSwitches::of(&telemetry.client),
            server: SideSwitches::of(&telemetry.server),
            telemetry,
            generation: 0,
        }
    }
}

impl LocalTelemetry {
    /// `policy`, precompiled, with a generation of its own.
    pub fn new(policy: Arc<TelemetryPolicy>) -> Self {
        Self {
            client: SideSwitches::of(&policy.client),
            server: SideSwitches::of(&policy.server),
            telemetry: policy,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The generation and the per-side switches, as [`PolicyCell`] keeps
    /// them.
    fn word(&self) -> u64 {
        self.generation << 2
            | u64::from(self.server.any_http) << 1
            | u64::from(self.client.any_http)
    }

    pub(crate) fn switches(&self, side: Side) -> &SideSwitches {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// The labels of `metric`'s series for `base`, reported on `side`;
    /// `None` when the metric is off on that side.
    pub fn labels(
        &self,
        side: Side,
        metric: StandardMetric,
        base: &IstioLabels,
    ) -> Option<SeriesLabels> {
        let switches = self.switches(side);
        if !switches.enabled(metric) {
            return None;
        }
        Some(if switches.overrides {
            SeriesLabels::of(self.telemetry.metric(side, metric), base)
        } else {
            SeriesLabels::Standard(base.clone())
        })
    }
}

impl Deref for LocalTelemetry {
    type Target = TelemetryPolicy;

    fn deref(&self) -> &TelemetryPolicy {
        &self.telemetry
    }
}

/// The labels of one metric's series: Istio's standard set, or that set
/// with tag overrides applied (label names and values, in order).
#[derive(Debug, Clone)]
pub enum SeriesLabels {
    Standard(IstioLabels),
    Overridden(Arc<[(Cow<'static, str>, Arc<str>)]>),
}

impl SeriesLabels {
    /// `base` with `metric`'s tag overrides; the standard form when they
    /// change nothing.
    pub fn of(metric: &MetricPolicy, base: &IstioLabels) -> SeriesLabels {
        if metric.tags.is_empty() {
            return SeriesLabels::Standard(base.clone());
        }
        let mut pairs: Vec<(Cow<'static, str>, Arc<str>)> = Vec::with_capacity(32);
        let mut changed = false;
        let _ = base.visit(&mut |name, value| {
            match metric.action(name) {
                None => pairs.push((Cow::Borrowed(name), Arc::from(value))),
                Some(TagAction::Remove) => changed = true,
                Some(TagAction::Upsert(v)) => {
                    changed |= v != value;
                    pairs.push((Cow::Borrowed(name), Arc::from(v.as_str())));
                }
            }
            Ok::<(), Infallible>(())
        });
        for (name, value) in metric.upserted() {
            if !pairs.iter().any(|(n, _)| n == name) {
                pairs.push((Cow::Owned(name.to_string()), Arc::from(value)));
                changed = true;
            }
        }
        if changed {
            SeriesLabels::Overridden(pairs.into())
        } else {
            SeriesLabels::Standard(base.clone())
        }
    }

    /// Calls `f` with each label's name and value, in order.
    fn visit<E>(&self, f: &mut impl FnMut(&str, &str) -> Result<(), E>) -> Result<(), E> {
        match self {
            SeriesLabels::Standard(l) => l.visit(&mut |k, v| f(k, v)),
            SeriesLabels::Overridden(pairs) => {
                for (k, v) in pairs.iter() {
                    f(k, v)?;
                }
                Ok(())
            }
        }
    }
}

impl EncodeLabelSet for SeriesLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.visit(&mut |k, v| encode_pair(encoder, k, v))
    }
}

/// By label text: two forms writing the same labels are one series.
impl PartialEq for SeriesLabels {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SeriesLabels::Standard(a), SeriesLabels::Standard(b)) => a == b,
            (SeriesLabels::Overridden(a), SeriesLabels::Overridden(b)) => a == b,
            _ => {
                let mut mine = Vec::with_capacity(32);
                let _ = self.visit(&mut |k, v| {
                    mine.push((k.to_string(), v.to_string()));
                    Ok::<(), Infallible>(())
                });
                let mut i = 0;
                let same = other.visit(&mut |k, v| {
                    let equal = mine.get(i).is_some_and(|(mk, mv)| mk == k && mv == v);
                    i += 1;
                    if equal {
                        Ok(())
                    } else {
                        Err(())
                    }
                });
                same.is_ok() && i == mine.len()
            }
        }
    }
}

impl Eq for SeriesLabels {}

/// By label text, as [`PartialEq`].
impl Hash for SeriesLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let _ = self.visit(&mut |k, v| {
            k.hash(state);
            v.hash(state);
            Ok::<(), Infallible>(())
        });
    }
}

#[cfg(test)]
mod tests;
