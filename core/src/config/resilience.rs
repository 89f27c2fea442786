//! Checks of the resilience fields: VirtualService `retries`, `fault` and
//! mirrors; DestinationRule `connectionPool`, `outlierDetection`,
//! `retryBudget`, `localityLbSetting` and `portLevelSettings`. The rules
//! follow Istio's validation (durations of at least 1ms in whole
//! milliseconds, percentages 0..=100, status 200..=599, non-negative
//! counts), with errors at the field path.

use std::collections::HashMap;

use super::destination_rule::{
    ConnectionPoolSettings, LocalityLbSetting, OutlierDetectionSettings, PortTrafficPolicy,
    RetryBudgetSettings,
};
use super::diagnostic::Findings;
use super::duration::GoDuration;
use super::virtual_service::{HttpFaultInjection, HttpRetry, HttpRoute, Percent};
use crate::routes::policy::{RetryOn, IGNORED_RETRY_ON};

/// A duration Istio requires to be at least 1ms, in whole milliseconds.
pub(crate) fn millis(d: GoDuration, at: &str, f: &mut Findings) {
    let d = d.as_duration();
    if d < std::time::Duration::from_millis(1) {
        f.error(at, format!("duration {d:?} is below the minimum of 1ms"));
    } else if d.subsec_nanos() % 1_000_000 != 0 {
        f.error(
            at,
            format!("duration {d:?} is not a whole number of milliseconds"),
        );
    }
}

fn opt_millis(d: Option<GoDuration>, at: &str, f: &mut Findings) {
    if let Some(d) = d {
        millis(d, at, f);
    }
}

/// A percentage: 0, or 0.0001..=100 (Envoy counts in millionths).
fn percent(p: f64, at: &str, f: &mut Findings) {
    if !(0.0..=100.0).contains(&p) {
        f.error(at, format!("percentage {p} is out of range 0..=100"));
    } else if p > 0.0 && p < 0.0001 {
        f.error(
            at,
            format!("percentage {p} is below the smallest share, 0.0001"),
        );
    }
}

/// A count Istio writes as an `int32` or `uint32`: never negative, at most
/// `u32::MAX`.
fn count(n: i64, at: &str, f: &mut Findings) {
    if n < 0 {
        f.error(at, format!("{n} is negative; must be 0 or more"));
    } else if u32::try_from(n).is_err() {
        f.error(at, format!("{n} is too large (at most {})", u32::MAX));
    }
}

/// An Istio percent written as an integer: 0..=100.
fn int_percent(n: i64, at: &str, f: &mut Findings) {
    if !(0..=100).contains(&n) {
        f.error(at, format!("{n} is out of range 0..=100"));
    }
}

/// `http[i]`'s `retries`, `fault`, `mirror*` (destinations are checked
/// with the route's).
pub(crate) fn http_route(r: &HttpRoute, at: &str, f: &mut Findings) {
    if let Some(retries) = &r.retries {
        retry(retries, &format!("{at}.retries"), f);
    }
    if let Some(fault) = &r.fault {
        fault_injection(fault, &format!("{at}.fault"), f);
    }
    if let Some(p) = r.mirror_percentage {
        percent(p.value, &format!("{at}.mirrorPercentage.value"), f);
    }
    if let Some(p) = r.mirror_percent {
        let at = format!("{at}.mirrorPercent");
        int_percent(p, &at, f);
        f.warning(at, "mirrorPercent is deprecated; use mirrorPercentage");
    }
    if r.mirror.is_none() {
        for (name, set) in [
            ("mirrorPercentage", r.mirror_percentage.is_some()),
            ("mirrorPercent", r.mirror_percent.is_some()),
        ] {
            if set {
                f.warning(
                    format!("{at}.{name}"),
                    format!("{name} without mirror has no effect"),
                );
            }
        }
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        if let Some(p) = m.percentage {
            percent(p.value, &format!("{at}.mirrors[{j}].percentage.value"), f);
        }
    }
    if r.route.is_empty() && (r.mirror.is_some() || !r.mirrors.is_empty()) {
        f.warning(
            format!("{at}.mirror"),
            "mirroring only applies to a route; with redirect or directResponse nothing is mirrored",
        );
    }
}

