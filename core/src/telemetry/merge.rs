//! Merging the Telemetry resources that apply to one workload (root
//! namespace, namespace, workload; later wins) into a [`TelemetryPolicy`],
//! following Istio's `mergeMetrics`, `Tracing` and `mergeLogs`.

use std::collections::BTreeMap;

use super::{MetricPolicy, Side, StandardMetric, TagAction, TelemetryPolicy, PROMETHEUS_PROVIDER};
use crate::config::telemetry::{
    cel_bool_literal, cel_string_literal, AccessLogging, IstioMetric, Metrics, MetricsOverrides,
    ProviderRef, TagOperation, Telemetry, Tracing, WorkloadMode,
};

/// The sides a mode covers.
fn sides(mode: WorkloadMode) -> &'static [Side] {
    match mode {
        WorkloadMode::Client => &[Side::Client],
        WorkloadMode::Server => &[Side::Server],
        WorkloadMode::ClientAndServer => &Side::BOTH,
    }
}

fn names(providers: &[ProviderRef]) -> Vec<String> {
    providers.iter().map(|p| p.name.clone()).collect()
}

fn has_prometheus(names: &[String]) -> bool {
    names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(PROMETHEUS_PROVIDER))
}

/// Composes the levels that apply, in order (root first); `ids` are their
/// `namespace/name`.
pub(crate) fn merge(levels: &[(String, &Telemetry)]) -> TelemetryPolicy {
    let mut policy = TelemetryPolicy {
        sources: levels.iter().map(|(id, _)| id.clone()).collect(),
        ..TelemetryPolicy::default()
    };
    let metrics: Vec<&Metrics> = levels.iter().flat_map(|(_, t)| &t.metrics).collect();
    merge_metrics(&metrics, &mut policy);
    for (_, t) in levels {
        for tracing in &t.tracing {
            merge_tracing(tracing, &mut policy);
        }
    }
    for (_, t) in levels {
        for logging in &t.access_logging {
            merge_access_log(logging, &mut policy);
        }
    }
    policy
}

/// Per side and metric, as overrides accumulate.
#[derive(Default)]
struct MetricState {
    disabled: bool,
    tags: BTreeMap<String, TagAction>,
}

/// The metrics an override's `match` selects; empty for a custom metric
/// anymesh does not have (validation warned).
fn selected(o: &MetricsOverrides) -> Vec<StandardMetric> {
    let Some(m) = &o.r#match else {
        return StandardMetric::ALL.to_vec();
    };
    if let Some(custom) = &m.custom_metric {
        return StandardMetric::from_short_name(custom)
            .into_iter()
            .collect();
    }
    let metric = match m.metric {
        None | Some(IstioMetric::AllMetrics) => return StandardMetric::ALL.to_vec(),
        Some(IstioMetric::RequestCount) => StandardMetric::RequestCount,
        Some(IstioMetric::RequestDuration) => StandardMetric::RequestDuration,
        Some(IstioMetric::RequestSize) => StandardMetric::RequestSize,
        Some(IstioMetric::ResponseSize) => StandardMetric::ResponseSize,
        Some(IstioMetric::TcpOpenedConnections) => StandardMetric::TcpOpenedConnections,
        Some(IstioMetric::TcpClosedConnections) => StandardMetric::TcpClosedConnections,
        Some(IstioMetric::TcpSentBytes) => StandardMetric::TcpSentBytes,
        Some(IstioMetric::TcpReceivedBytes) => StandardMetric::TcpReceivedBytes,
        Some(IstioMetric::GrpcRequestMessages) => StandardMetric::GrpcRequestMessages,
        Some(IstioMetric::GrpcResponseMessages) => StandardMetric::GrpcResponseMessages,
    };
    vec![metric]
}

/// Istio's `isAllMetrics`: `match.metric: ALL_METRICS` written out (a
/// missing `match` selects every metric too, but one by one).
fn is_all_metrics(o: &MetricsOverrides) -> bool {
    o.r#match
        .as_ref()
        .is_some_and(|m| m.custom_metric.is_none() && m.metric == Some(IstioMetric::AllMetrics))
}

