//! The text `anymesh explain` prints.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{EndpointExplanation, Explanation, Verdict};
use crate::catalog::SourceInfo;
use crate::model::{EndpointPort, Health, Labels, Locality};

impl Explanation {
    /// The explanation as text; `now` dates the "stale since" and "last sync" ages.
    pub fn render(&self, now: SystemTime) -> String {
        let mut out = String::new();
        self.render_service(&mut out);
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
        }
        let _ = writeln!(out, "\nendpoints ({}):", self.endpoints.len());
        for e in &self.endpoints {
            render_endpoint(&mut out, e, width);
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

fn render_endpoint(out: &mut String, e: &EndpointExplanation, width: usize) {
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
        "    health {health}, weight {}, locality {}",
        e.weight,
        locality(&e.locality)
    );
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

/// A UTC timestamp, `2025-01-31T12:00:05Z`, and how long before `now` it was.
struct Since {
    at: SystemTime,
    now: SystemTime,
}

impl fmt::Display for Since {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(d) = self.at.duration_since(UNIX_EPOCH) else {
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
        )?;
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
