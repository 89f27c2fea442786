//! The text `anymesh explain` prints.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::live::{ActiveCheck, ActiveVerdict, Fused, HealthMode, HealthSources, OutlierStatus};
use super::local::{Certificate, LocalProxy};
use super::transport::{TlsKind, Transport};
use super::{BudgetInForce, BudgetSource, ClusterLive, EndpointExplanation, Explanation, Verdict};
use crate::catalog::SourceInfo;
use crate::model::{EndpointPort, Health, Labels, Locality};
use crate::routes::{ClusterPolicy, ConnectionPool, LocalityMode, OutlierDetection, RetryBudget};

impl Explanation {
    /// The explanation as text; `now` dates the "stale since" and "last sync" ages.
    pub fn render(&self, now: SystemTime) -> String {
        let mut out = String::new();
        self.render_service(&mut out);
        if !self.live {
            let _ = writeln!(
                out,
                "  offline: the policies as configured; health verdicts and counters come only \
                 from the running proxy (anymesh explain --live, or GET /explain?host={} on its \
                 admin listener)",
                self.query
            );
        }
        render_proxy(&mut out, &self.proxy, now);
        let _ = writeln!(out, "\nsources (highest precedence first):");
        let width = self.sources.iter().map(|s| s.source.as_str().len()).max();
        for s in &self.sources {
            let _ = writeln!(
                out,
                "  {:<w$}  {}",
                s.source.as_str(),
                source_state(s, now),
                w = width.unwrap_or(0)
            );
        }
        let width = self
            .clusters
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "\nclusters:");
        if self.clusters.is_empty() {
            let _ = writeln!(out, "  none in the route table for this service{}", {
                match self.service.requested_port {
                    Some(p) => format!(" on port {p}"),
                    None => String::new(),
                }
            });
        }
        for c in &self.clusters {
            let subset = match &c.subset {
                Some(s) => format!("subset {s} {{{}}}  ", LabelList(&c.selector)),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {subset}port {} {} ({})  lb {}  {} eligible, {} excluded",
                c.name, c.port.name, c.port.number, c.port.protocol, c.lb, c.eligible, c.excluded,
            );
            render_policy(&mut out, &c.policy, c.retry_budget.as_ref());
            if let Some(live) = &c.live {
                render_cluster_live(&mut out, live);
            }
        }
        let _ = writeln!(
            out,
            "\nendpoints ({}{}):",
            self.endpoints.len(),
            if self.live { "; times UTC" } else { "" }
        );
        for e in &self.endpoints {
            render_endpoint(&mut out, e, width, now);
        }
        if !self.shadowed.is_empty() {
            let _ = writeln!(
                out,
                "\nshadowed by a higher-precedence source with the same address and ports ({}):",
                self.shadowed.len()
            );
            for s in &self.shadowed {
                let _ = writeln!(
                    out,
                    "  {}  hidden by {}{}",
                    s.endpoint,
                    s.by,
                    s.address
                        .as_deref()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default()
                );
            }
        }
        out
    }

    fn render_service(&self, out: &mut String) {
        let svc = &self.service;
        let _ = writeln!(out, "service {}", svc.hostname);
        if !svc.aliases.is_empty() {
            let names: Vec<&str> = svc.aliases.iter().map(|a| a.as_str()).collect();
            let _ = writeln!(out, "  aliases: {}", names.join(", "));
        }
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|p| format!("{} {} ({})", p.name, p.number, p.protocol))
            .collect();
        let _ = writeln!(
            out,
            "  ports: {}",
            if ports.is_empty() {
                "none".into()
            } else {
                ports.join(", ")
            }
        );
        if let Some(p) = svc.requested_port {
            let declared = svc.ports.iter().any(|q| q.number == p);
            let _ = writeln!(
                out,
                "  asked for port {p}{}",
                if declared { "" } else { " (not declared)" }
            );
        }
        let sources: Vec<&str> = svc.sources.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(out, "  sources: {}", sources.join(", "));
        let _ = write!(
            out,
            "  catalog version {}; route table {} compiled from catalog version {}",
            self.catalog_version, self.table_version, self.table_catalog_version
        );
        if self.table_catalog_version != self.catalog_version {
            let _ = write!(out, " (a newer table is being compiled)");
        }
        out.push('\n');
    }
}

