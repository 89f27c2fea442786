//! The Telemetry API on the exposition: metrics off per side, REMOVE and
//! UPSERT tag overrides, a new policy taking effect on cached handles.

use std::collections::hash_map::DefaultHasher;

use anymesh_core::telemetry::{SidePolicy, TagAction};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::*;
use crate::metrics::istio::{
    IstioMetrics, PeerLabels, RequestProtocol, SecurityPolicy, ServiceLabels,
};

fn exposition(r: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, r).expect("encode");
    out
}

/// The lines of `metric`'s series (`istio_requests_total{`…).
fn lines<'t>(text: &'t str, metric: &str) -> Vec<&'t str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .collect()
}

fn labels(reporter: Reporter, code: u16) -> IstioLabels {
    let peer = Arc::new(PeerLabels::workload(
        "cart-v1",
        "shop",
        Some("cluster.local/ns/shop/sa/cart"),
        &[("app".to_string(), "cart".to_string())]
            .into_iter()
            .collect(),
    ));
    IstioLabels {
        reporter,
        source: peer.clone(),
        destination: peer,
        service: Arc::new(ServiceLabels::new("cart.shop.svc.cluster.local", None)),
        protocol: RequestProtocol::Http,
        code,
        grpc_status: None,
        flags: "-",
        security: SecurityPolicy::MutualTls,
    }
}

/// A policy whose `side` has `edit` applied to `metric`.
fn policy(
    side: Side,
    metric: StandardMetric,
    edit: impl FnOnce(&mut MetricPolicy),
) -> Arc<TelemetryPolicy> {
    let mut p = TelemetryPolicy::default();
    let s: &mut SidePolicy = match side {
        Side::Client => &mut p.client,
        Side::Server => &mut p.server,
    };
    edit(&mut s.metrics[metric.index()]);
    Arc::new(p)
}

#[test]
fn a_metric_disabled_on_one_side_is_recorded_on_the_other_only() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    let off = policy(Side::Client, StandardMetric::RequestCount, |m| {
        m.enabled = false
    });
    assert!(m.set_policy(off.clone()));
    // The same policy again changes nothing.
    assert!(!m.set_policy(off));
    let out = labels(Reporter::Source, 200);
    let inb = labels(Reporter::Destination, 200);
    m.record(&out.series(), 1.0, Some((10, 20)));
    m.record(&inb.series(), 1.0, Some((10, 20)));
    let text = exposition(&registry);
    let requests = lines(&text, "istio_requests_total");
    assert_eq!(requests.len(), 1, "{text}");
    assert!(requests[0].contains("reporter=\"destination\""), "{text}");
    // The client side's other metrics are still recorded.
    let durations = lines(&text, "istio_request_duration_milliseconds_count");
    assert_eq!(durations.len(), 2, "{text}");
    assert_eq!(
        lines(&text, "istio_response_bytes_count").len(),
        2,
        "{text}"
    );
}

#[test]
fn every_http_metric_off_records_nothing_for_that_side() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    let mut p = TelemetryPolicy::default();
    for metric in &mut p.server.metrics {
        metric.enabled = false;
    }
    m.set_policy(Arc::new(p));
    m.record(
        &labels(Reporter::Destination, 200).series(),
        1.0,
        Some((1, 1)),
    );
    let text = exposition(&registry);
    assert!(!text.contains("reporter=\"destination\""), "{text}");
}

#[test]
fn remove_drops_the_label_and_merges_the_series() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    m.set_policy(policy(Side::Server, StandardMetric::RequestCount, |m| {
        m.tags = vec![("response_code".into(), TagAction::Remove)];
    }));
    let ok = labels(Reporter::Destination, 200);
    let failed = labels(Reporter::Destination, 503);
    m.record(&ok.series(), 1.0, None);
    m.record(&ok.series(), 1.0, None);
    m.record(&failed.series(), 1.0, None);
    let text = exposition(&registry);
    let requests = lines(&text, "istio_requests_total");
    assert_eq!(requests.len(), 1, "{text}");
    assert!(!requests[0].contains("response_code"), "{text}");
    assert!(requests[0].ends_with(" 3"), "{text}");
    assert!(
        requests[0].contains("destination_workload=\"cart-v1\""),
        "{text}"
    );
    // Only the metric named: the duration keeps its two series.
    let durations = lines(&text, "istio_request_duration_milliseconds_count");
    assert_eq!(durations.len(), 2, "{text}");
    assert!(
        durations.iter().all(|l| l.contains("response_code=")),
        "{text}"
    );
    // The client side is not overridden.
    m.record(&labels(Reporter::Source, 200).series(), 1.0, None);
    let text = exposition(&registry);
    assert!(
        lines(&text, "istio_requests_total")
            .iter()
            .any(|l| l.contains("reporter=\"source\"") && l.contains("response_code=\"200\"")),
        "{text}"
    );
}

