//! The `anymesh.yaml` keys of the resilience features: active health
//! checks, the proxy's own locality, the default retry budget, and the
//! mirror's Host suffix.
//!
//! ```yaml
//! health_checks:
//!   - service: reviews          # hostname, or its leading labels
//!     subset: v2                # optional: only that DestinationRule subset's cluster
//!     port: 9080                # optional: only that service port's cluster
//!     http: {path: /healthz, expected_statuses: [200-399], host: reviews}
//!     # or tcp: {}, or grpc: {service: ""}
//!     interval: 10s
//!     timeout: 1s               # less than interval
//!     unhealthy_threshold: 3
//!     healthy_threshold: 2
//!     jitter: 10%               # of interval, or a duration
//! max_concurrent_probes: 32     # all checks together
//! locality: {region: eu-west, zone: eu-west-1a, subzone: rack7}
//! retry_budget: {ratio: 0.2, window: 10s, min_per_second: 10}   # or: off
//! mirror_shadow_suffix: false
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use anymesh_core::config::duration::{parse_duration, GoDuration};
use anymesh_core::routes::RetryBudget;
use anymesh_core::{Hostname, Locality};
use anymesh_proxy::health::{CheckKind, HealthCheck, HttpCheck};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A Go-syntax duration, its error raised at the scalar (so the error's
/// path names the key).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    GoDuration::deserialize(d).map(GoDuration::as_duration)
}

/// One entry of `health_checks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSettings {
    /// The service, as VirtualService destinations name it: its hostname,
    /// or leading labels of it (`reviews` for `reviews.shop.svc.cluster.local`).
    pub service: String,
    /// Only the cluster of this DestinationRule subset.
    #[serde(default)]
    pub subset: Option<String>,
    /// Only the cluster of this service port.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpCheckSettings>,
    #[serde(default, deserialize_with = "present")]
    pub tcp: Option<TcpCheckSettings>,
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcCheckSettings>,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default)]
    pub jitter: Jitter,
}

/// `http:` of a health check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckSettings {
    #[serde(default = "default_path")]
    pub path: String,
    /// Codes (`200`) or ranges (`200-399`); default `[200-399]`.
    #[serde(default = "default_statuses")]
    pub expected_statuses: Vec<StatusRange>,
    /// The `Host` header; default: the service's hostname.
    #[serde(default)]
    pub host: Option<String>,
}

impl Default for HttpCheckSettings {
    fn default() -> Self {
        Self {
            path: default_path(),
            expected_statuses: default_statuses(),
            host: None,
        }
    }
}

/// `tcp: {}` of a health check (nothing to set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheckSettings {}

/// `grpc:` of a health check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCheckSettings {
    /// The `service` of the `HealthCheckRequest` (empty: the whole server).
    #[serde(default)]
    pub service: String,
}

/// Statuses an HTTP check accepts: `200` or `200-399`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRange(pub RangeInclusive<u16>);

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code (200) or a range (200-399)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
                let code = status(&v.to_string()).map_err(E::custom)?;
                Ok(StatusRange(code..=code))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
                Err(E::custom(format!("{v} is not an HTTP status (100-599)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
                let (from, to) = v.split_once('-').unwrap_or((v, v));
                let (from, to) = (
                    status(from).map_err(E::custom)?,
                    status(to).map_err(E::custom)?,
                );
                if from > to {
                    return Err(E::custom(format!("range {v:?} ends before it starts")));
                }
                Ok(StatusRange(from..=to))
            }
        }
        d.deserialize_any(V)
    }
}

fn status(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!("{s:?} is not an HTTP status (100-599)")),
    }
}

/// `jitter:` a share of the interval (`10%`) or a duration (`500ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    Percent(f64),
    Fixed(Duration),
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::Percent(10.0)
    }
}

