//! The `tracing` settings.

use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Deserializer};

use super::sampling::DEFAULT_SAMPLING_PERCENT;

/// Tracing settings (in `anymesh.yaml`), for example:
///
/// ```yaml
/// sampling: 1          # percent, Istio's default
/// otlp_grpc: http://otel-collector:4317
/// otlp_http: http://otel-collector:4318             # POSTs to /v1/traces
/// zipkin: http://zipkin:9411                        # POSTs to /api/v2/spans
/// batch_size: 512
/// batch_timeout: 5s
/// queue: 2048
/// ```
///
/// An endpoint URL whose path is empty or `/` gets the protocol's standard
/// path (`/v1/traces`, `/api/v2/spans`); any other path is used as given.
/// The OTLP/gRPC exporter speaks plaintext HTTP/2 (a collector beside the
/// proxy or in the cluster); `https` is refused for it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Random sampling percentage (0–100) when the request brings no
    /// decision.
    #[serde(default = "default_sampling")]
    pub sampling: f64,
    #[serde(default, deserialize_with = "grpc_url")]
    pub otlp_grpc: Option<Uri>,
    #[serde(default, deserialize_with = "http_url")]
    pub otlp_http: Option<Uri>,
    #[serde(default, deserialize_with = "http_url")]
    pub zipkin: Option<Uri>,
    /// The most spans in one export.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The longest a recorded span waits for its batch to fill.
    #[serde(default = "default_batch_timeout", deserialize_with = "duration")]
    pub batch_timeout: Duration,
    /// Spans waiting for export; beyond it new spans are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The longest one export may take before it is abandoned.
    #[serde(default = "default_export_timeout", deserialize_with = "duration")]
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            sampling: default_sampling(),
            otlp_grpc: None,
            otlp_http: None,
            zipkin: None,
            batch_size: default_batch_size(),
            batch_timeout: default_batch_timeout(),
            queue: default_queue(),
            export_timeout: default_export_timeout(),
        }
    }
}

impl TracingConfig {
    /// Checks what the types do not: a sampling percentage in 0–100 and
    /// at least one collector.
    pub fn validate(&self) -> Result<(), super::TraceError> {
        let invalid = |m: String| Err(super::TraceError::InvalidConfig(m));
        if !(0.0..=100.0).contains(&self.sampling) {
            return invalid(format!(
                "sampling must be a percentage between 0 and 100, got {}",
                self.sampling
            ));
        }
        if self.zipkin.is_none() && self.otlp_grpc.is_none() && self.otlp_http.is_none() {
            return invalid("names no collector (zipkin, otlp_grpc or otlp_http)".into());
        }
        Ok(())
    }
}

fn default_sampling() -> f64 {
    DEFAULT_SAMPLING_PERCENT
}
fn default_batch_size() -> usize {
    512
}
fn default_batch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_queue() -> usize {
    2048
}
fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    anymesh_core::config::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn url<'de, D: Deserializer<'de>>(d: D, https: bool) -> Result<Option<Uri>, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    let uri: Uri = s
        .parse()
        .map_err(|e| D::Error::custom(format!("{s:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if https => {}
        Some("https") => {
            return Err(D::Error::custom(format!(
                "{s:?}: the OTLP/gRPC exporter speaks plaintext only (use http://)"
            )))
        }
        _ => {
            return Err(D::Error::custom(format!(
                "{s:?}: the URL must start with http:// or https://"
            )))
        }
    }
    if uri.authority().is_none() {
        return Err(D::Error::custom(format!("{s:?}: the URL has no host")));
    }
    Ok(Some(uri))
}

fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uri>, D::Error> {
    url(d, true)
}

fn grpc_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uri>, D::Error> {
    url(d, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let c: TracingConfig = serde_json::from_str(
            r#"{"sampling": 10, "otlp_grpc": "http://127.0.0.1:4317",
                "zipkin": "https://zipkin:9411/", "batch_timeout": "250ms", "queue": 8}"#,
        )
        .expect("valid");
        assert_eq!(c.sampling, 10.0);
        assert_eq!(c.batch_timeout, Duration::from_millis(250));
        assert_eq!(c.queue, 8);
        assert_eq!(c.batch_size, 512);
        assert!(c.otlp_http.is_none());
        assert_eq!(TracingConfig::default().sampling, 1.0);
        assert!(c.validate().is_ok());
        for invalid in [
            r#"{"sampling": 101, "zipkin": "http://z"}"#,
            r#"{"sampling": 5}"#,
        ] {
            let c: TracingConfig = serde_json::from_str(invalid).expect("parses");
            assert!(c.validate().is_err(), "{invalid}");
        }
        for bad in [
            r#"{"samplng": 1}"#,
            r#"{"zipkin": "ftp://x"}"#,
            r#"{"zipkin": "not a url"}"#,
            r#"{"otlp_grpc": "https://collector:4317"}"#,
            r#"{"batch_timeout": "soon"}"#,
        ] {
            assert!(serde_json::from_str::<TracingConfig>(bad).is_err(), "{bad}");
        }
    }
}
