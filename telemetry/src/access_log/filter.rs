//! Which exchanges are logged: by status class (Envoy's `status_code`
//! filter, by class), then sampled (Envoy's `runtime_filter`: a random
//! number below a fraction of a million).

use serde::Deserialize;

use super::AccessRecord;

/// Which exchanges are logged. The default logs all of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogFilter {
    /// Log only exchanges whose response code is in one of these classes
    /// (`1xx` … `5xx`, and `none` for code 0, no response sent: the client
    /// went away first). Empty logs every code.
    pub status: Vec<StatusClass>,
    /// The percentage of the exchanges that pass `status` which are logged,
    /// 0 to 100 (fractions allowed, to a millionth). Default 100.
    pub sample_percent: f64,
}

impl Default for AccessLogFilter {
    fn default() -> Self {
        AccessLogFilter {
            status: Vec::new(),
            sample_percent: 100.0,
        }
    }
}

/// A class of response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum StatusClass {
    /// No response was sent: code 0.
    #[serde(rename = "none")]
    NoResponse,
    /// 100–199.
    #[serde(rename = "1xx")]
    Informational,
    /// 200–299.
    #[serde(rename = "2xx")]
    Success,
    /// 300–399.
    #[serde(rename = "3xx")]
    Redirection,
    /// 400–499.
    #[serde(rename = "4xx")]
    ClientError,
    /// 500–599.
    #[serde(rename = "5xx")]
    ServerError,
}

impl StatusClass {
    /// The class of `code`; `None` for a code outside 0 and 100–599.
    pub fn of(code: u16) -> Option<StatusClass> {
        Some(match code {
            0 => StatusClass::NoResponse,
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => return None,
        })
    }
}

/// Sampling works in parts per million, as Envoy's `FractionalPercent`
/// with the `MILLION` denominator.
const MILLION: u64 = 1_000_000;

impl AccessLogFilter {
    /// Whether `random` is consulted at all: false when every exchange that
    /// passes the status classes is logged, so the caller can skip drawing.
    pub fn samples(&self) -> bool {
        self.sample_percent < 100.0
    }

    /// Whether `record` is logged. `random` is any uniformly distributed
    /// number: the exchange is sampled in when `random % 1_000_000` is below
    /// `sample_percent × 10_000` (rounded), so a test passing a fixed number
    /// gets a fixed answer.
    pub fn matches(&self, record: &AccessRecord<'_>, random: u64) -> bool {
        if !self.status.is_empty() {
            match StatusClass::of(record.response_code) {
                Some(class) if self.status.contains(&class) => {}
                _ => return false,
            }
        }
        if !self.samples() {
            return true;
        }
        // `AccessLogConfig::validate` rejects a percentage outside 0..=100;
        // unvalidated, it clamps (and NaN logs everything: `samples` is false).
        let per_million = (self.sample_percent.clamp(0.0, 100.0) * 10_000.0).round() as u64;
        random % MILLION < per_million
    }
}