fn render_endpoint(out: &mut String, e: &EndpointExplanation, width: usize, now: SystemTime) {
    let _ = writeln!(
        out,
        "  {} port {}  from {} id {}",
        e.address,
        ports(&e.ports),
        e.source,
        e.native_id
    );
    if e.raw_labels == e.labels {
        let _ = writeln!(
            out,
            "    labels: {} (as the registry gave them; mapping changed nothing)",
            LabelList(&e.labels)
        );
    } else {
        let _ = writeln!(out, "    registry labels: {}", LabelList(&e.raw_labels));
        let _ = writeln!(out, "    mapped labels:   {}", LabelList(&e.labels));
    }
    let health = match e.health {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Draining => "draining",
    };
    let _ = writeln!(
        out,
        "    registry health {health}, weight {}, locality {}",
        e.weight,
        locality(&e.locality)
    );
    match &e.mesh {
        Some(m) => {
            let _ = writeln!(
                out,
                "    mesh proxy: {} on port {}, per registry {} ({})",
                m.identity,
                m.port,
                e.source,
                m.describe()
            );
        }
        None => {
            let _ = writeln!(out, "    mesh proxy: none in the registry ({})", e.source);
        }
    }
    for v in &e.clusters {
        let verdict = match &v.verdict {
            Verdict::Eligible {
                authority,
                draining_fallback,
                ..
            } => format!(
                "eligible -> {authority}{}",
                if *draining_fallback {
                    " (draining; used because no endpoint is healthy)"
                } else {
                    ""
                }
            ),
            Verdict::Excluded { reason } => format!("excluded: {reason}"),
            Verdict::Absent => {
                "not in this cluster (the table was compiled from another catalog version)"
                    .to_string()
            }
        };
        let _ = writeln!(out, "    {:<width$}  {verdict}", v.cluster);
        if let Some(h) = &v.health {
            render_health(out, h, now);
        }
        if let Some(t) = &v.transport {
            render_transport(out, t);
        }
    }
}