impl Jitter {
    /// The most that is added to one interval.
    pub fn of(self, interval: Duration) -> Duration {
        match self {
            Jitter::Percent(p) => interval.mul_f64(p / 100.0),
            Jitter::Fixed(d) => d,
        }
    }
}

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Jitter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage of the interval (10%) or a duration (500ms)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Jitter, E> {
                if let Some(p) = v.strip_suffix('%') {
                    return match p.trim().parse::<f64>() {
                        Ok(p) if (0.0..=100.0).contains(&p) => Ok(Jitter::Percent(p)),
                        _ => Err(E::custom(format!("{v:?}: a percentage from 0% to 100%"))),
                    };
                }
                parse_duration(v).map(Jitter::Fixed).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Jitter, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A key that is present counts even when its value is null (`tcp:`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_unhealthy() -> u32 {
    3
}
fn default_healthy() -> u32 {
    2
}
fn default_path() -> String {
    "/".into()
}
fn default_statuses() -> Vec<StatusRange> {
    vec![StatusRange(200..=399)]
}
pub(super) fn default_max_concurrent_probes() -> usize {
    anymesh_proxy::health::DEFAULT_MAX_CONCURRENT_PROBES
}

impl HealthCheckSettings {
    /// Checks the values serde cannot; errors start with the field's path
    /// under `health_checks[i]`.
    /// Checks the values serde cannot; `at` (`health_checks[0]`) starts
    /// every error, followed by the field.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        Hostname::new(&self.service).map_err(|e| format!("{at}.service: {e}"))?;
        if self.subset.as_deref() == Some("") {
            return Err(format!("{at}.subset: empty"));
        }
        if self.port == Some(0) {
            return Err(format!("{at}.port: must be 1-65535"));
        }
        let kinds = [self.http.is_some(), self.tcp.is_some(), self.grpc.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(format!("{at}: exactly one of http, tcp, grpc must be set"));
        }
        if let Some(http) = &self.http {
            if !http.path.starts_with('/')
                || http.path.chars().any(|c| c.is_ascii_control() || c == ' ')
            {
                return Err(format!("{at}.http.path: {:?} must start with / and hold no spaces or control characters",
                    http.path
                ));
            }
            if http.expected_statuses.is_empty() {
                return Err(format!(
                    "{at}.http.expected_statuses: empty: no answer could pass"
                ));
            }
            if let Some(host) = &http.host {
                if host.is_empty() || host.chars().any(|c| c.is_ascii_control() || c == ' ') {
                    return Err(format!(
                        "{at}.http.host: {host:?} is not a Host header value"
                    ));
                }
            }
        }
        if self.interval.is_zero() {
            return Err(format!("{at}.interval: must be more than 0"));
        }
        if self.timeout.is_zero() || self.timeout >= self.interval {
            return Err(format!(
                "{at}.timeout: must be more than 0 and less than interval ({:?}), got {:?}",
                self.interval, self.timeout
            ));
        }
        if self.unhealthy_threshold == 0 {
            return Err(format!("{at}.unhealthy_threshold: must be at least 1"));
        }
        if self.healthy_threshold == 0 {
            return Err(format!("{at}.healthy_threshold: must be at least 1"));
        }
        if let Jitter::Fixed(j) = self.jitter {
            if j > self.interval {
                return Err(format!(
                    "{at}.jitter: {j:?} is more than the interval ({:?})",
                    self.interval
                ));
            }
        }
        Ok(())
    }

    /// The proxy's form of this check.
    pub fn to_check(&self) -> HealthCheck {
        let kind = if let Some(http) = &self.http {
            CheckKind::Http(HttpCheck {
                path: http.path.clone(),
                expected_statuses: http.expected_statuses.iter().map(|r| r.0.clone()).collect(),
                host: http.host.clone(),
            })
        } else if let Some(grpc) = &self.grpc {
            CheckKind::Grpc {
                service: grpc.service.clone(),
            }
        } else {
            CheckKind::Tcp
        };
        HealthCheck {
            service: Hostname::new(&self.service)
                .map(|h| h.as_str().to_string())
                .unwrap_or_else(|_| self.service.clone()),
            subset: self.subset.clone(),
            port: self.port,
            kind,
            interval: self.interval,
            timeout: self.timeout,
            unhealthy_threshold: self.unhealthy_threshold,
            healthy_threshold: self.healthy_threshold,
            jitter: self.jitter.of(self.interval),
        }
    }
}

/// `locality:` as written (unknown keys refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalitySettings {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    subzone: Option<String>,
}

/// Reads `locality: {region, zone, subzone}`.
pub(super) fn locality<'de, D: Deserializer<'de>>(d: D) -> Result<Locality, D::Error> {
    let l = Option::<LocalitySettings>::deserialize(d)?.unwrap_or_default();
    Ok(Locality {
        region: l.region,
        zone: l.zone,
        subzone: l.subzone,
    })
}

/// Checks the proxy's locality: parts non-empty, without `/`, and a zone
/// only within a region, a subzone only within a zone.
pub(super) fn validate_locality(l: &Locality) -> Result<(), String> {
    for (name, part) in [
        ("region", &l.region),
        ("zone", &l.zone),
        ("subzone", &l.subzone),
    ] {
        if let Some(p) = part {
            if p.is_empty() || p.contains('/') {
                return Err(format!(
                    "locality.{name}: {p:?} must be non-empty and hold no /"
                ));
            }
        }
    }
    if l.zone.is_some() && l.region.is_none() {
        return Err("locality.zone: set without a region".into());
    }
    if l.subzone.is_some() && l.zone.is_none() {
        return Err("locality.subzone: set without a zone".into());
    }
    Ok(())
}

/// The default budget: retries at most 20 % of requests over 10 s, plus 10 a second.
pub(super) fn default_retry_budget() -> RetryBudget {
    RetryBudget::Rate {
        ratio: 0.2,
        window: Duration::from_secs(10),
        min_per_second: 10,
    }
}

/// `retry_budget:` as a map (missing keys keep their defaults).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateBudget {
    #[serde(default = "default_ratio")]
    ratio: f64,
    #[serde(default = "default_window", deserialize_with = "duration")]
    window: Duration,
    #[serde(default = "default_min_per_second")]
    min_per_second: u32,
}

fn default_ratio() -> f64 {
    0.2
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_min_per_second() -> u32 {
    10
}

/// Reads `retry_budget: off` or `retry_budget: {ratio, window, min_per_second}`.
pub(super) fn retry_budget<'de, D: Deserializer<'de>>(d: D) -> Result<RetryBudget, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = RetryBudget;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("`off` or a map {ratio, window, min_per_second}")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryBudget, E> {
            match v {
                "off" => Ok(RetryBudget::Off),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RetryBudget, A::Error> {
            let b = RateBudget::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(RetryBudget::Rate {
                ratio: b.ratio,
                window: b.window,
                min_per_second: b.min_per_second,
            })
        }
    }
    d.deserialize_any(V)
}

/// Checks a rate budget's values.
pub(super) fn validate_retry_budget(b: &RetryBudget) -> Result<(), String> {
    if let RetryBudget::Rate { ratio, window, .. } = b {
        if !ratio.is_finite() || !(0.0..=1.0).contains(ratio) {
            return Err(format!(
                "retry_budget.ratio: must be from 0 to 1, got {ratio}"
            ));
        }
        if window.is_zero() || *window > Duration::from_secs(3600) {
            return Err(format!(
                "retry_budget.window: must be more than 0 and at most 1h, got {window:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