fn merge_metrics(metrics: &[&Metrics], policy: &mut TelemetryPolicy) {
    let default = vec![PROMETHEUS_PROVIDER.to_string()];
    // The last entry naming providers decides which are configured at all.
    let in_scope = metrics
        .iter()
        .map(|m| names(&m.providers))
        .rfind(|n| !n.is_empty())
        .unwrap_or_else(|| default.clone());
    let prometheus = has_prometheus(&in_scope);
    let mut state: [[MetricState; StandardMetric::COUNT]; 2] = Default::default();
    let mut all_disabled = [false; 2];
    let mut parent = default;
    for m in metrics {
        let own = names(&m.providers);
        if !own.is_empty() {
            parent = own;
        }
        if !has_prometheus(&parent) {
            continue;
        }
        for o in &m.overrides {
            let mode = o.r#match.as_ref().map(|m| m.mode).unwrap_or_default();
            let all = is_all_metrics(o);
            if all && o.disabled == Some(true) {
                for side in sides(mode) {
                    all_disabled[*side as usize] = true;
                }
                continue;
            }
            if all {
                for side in sides(mode) {
                    all_disabled[*side as usize] = false;
                }
            }
            for metric in selected(o) {
                for side in sides(mode) {
                    let s = &mut state[*side as usize][metric.index()];
                    if let Some(d) = o.disabled {
                        s.disabled = d;
                    }
                    for (tag, t) in &o.tag_overrides {
                        let action = match t.operation {
                            TagOperation::Remove => TagAction::Remove,
                            TagOperation::Upsert => {
                                match t.value.as_deref().and_then(cel_string_literal) {
                                    Some(v) => TagAction::Upsert(v),
                                    // Not a fixed value: ignored (validation warned).
                                    None => continue,
                                }
                            }
                        };
                        s.tags.insert(tag.clone(), action);
                    }
                }
            }
        }
    }
    for side in Side::BOTH {
        let states = std::mem::take(&mut state[side as usize]);
        let out = &mut policy.side_mut(side).metrics;
        for (slot, s) in out.iter_mut().zip(states) {
            let enabled = prometheus && !all_disabled[side as usize] && !s.disabled;
            *slot = MetricPolicy::from_map(enabled, s.tags);
        }
    }
}

fn merge_tracing(t: &Tracing, policy: &mut TelemetryPolicy) {
    let mode = t.r#match.map(|m| m.mode).unwrap_or_default();
    for side in sides(mode) {
        let p = &mut policy.side_mut(*side).tracing;
        if let Some(first) = t.providers.first() {
            p.provider = Some(first.name.clone());
        }
        if let Some(d) = t.disable_span_reporting {
            p.span_reporting_disabled = d;
        }
        // Shallow, as Istio: a level's tags replace the parent's.
        if !t.custom_tags.is_empty() {
            p.custom_tags = t
                .custom_tags
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.literal.as_ref()?.value.clone())))
                .collect();
        }
        if let Some(pct) = t
            .random_sampling_percentage
            .filter(|p| (0.0..=100.0).contains(p))
        {
            p.random_sampling_percentage = Some(pct);
        }
    }
}

fn merge_access_log(l: &AccessLogging, policy: &mut TelemetryPolicy) {
    let mode = l.r#match.map(|m| m.mode).unwrap_or_default();
    // A filter other than a literal is ignored (validation warned).
    let filtered_out = l
        .filter
        .as_ref()
        .and_then(|f| cel_bool_literal(&f.expression))
        == Some(false);
    let enabled = l.disabled != Some(true) && !filtered_out;
    for side in sides(mode) {
        let p = &mut policy.side_mut(*side).access_log;
        p.enabled = Some(enabled);
        if !l.providers.is_empty() {
            p.providers = names(&l.providers);
        }
    }
}