fn retry(r: &HttpRetry, at: &str, f: &mut Findings) {
    if r.attempts < 0 {
        f.error(
            format!("{at}.attempts"),
            format!("attempts {} is negative; 0 disables retries", r.attempts),
        );
    } else if u32::try_from(r.attempts).is_err() {
        f.error(
            format!("{at}.attempts"),
            format!("attempts {} is too large", r.attempts),
        );
    }
    let written = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if r.attempts == 0
        && (r.per_try_timeout.is_some()
            || written(&r.retry_on)
            || r.retry_remote_localities.is_some())
    {
        f.error(
            format!("{at}.attempts"),
            "attempts is 0 (retries disabled) but perTryTimeout, retryOn or \
             retryRemoteLocalities is set; set attempts above 0",
        );
    }
    opt_millis(r.per_try_timeout, &format!("{at}.perTryTimeout"), f);
    opt_millis(r.backoff, &format!("{at}.backoff"), f);
    if let Some(text) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let at = format!("{at}.retryOn");
        match RetryOn::parse(text) {
            Err(why) => f.error(at, why),
            Ok(_) => {
                if text.split(',').any(|t| t.trim() == IGNORED_RETRY_ON) {
                    f.warning(
                        at,
                        format!(
                            "{IGNORED_RETRY_ON} is ignored: anymesh does not use HTTP/3 upstream"
                        ),
                    );
                }
            }
        }
    }
}

fn fault_injection(fault: &HttpFaultInjection, at: &str, f: &mut Findings) {
    if fault.delay.is_none() && fault.abort.is_none() {
        f.error(at, "a fault needs a delay, an abort or both");
    }
    if let Some(d) = &fault.delay {
        let at = format!("{at}.delay");
        match d.fixed_delay {
            Some(fixed) => millis(fixed, &format!("{at}.fixedDelay"), f),
            None => f.error(
                format!("{at}.fixedDelay"),
                "fixedDelay is required (exponentialDelay is not supported, by Istio either)",
            ),
        }
        if let Some(p) = d.percentage {
            percent(p.value, &format!("{at}.percentage.value"), f);
        }
        if let Some(p) = d.percent {
            int_percent(p, &format!("{at}.percent"), f);
        }
        no_percentage(d.percentage, d.percent.is_some(), "delayed", &at, f);
    }
    if let Some(a) = &fault.abort {
        let at = format!("{at}.abort");
        match (a.http_status, &a.grpc_status) {
            (Some(_), Some(_)) => f.error(&at, "only one of httpStatus or grpcStatus may be set"),
            (Some(s), None) => {
                if !(200..=599).contains(&s) {
                    f.error(
                        format!("{at}.httpStatus"),
                        format!("status {s} is out of range 200..=599"),
                    );
                }
            }
            (None, Some(g)) => {
                if let Err(why) = g.code() {
                    f.error(format!("{at}.grpcStatus"), why);
                }
            }
            (None, None) => f.warning(
                &at,
                "abort has neither httpStatus nor grpcStatus; nothing is aborted",
            ),
        }
        if let Some(p) = a.percentage {
            percent(p.value, &format!("{at}.percentage.value"), f);
        }
        no_percentage(a.percentage, false, "aborted", &at, f);
    }
}

/// Istio injects nothing without a percentage: say so.
fn no_percentage(p: Option<Percent>, legacy: bool, what: &str, at: &str, f: &mut Findings) {
    if p.is_none() && !legacy {
        f.warning(
            format!("{at}.percentage"),
            format!(
                "no percentage: as in Istio, no request is {what}; set percentage.value \
                 (e.g. 100)"
            ),
        );
    }
}

