//! Resilience policies in the table's form: a route's retries and faults
//! (VirtualService) and a cluster's connection pool, outlier detection,
//! retry budget and locality settings (DestinationRule, merged for the
//! cluster's subset and port). Values were checked when the config was
//! loaded; here defaults are filled in as Istio fills them, and a value that
//! skipped validation falls back to the default rather than panicking.

use crate::config::{
    ClientTlsSettings, ConnectionPoolSettings, EffectivePolicy, HttpFaultInjection, HttpRetry,
    LocalityLbSetting, OutlierDetectionSettings, Percent, RetryBudgetSettings, TlsMode,
};
use crate::routes::policy::{
    AbortStatus, ClusterPolicy, ClusterTls, ConnectionPool, FaultAbort, FaultDelay, FaultPolicy,
    LocalityDistribute, LocalityLb, LocalityMode, OutlierDetection, RetryBudget, RetryOn,
    RetryPolicy, TcpKeepalive, TlsOrigination, DEFAULT_RETRY_BACKOFF,
};

/// A route's retry policy. `consistent_hash`: the route has one destination
/// and its cluster hashes requests; then, as in Istio, a retry goes back to
/// the same endpoint unless `retryIgnorePreviousHosts` says otherwise.
pub(super) fn retry_policy(r: Option<&HttpRetry>, consistent_hash: bool) -> RetryPolicy {
    let Some(r) = r else {
        return RetryPolicy {
            ignore_previous_hosts: !consistent_hash,
            ..RetryPolicy::istio_default()
        };
    };
    let Some(attempts) = u32::try_from(r.attempts).ok().filter(|a| *a > 0) else {
        return RetryPolicy::disabled();
    };
    let default = RetryPolicy::istio_default();
    let written = r
        .retry_on
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| RetryOn::parse(s).ok());
    RetryPolicy {
        attempts,
        // Unset: the route timeout bounds each attempt (Istio, Envoy).
        per_try_timeout: r.per_try_timeout.map(|d| d.0),
        explicit: written.is_some(),
        retry_on: written.unwrap_or(default.retry_on),
        retry_remote_localities: r.retry_remote_localities.unwrap_or(false),
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(!consistent_hash),
        backoff: r.backoff.map_or(DEFAULT_RETRY_BACKOFF, |d| d.0),
    }
}