#[test]
fn upsert_replaces_a_standard_label_and_appends_a_new_one() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    m.set_policy(policy(Side::Client, StandardMetric::RequestCount, |m| {
        m.tags = vec![
            ("mesh_id".into(), TagAction::Upsert("east \"1\"".into())),
            ("source_cluster".into(), TagAction::Upsert("east".into())),
        ];
    }));
    m.record(&labels(Reporter::Source, 200).series(), 1.0, None);
    let text = exposition(&registry);
    let requests = lines(&text, "istio_requests_total");
    assert_eq!(requests.len(), 1, "{text}");
    let line = requests[0];
    assert!(line.contains(",source_cluster=\"east\","), "{text}");
    assert_eq!(line.matches("source_cluster=").count(), 1, "{text}");
    // A new label comes after the standard ones, its value escaped.
    assert!(
        line.contains("connection_security_policy=\"mutual_tls\",mesh_id=\"east \\\"1\\\"\"}"),
        "{text}"
    );
    let durations = lines(&text, "istio_request_duration_milliseconds_count");
    assert!(
        durations[0].contains("source_cluster=\"unknown\""),
        "{text}"
    );
    assert!(!durations[0].contains("mesh_id"), "{text}");
}

#[test]
fn a_new_policy_takes_effect_on_cached_handles_and_the_old_series_stay() {
    let mut registry = Registry::default();
    let m = IstioMetrics::new(&mut registry);
    let l = labels(Reporter::Source, 200);
    m.record(&l.series(), 1.0, None);
    m.set_policy(policy(Side::Client, StandardMetric::RequestCount, |m| {
        m.tags = vec![("response_code".into(), TagAction::Remove)];
    }));
    m.record(&l.series(), 1.0, None);
    m.record(&l.series(), 1.0, None);
    let text = exposition(&registry);
    let requests = lines(&text, "istio_requests_total");
    assert_eq!(requests.len(), 2, "{text}");
    assert!(requests
        .iter()
        .any(|l| l.contains("response_code=\"200\"") && l.ends_with(" 1")));
    assert!(requests
        .iter()
        .any(|l| !l.contains("response_code") && l.ends_with(" 2")));
    // Off, then back to no Telemetry at all: the standard series counts on.
    m.set_policy(policy(Side::Client, StandardMetric::RequestCount, |m| {
        m.enabled = false
    }));
    m.record(&l.series(), 1.0, None);
    assert!(m.set_policy(Arc::new(TelemetryPolicy::default())));
    m.record(&l.series(), 1.0, None);
    let text = exposition(&registry);
    assert!(
        lines(&text, "istio_requests_total")
            .iter()
            .any(|l| l.contains("response_code=\"200\"") && l.ends_with(" 2")),
        "{text}"
    );
    assert!(
        lines(&text, "istio_request_duration_milliseconds_count")
            .iter()
            .any(|l| l.ends_with(" 5")),
        "{text}"
    );
}

fn hash(l: &SeriesLabels) -> u64 {
    let mut h = DefaultHasher::new();
    l.hash(&mut h);
    h.finish()
}

#[test]
fn a_series_is_its_label_text_whatever_its_form() {
    let base = labels(Reporter::Source, 200);
    // An override that changes nothing keeps the standard form.
    let same = MetricPolicy {
        enabled: true,
        tags: vec![(
            "source_workload".into(),
            TagAction::Upsert("cart-v1".into()),
        )],
    };
    assert!(matches!(
        SeriesLabels::of(&same, &base),
        SeriesLabels::Standard(_)
    ));
    // The same text in both forms: equal, same hash.
    let mut pairs = Vec::new();
    let _ = base.visit(&mut |k, v| {
        pairs.push((Cow::Borrowed(k), Arc::from(v)));
        Ok::<(), Infallible>(())
    });
    let standard = SeriesLabels::Standard(base.clone());
    let overridden = SeriesLabels::Overridden(pairs.clone().into());
    assert_eq!(standard, overridden);
    assert_eq!(overridden, standard);
    assert_eq!(hash(&standard), hash(&overridden));
    // One label less or one value else: another series.
    let shorter = SeriesLabels::Overridden(pairs[..pairs.len() - 1].to_vec().into());
    assert_ne!(standard, shorter);
    assert_ne!(shorter, standard);
    pairs[1].1 = Arc::from("other");
    assert_ne!(standard, SeriesLabels::Overridden(pairs.into()));
}

#[test]
fn the_policy_reads_through_to_core_for_tracing_and_access_logs() {
    let mut p = TelemetryPolicy::default();
    p.client.tracing.random_sampling_percentage = Some(25.0);
    p.server.access_log.enabled = Some(false);
    let m = IstioMetrics::new(&mut Registry::default());
    assert_eq!(m.policy.load().sampling_percentage(Side::Client, 1.0), 1.0);
    m.set_policy(Arc::new(p));
    let now = m.policy.load();
    assert_eq!(now.sampling_percentage(Side::Client, 1.0), 25.0);
    assert!(!now.access_log_enabled(Side::Server, true));
    assert!(now.access_log_enabled(Side::Client, true));
}