/// A DestinationRule traffic policy's resilience parts (`at` is the
/// policy's path).
pub(crate) fn traffic_policy(
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetectionSettings>,
    budget: Option<&RetryBudgetSettings>,
    at: &str,
    f: &mut Findings,
) {
    if let Some(p) = pool {
        connection_pool(p, &format!("{at}.connectionPool"), f);
    }
    if let Some(o) = outlier {
        outlier_detection(o, &format!("{at}.outlierDetection"), f);
    }
    if let Some(b) = budget {
        let at = format!("{at}.retryBudget");
        if let Some(p) = b.percent {
            percent(p, &format!("{at}.percent"), f);
        }
        count(
            b.min_retry_concurrency,
            &format!("{at}.minRetryConcurrency"),
            f,
        );
    }
}

fn connection_pool(p: &ConnectionPoolSettings, at: &str, f: &mut Findings) {
    if p.tcp.is_none() && p.http.is_none() {
        f.error(at, "a connection pool needs tcp, http or both");
    }
    if let Some(t) = &p.tcp {
        let at = format!("{at}.tcp");
        count(t.max_connections, &format!("{at}.maxConnections"), f);
        opt_millis(t.connect_timeout, &format!("{at}.connectTimeout"), f);
        opt_millis(
            t.max_connection_duration,
            &format!("{at}.maxConnectionDuration"),
            f,
        );
        // `0s` disables the idle timeout, as in Istio.
        if let Some(d) = t.idle_timeout.filter(|d| !d.as_duration().is_zero()) {
            millis(d, &format!("{at}.idleTimeout"), f);
        }
        if let Some(k) = &t.tcp_keepalive {
            let at = format!("{at}.tcpKeepalive");
            count(k.probes, &format!("{at}.probes"), f);
            opt_millis(k.time, &format!("{at}.time"), f);
            opt_millis(k.interval, &format!("{at}.interval"), f);
        }
    }
    if let Some(h) = &p.http {
        let at = format!("{at}.http");
        for (name, n) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            count(n, &format!("{at}.{name}"), f);
        }
        opt_millis(h.idle_timeout, &format!("{at}.idleTimeout"), f);
    }
}

fn outlier_detection(o: &OutlierDetectionSettings, at: &str, f: &mut Findings) {
    if let Some(n) = o.consecutive_errors {
        let at = format!("{at}.consecutiveErrors");
        count(n, &at, f);
        f.warning(
            at,
            "consecutiveErrors is deprecated and ignored (as by Istio); use \
             consecutive5xxErrors or consecutiveGatewayErrors",
        );
    }
    for (name, n) in [
        ("consecutive5xxErrors", o.consecutive_5xx_errors),
        ("consecutiveGatewayErrors", o.consecutive_gateway_errors),
        (
            "consecutiveLocalOriginFailures",
            o.consecutive_local_origin_failures,
        ),
    ] {
        if let Some(n) = n {
            count(n, &format!("{at}.{name}"), f);
        }
    }
    if !o.split_external_local_origin_errors
        && o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        f.error(
            format!("{at}.consecutiveLocalOriginFailures"),
            "only counted with splitExternalLocalOriginErrors: true",
        );
    }
    opt_millis(o.interval, &format!("{at}.interval"), f);
    opt_millis(o.base_ejection_time, &format!("{at}.baseEjectionTime"), f);
    int_percent(
        o.max_ejection_percent,
        &format!("{at}.maxEjectionPercent"),
        f,
    );
    int_percent(o.min_health_percent, &format!("{at}.minHealthPercent"), f);
}