/// A route's fault injection; `None` when nothing would be injected. A
/// part without a percentage injects nothing (Istio: the delay's falls back
/// to the deprecated integer `percent`, default 0; the abort's is Envoy's
/// unset fraction, 0).
pub(super) fn fault_policy(f: Option<&HttpFaultInjection>) -> Option<FaultPolicy> {
    let f = f?;
    let delay = f.delay.as_ref().and_then(|d| {
        let share = match (d.percentage, d.percent) {
            (Some(p), _) => share(p),
            (None, Some(n)) => share(Percent { value: n as f64 }),
            (None, None) => None,
        }?;
        Some(FaultDelay {
            fixed: d.fixed_delay?.0,
            percentage: share,
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let status = match (a.http_status, &a.grpc_status) {
            (Some(s), None) => {
                AbortStatus::Http(u16::try_from(s).ok().filter(|s| (200..=599).contains(s))?)
            }
            (None, Some(g)) => AbortStatus::Grpc(g.code().ok()?),
            _ => return None,
        };
        Some(FaultAbort {
            status,
            percentage: share(a.percentage?)?,
        })
    });
    (delay.is_some() || abort.is_some()).then_some(FaultPolicy { delay, abort })
}

/// A share of requests, when above 0 (and valid).
pub(super) fn share(p: Percent) -> Option<f64> {
    (p.value > 0.0 && p.value <= 100.0).then_some(p.value)
}

/// A cluster's DestinationRule policies.
pub(super) fn cluster_policy(p: &EffectivePolicy<'_>) -> ClusterPolicy {
    ClusterPolicy {
        connection_pool: p.connection_pool.map(connection_pool).unwrap_or_default(),
        outlier: p.outlier_detection.map(outlier_detection),
        retry_budget: p.retry_budget.map(retry_budget),
        locality: p
            .load_balancer
            .and_then(|lb| lb.locality_lb_setting.as_ref())
            .map(locality)
            .unwrap_or_default(),
        tls: p.tls.map(cluster_tls),
    }
}

/// DestinationRule `tls`, merged for the cluster (Istio: a subset's or a
/// port-level `tls` replaces the rule's whole, like the other parts).
fn cluster_tls(t: &ClientTlsSettings) -> ClusterTls {
    let text = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let path = |s: &str| text(s).map(std::path::PathBuf::from);
    let origination = || TlsOrigination {
        ca_certificates: path(&t.ca_certificates),
        client_certificate: path(&t.client_certificate),
        private_key: path(&t.private_key),
        sni: text(&t.sni),
        subject_alt_names: t.subject_alt_names.clone(),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
    };
    match t.mode {
        TlsMode::Disable => ClusterTls::Disable,
        TlsMode::IstioMutual => ClusterTls::IstioMutual {
            sni: text(&t.sni),
            subject_alt_names: t.subject_alt_names.clone(),
        },
        TlsMode::Simple => ClusterTls::Simple(TlsOrigination {
            client_certificate: None,
            private_key: None,
            ..origination()
        }),
        TlsMode::Mutual => ClusterTls::Mutual(origination()),
    }
}

/// Istio's integers: above 0 is a limit, 0 (or anything invalid) is unset.
fn limit(n: i64) -> Option<u32> {
    u32::try_from(n).ok().filter(|n| *n > 0)
}

fn connection_pool(c: &ConnectionPoolSettings) -> ConnectionPool {
    let mut out = ConnectionPool::default();
    if let Some(t) = &c.tcp {
        out.max_connections = limit(t.max_connections);
        out.connect_timeout = t.connect_timeout.map(|d| d.0);
        out.tcp_keepalive = t.tcp_keepalive.as_ref().map(|k| TcpKeepalive {
            probes: limit(k.probes),
            time: k.time.map(|d| d.0),
            interval: k.interval.map(|d| d.0),
        });
        out.max_connection_duration = t.max_connection_duration.map(|d| d.0);
        out.tcp_idle_timeout = t.idle_timeout.map(|d| d.0);
    }
    if let Some(h) = &c.http {
        out.http1_max_pending_requests = limit(h.http1_max_pending_requests);
        out.http2_max_requests = limit(h.http2_max_requests);
        out.max_requests_per_connection = limit(h.max_requests_per_connection);
        out.max_retries = limit(h.max_retries);
        out.http_idle_timeout = h.idle_timeout.map(|d| d.0);
        out.max_concurrent_streams = limit(h.max_concurrent_streams);
    }
    out
}

fn outlier_detection(o: &OutlierDetectionSettings) -> OutlierDetection {
    let d = OutlierDetection::default();
    let percent = |n: i64, default: u32| {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .unwrap_or(default)
    };
    OutlierDetection {
        // Unset: 5; 0 disables.
        consecutive_5xx: match o.consecutive_5xx_errors {
            None => d.consecutive_5xx,
            Some(n) => limit(n),
        },
        consecutive_gateway: o.consecutive_gateway_errors.and_then(limit),
        // Istio passes only a value above 0; otherwise Envoy's default 5.
        consecutive_local_origin: o
            .consecutive_local_origin_failures
            .and_then(limit)
            .or(d.consecutive_local_origin),
        split_external_local_origin: o.split_external_local_origin_errors,
        interval: o.interval.map_or(d.interval, |i| i.0),
        base_ejection_time: o.base_ejection_time.map_or(d.base_ejection_time, |t| t.0),
        // Istio passes only a value above 0; otherwise Envoy's default 10.
        max_ejection_percent: percent(o.max_ejection_percent, d.max_ejection_percent),
        min_health_percent: percent(o.min_health_percent, 0),
    }
}

fn retry_budget(b: &RetryBudgetSettings) -> RetryBudget {
    RetryBudget::Concurrent {
        percent: b
            .percent
            .filter(|p| (0.0..=100.0).contains(p))
            .unwrap_or(20.0),
        min_concurrency: limit(b.min_retry_concurrency).unwrap_or(3),
    }
}

fn locality(l: &LocalityLbSetting) -> LocalityLb {
    let mode = if !l.distribute.is_empty() {
        LocalityMode::Distribute(
            l.distribute
                .iter()
                .map(|d| LocalityDistribute {
                    from: d.from.clone(),
                    to: d
                        .to
                        .iter()
                        .filter_map(|(k, w)| Some((k.clone(), limit(*w)?)))
                        .collect(),
                })
                .collect(),
        )
    } else if !l.failover.is_empty() {
        LocalityMode::Failover(
            l.failover
                .iter()
                .map(|f| (f.from.clone(), f.to.clone()))
                .collect(),
        )
    } else if !l.failover_priority.is_empty() {
        LocalityMode::FailoverPriority(l.failover_priority.clone())
    } else {
        LocalityMode::Tiers
    };
    LocalityLb {
        enabled: l.enabled.unwrap_or(true),
        mode,
    }
}