/// How the proxy connects to an endpoint in one cluster, under its verdict
/// line: `mtls: yes|no (...)`, then why, then what will fail.
fn render_transport(out: &mut String, t: &Transport) {
    let kind = match t.tls {
        TlsKind::Plaintext => "plaintext",
        TlsKind::MeshMtls => "mesh",
        TlsKind::OriginationSimple => "TLS origination SIMPLE",
        TlsKind::OriginationMutual => "TLS origination MUTUAL",
    };
    let mut line = format!(
        "      mtls: {} ({kind}) -> {}",
        if t.mtls { "yes" } else { "no" },
        t.connect
    );
    if let Some(sni) = &t.sni {
        let _ = write!(line, ", sni {sni}");
    }
    if !t.identities.is_empty() {
        let _ = write!(line, ", expects {}", t.identities.join(" or "));
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(out, "        why: {}", t.reason);
    if let Some(p) = &t.problem {
        let _ = writeln!(out, "        PROBLEM: {p}");
    }
}

/// The explaining proxy's trust domain, identity and certificate.
fn render_proxy(out: &mut String, p: &LocalProxy, now: SystemTime) {
    let _ = writeln!(out, "\nthis proxy (mutual TLS):");
    let _ = writeln!(
        out,
        "  trust domain {} (anymesh.yaml mesh.trust_domain)",
        p.trust_domain
    );
    if let Some(id) = &p.identity {
        let _ = writeln!(out, "  identity {id} (anymesh.yaml workloads)");
    }
    let _ = writeln!(
        out,
        "  certificate source: {}",
        p.certificate_source.as_deref().unwrap_or(
            "none (anymesh.yaml identity is not set): mesh mTLS connections are refused"
        )
    );
    let cert = match &p.certificate {
        Certificate::Unknown => {
            "known to the running proxy only (anymesh explain --live)".to_string()
        }
        Certificate::NotConfigured => "none".to_string(),
        Certificate::Missing { last_error } => format!(
            "NONE HELD: mesh mTLS connections are refused{}",
            last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        Certificate::Held {
            identity,
            not_before,
            not_after,
            valid_now,
            last_error,
        } => {
            let mut c = format!(
                "{identity}, {}, not before {}, not after {}",
                if *valid_now {
                    "valid now"
                } else {
                    "NOT VALID NOW"
                },
                Utc(*not_before),
                Utc(*not_after),
            );
            match not_after.duration_since(now) {
                Ok(left) => {
                    let _ = write!(c, " (expires in {}s)", left.as_secs());
                }
                Err(_) => c.push_str(" (expired)"),
            }
            if let Some(e) = last_error {
                let _ = write!(c, "; last error: {e}");
            }
            c
        }
        Certificate::Unreadable { error } => format!("UNREADABLE: {error}"),
    };
    let _ = writeln!(out, "  certificate: {cert}");
}

/// A cluster's policies, one line each.
fn render_policy(out: &mut String, p: &ClusterPolicy, budget: Option<&BudgetInForce>) {
    let budget = match budget {
        Some(b) => format!(
            "{} ({})",
            retry_budget(&b.budget),
            match b.from {
                BudgetSource::DestinationRule => "the DestinationRule's retryBudget",
                BudgetSource::ProxyDefault =>
                    "the proxy default, anymesh.yaml retry_budget: the DestinationRule sets none",
            }
        ),
        None => "the proxy default (anymesh.yaml retry_budget): the DestinationRule sets none"
            .to_string(),
    };
    let _ = writeln!(out, "    retry budget: {budget}");
    let _ = writeln!(
        out,
        "    connection pool: {}",
        connection_pool(&p.connection_pool)
    );
    let _ = writeln!(
        out,
        "    outlier detection: {}",
        p.outlier
            .as_ref()
            .map_or_else(|| "not configured".to_string(), outlier)
    );
    let locality = if !p.locality.enabled {
        "disabled".to_string()
    } else {
        match &p.locality.mode {
            LocalityMode::Tiers => "priority tiers (same zone, then region, then others)".into(),
            LocalityMode::Distribute(rules) => {
                let rules: Vec<String> = rules
                    .iter()
                    .map(|r| {
                        let to: Vec<String> =
                            r.to.iter().map(|(l, w)| format!("{l} {w}%")).collect();
                        format!("from {}: {}", r.from, to.join(", "))
                    })
                    .collect();
                format!("distribute {}", rules.join("; "))
            }
            LocalityMode::Failover(pairs) => {
                let pairs: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
                format!("failover {}", pairs.join(", "))
            }
            LocalityMode::FailoverPriority(labels) => {
                format!("failoverPriority {}", labels.join(", "))
            }
        }
    };
    let _ = writeln!(out, "    locality: {locality}");
}

fn retry_budget(b: &RetryBudget) -> String {
    match b {
        RetryBudget::Off => "off".into(),
        RetryBudget::Concurrent {
            percent,
            min_concurrency,
        } => format!(
            "retries in flight at most {percent}% of active requests, at least {min_concurrency}"
        ),
        RetryBudget::Rate {
            ratio,
            window,
            min_per_second,
        } => format!(
            "retries at most {}% of requests over {} plus {min_per_second}/s",
            ratio * 100.0,
            Dur(*window)
        ),
    }
}

fn connection_pool(p: &ConnectionPool) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut count = |name: &str, v: Option<u32>| {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    };
    count("tcp.maxConnections", p.max_connections);
    count("http.http1MaxPendingRequests", p.http1_max_pending_requests);
    count("http.http2MaxRequests", p.http2_max_requests);
    count(
        "http.maxRequestsPerConnection",
        p.max_requests_per_connection,
    );
    count("http.maxRetries", p.max_retries);
    count("http.maxConcurrentStreams", p.max_concurrent_streams);
    let mut time = |name: &str, v: Option<Duration>| {
        if let Some(v) = v {
            parts.push(format!("{name} {}", Dur(v)));
        }
    };
    time("tcp.connectTimeout", p.connect_timeout);
    time("tcp.maxConnectionDuration", p.max_connection_duration);
    time("tcp.idleTimeout", p.tcp_idle_timeout);
    time("http.idleTimeout", p.http_idle_timeout);
    if p.tcp_keepalive.is_some() {
        parts.push("tcp.tcpKeepalive set".into());
    }
    if parts.is_empty() {
        "not configured (no limits)".into()
    } else {
        parts.join(", ")
    }
}

fn outlier(o: &OutlierDetection) -> String {
    let mut parts = Vec::new();
    if let Some(n) = o.consecutive_5xx {
        parts.push(format!("consecutive5xxErrors {n}"));
    }
    if let Some(n) = o.consecutive_gateway {
        parts.push(format!("consecutiveGatewayErrors {n}"));
    }
    if o.split_external_local_origin {
        parts.push("splitExternalLocalOriginErrors".into());
        if let Some(n) = o.consecutive_local_origin {
            parts.push(format!("consecutiveLocalOriginFailures {n}"));
        }
    }
    parts.push(format!("interval {}", Dur(o.interval)));
    parts.push(format!("baseEjectionTime {}", Dur(o.base_ejection_time)));
    parts.push(format!("maxEjectionPercent {}", o.max_ejection_percent));
    parts.push(format!("minHealthPercent {}", o.min_health_percent));
    parts.join(", ")
}

fn render_cluster_live(out: &mut String, live: &ClusterLive) {
    let c = &live.counters;
    let overflows: Vec<String> = c
        .overflows
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(limit, n)| format!("{limit} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "    counters: {} retries, {} refused by the retry budget, {} out of attempts; \
         overflows: {}; {} waited for a connection, {} waiting now",
        c.retries,
        c.retry_budget_exhausted,
        c.retry_limit_exceeded,
        if overflows.is_empty() {
            "none".to_string()
        } else {
            overflows.join(", ")
        },
        c.waited,
        c.pending
    );
    let h = &live.health;
    let summary = format!(
        "{} of {} endpoints routable (panic threshold {}%)",
        h.routable, h.endpoints, h.panic_threshold
    );
    let _ = match h.mode {
        HealthMode::Normal => writeln!(out, "    health: {summary}"),
        HealthMode::Panic => writeln!(
            out,
            "    health: PANIC MODE, {summary}: every endpoint takes traffic, health ignored"
        ),
        HealthMode::NoneRoutable => writeln!(
            out,
            "    health: NO ENDPOINT ROUTABLE, {summary}: requests get 503 no healthy upstream (UH)"
        ),
    };
}

/// An endpoint's health sources in one cluster, under its verdict line.
fn render_health(out: &mut String, h: &HealthSources, now: SystemTime) {
    let _ = writeln!(out, "      active check: {}", active(&h.active, now));
    let outlier = match &h.outlier {
        OutlierStatus::NotConfigured => "not configured".to_string(),
        OutlierStatus::Healthy { ejections: 0 } => "healthy".to_string(),
        OutlierStatus::Healthy { ejections } => {
            format!("healthy ({ejections} ejections so far)")
        }
        OutlierStatus::Ejected {
            until,
            remaining_ms,
            cause,
            failures,
            nth,
        } => format!(
            "ejected until {} after {failures} consecutive {cause}, {nth}{} ejection ({}s left)",
            Clock(*until),
            ordinal_suffix(*nth),
            remaining_ms.div_ceil(1000)
        ),
    };
    let _ = writeln!(out, "      outlier detection: {outlier}");
    let reasons = |out: &[super::live::OutReason]| {
        out.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let fused = match &h.fused {
        Fused::Routable => "routable".to_string(),
        Fused::PanicRoutable { out } => format!(
            "routable in panic mode (health ignored), though {}",
            reasons(out)
        ),
        Fused::Out { out } => format!("not routable: {}", reasons(out)),
    };
    let _ = writeln!(out, "      => {fused}");
}

fn active(a: &ActiveCheck, now: SystemTime) -> String {
    let verdict = match a.verdict {
        ActiveVerdict::Unchecked => "unchecked",
        ActiveVerdict::Passing => "passing",
        ActiveVerdict::Failing => "failing",
    };
    let Some(check) = &a.check else {
        return match a.verdict {
            ActiveVerdict::Unchecked => "none configured".into(),
            _ => verdict.into(),
        };
    };
    let mut parts = vec![check.clone()];
    match a.last_probe {
        Some(at) => {
            let ago = now.duration_since(at).map_or(0, |d| d.as_secs());
            let mut last = format!("last probe {} ({ago}s ago)", Clock(at));
            if let Some(why) = &a.last_failure {
                let _ = write!(last, ": {why}");
            }
            parts.push(last);
        }
        None => parts.push("not probed yet".into()),
    }
    if a.consecutive_failures > 0 {
        parts.push(format!("{} failures in a row", a.consecutive_failures));
    } else if a.consecutive_passes > 0 {
        parts.push(format!("{} passes in a row", a.consecutive_passes));
    }
    parts.push(format!("{} probes", a.probes));
    format!("{verdict} ({})", parts.join(", "))
}

fn ordinal_suffix(n: u32) -> &'static str {
    match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

/// A UTC time of day, `12:03:41`.
struct Clock(SystemTime);

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
        write!(
            f,
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

/// A duration as configured: `30s`, `250ms`, `1.5s`.
struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d < Duration::from_secs(1) && d.subsec_nanos() % 1_000_000 == 0 {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

fn source_state(s: &SourceInfo, now: SystemTime) -> String {
    let mut parts = Vec::new();
    parts.push(if s.synced { "synced" } else { "never synced" }.to_string());
    parts.push(
        if s.connected {
            "connected"
        } else {
            "not connected"
        }
        .to_string(),
    );
    if let Some(at) = s.stale_since {
        parts.push(format!(
            "STALE since {}: serving its last good view",
            Since { at, now }
        ));
    }
    if let Some(at) = s.last_full_sync {
        parts.push(format!("last full sync {}", Since { at, now }));
    }
    parts.push(match s.change_count {
        1 => "1 change".to_string(),
        n => format!("{n} changes"),
    });
    if let Some(e) = &s.last_error {
        parts.push(format!("last error: {e}"));
    }
    parts.join("; ")
}

fn ports(ports: &[EndpointPort]) -> String {
    let p: Vec<String> = ports
        .iter()
        .map(|p| {
            if p.name.is_empty() {
                p.number.to_string()
            } else {
                format!("{} ({})", p.number, p.name)
            }
        })
        .collect();
    if p.is_empty() {
        "none".into()
    } else {
        p.join(", ")
    }
}

fn locality(l: &Locality) -> String {
    let parts = [&l.region, &l.zone, &l.subzone];
    if parts.iter().all(|p| p.is_none()) {
        return "-".into();
    }
    // `region/zone/subzone`, trailing unknown parts left out, inner ones `*`.
    let known = parts.iter().rposition(|p| p.is_some()).map_or(0, |i| i + 1);
    parts[..known]
        .iter()
        .map(|p| p.as_deref().unwrap_or("*"))
        .collect::<Vec<_>>()
        .join("/")
}

/// `k=v,k=v`, or `-` when empty.
struct LabelList<'a>(&'a Labels);

impl fmt::Display for LabelList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A UTC timestamp, `2025-01-31T12:00:05Z`.
struct Utc(SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(d) = self.0.duration_since(UNIX_EPOCH) else {
            return f.write_str("before 1970");
        };
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// A UTC timestamp, `2025-01-31T12:00:05Z`, and how long before `now` it was.
struct Since {
    at: SystemTime,
    now: SystemTime,
}

impl fmt::Display for Since {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Utc(self.at))?;
        match self.now.duration_since(self.at) {
            Ok(ago) => write!(f, " ({}s ago)", ago.as_secs()),
            Err(_) => Ok(()),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}