/// `loadBalancer.localityLbSetting`; `outlier` is the outlier detection of
/// the same policy (failover needs it).
pub(crate) fn locality(l: &LocalityLbSetting, outlier: bool, at: &str, f: &mut Findings) {
    let set: Vec<&str> = [
        ("distribute", !l.distribute.is_empty()),
        ("failover", !l.failover.is_empty()),
        ("failoverPriority", !l.failover_priority.is_empty()),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.then_some(n))
    .collect();
    if set.len() > 1 {
        f.error(
            at,
            format!(
                "only one of distribute, failover or failoverPriority may be set, found {}",
                set.join(" and ")
            ),
        );
    }
    for (i, d) in l.distribute.iter().enumerate() {
        let at = format!("{at}.distribute[{i}]");
        locality_pattern(&d.from, &format!("{at}.from"), f);
        let mut sum = 0;
        for (to, w) in &d.to {
            let at = format!("{at}.to.{to}");
            locality_pattern(to, &at, f);
            if !(1..=100).contains(w) {
                f.error(at, format!("weight {w} is out of range 1..=100"));
            } else {
                sum += w;
            }
        }
        if d.to.values().all(|w| (1..=100).contains(w)) && sum != 100 {
            f.error(
                format!("{at}.to"),
                format!("weights sum to {sum}, must sum to 100"),
            );
        }
    }
    for (i, fo) in l.failover.iter().enumerate() {
        let at = format!("{at}.failover[{i}]");
        for (side, region) in [("from", &fo.from), ("to", &fo.to)] {
            if region.is_empty() {
                f.error(format!("{at}.{side}"), "a region is required");
            } else if region.contains('/') || region.contains('*') {
                f.error(
                    format!("{at}.{side}"),
                    format!("{region:?}: failover names a region only, without '/' or '*'"),
                );
            }
        }
        if fo.from == fo.to && !fo.from.is_empty() {
            f.error(&at, "from and to must be different regions");
        }
    }
    for (i, label) in l.failover_priority.iter().enumerate() {
        if label.is_empty() {
            f.error(
                format!("{at}.failoverPriority[{i}]"),
                "a label name is required",
            );
        }
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !outlier {
        f.warning(
            at,
            "failover needs outlierDetection in the same traffic policy; without it \
             endpoints never fail over (as in Istio)",
        );
    }
}

/// `region`, `region/zone` or `region/zone/subzone`, `*` allowed as the
/// last part.
fn locality_pattern(p: &str, at: &str, f: &mut Findings) {
    let parts: Vec<&str> = p.split('/').collect();
    let bad = p.is_empty()
        || parts.len() > 3
        || parts.iter().any(|s| s.is_empty())
        || parts
            .iter()
            .enumerate()
            .any(|(i, s)| s.contains('*') && (*s != "*" || i + 1 != parts.len()));
    if bad {
        f.error(
            at,
            format!("invalid locality {p:?}: use region, region/zone or region/zone/subzone, with * only as the last part"),
        );
    }
}

/// `portLevelSettings`: each needs a port; the first entry for a port
/// applies.
pub(crate) fn port_level_settings(pls: &[PortTrafficPolicy], at: &str, f: &mut Findings) {
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (i, p) in pls.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{i}]");
        match p.port {
            None => f.error(format!("{at}.port"), "port is required"),
            Some(port) => {
                if !(1..=65535).contains(&port.number) {
                    f.error(
                        format!("{at}.port.number"),
                        format!("port {} is out of range 1..=65535", port.number),
                    );
                } else if let Some(first) = seen.get(&port.number) {
                    f.warning(
                        format!("{at}.port.number"),
                        format!(
                            "port {} already has portLevelSettings[{first}], which applies; \
                             this entry is ignored",
                            port.number
                        ),
                    );
                } else {
                    seen.insert(port.number, i);
                }
            }
        }
        if p.load_balancer.is_none()
            && p.connection_pool.is_none()
            && p.outlier_detection.is_none()
            && p.tls.is_none()
        {
            f.warning(
                &at,
                "sets no policy anymesh reads: the port gets default policies",
            );
        }
    }
}
