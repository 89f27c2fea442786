//! The access log's configuration, as anymesh.yaml can embed it:
//!
//! ```yaml
//! path: /var/log/anymesh/access.log   # absent: stdout
//! format: json                        # text (default) | envoy | json
//! filter:
//!   status: [4xx, 5xx, none]          # absent or empty: every status
//!   sample_percent: 10                # default 100
//! max_size: 104857600                 # rotate at 100 MiB; absent: never
//! keep: 5                             # access.log.1 … access.log.5
//! queue: 4096                         # lines waiting for the writer
//! queue_bytes: 4194304                # bytes waiting for the writer
//! flush_interval: 1s                  # the longest a line waits to be written
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::AccessLogFilter;

/// Where, how and what to log. Every field has a default, so `{}` is stdout
/// in Istio's text format with everything logged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// The file lines are appended to, created when missing; `None` writes
    /// to the process's stdout (Istio's `accessLogFile: /dev/stdout`).
    pub path: Option<PathBuf>,
    /// The line format: `text` (Istio's TEXT default), `envoy` (Envoy's own
    /// default format string) or `json` (Istio's JSON default).
    pub format: AccessLogFormat,
    /// Which exchanges are logged: status classes and a sampling
    /// percentage. The default logs every exchange.
    pub filter: AccessLogFilter,
    /// Rotate the file when the next lines would take it past this many
    /// bytes: the file becomes `<path>.1`, `<path>.1` becomes `<path>.2`
    /// and so on, and a new file is started. Rotation happens between
    /// lines, so a file exceeds this only when a single line is longer
    /// than it. `None` never rotates (reopen on SIGHUP for an external
    /// logrotate). Ignored for stdout.
    pub max_size: Option<u64>,
    /// How many rotated files to keep (`<path>.1` newest … `<path>.<keep>`
    /// oldest); the oldest is deleted at rotation. `0` keeps none: the full
    /// file is deleted and started again. Default 5, at most 1000.
    pub keep: u32,
    /// How many lines may wait for the writer; a line logged while the
    /// queue is full is dropped and counted, never waited for. Default 4096.
    pub queue: usize,
    /// How many bytes of lines may wait for the writer, the same way;
    /// bounds the memory a burst of long lines can take. Default 4 MiB, at
    /// least 64 KiB.
    pub queue_bytes: usize,
    /// The longest a line waits before the writer writes it (Envoy's
    /// `file_flush_interval_msec`, also 1 s by default). Lines are written
    /// sooner once [`FLUSH_BYTES`](super::FLUSH_BYTES) of them (or half the
    /// queue's line bound) are waiting. Waking the writer for every line
    /// would cost each request a futex wake and a `write`. At most 60 s.
    #[serde(deserialize_with = "duration")]
    pub flush_interval: std::time::Duration,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let s = String::deserialize(d)?;
    anymesh_core::config::parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            path: None,
            format: AccessLogFormat::Text,
            filter: AccessLogFilter::default(),
            max_size: None,
            keep: 5,
            queue: 4096,
            queue_bytes: 4 << 20,
            flush_interval: std::time::Duration::from_secs(1),
        }
    }
}

/// The line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// Istio's default TEXT format: Envoy's default with the response code
    /// details, connection termination details, upstream transport failure
    /// reason, upstream cluster, the addresses, the SNI and the route name.
    #[default]
    Text,
    /// Envoy's default format string, as an Envoy without Istio prints.
    Envoy,
    /// Istio's default JSON format, one object a line.
    Json,
}

/// Why an access log could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// A configuration value is out of its range.
    #[error("invalid access log configuration: {0}")]
    InvalidConfig(&'static str),
    /// The log file could not be opened.
    #[error("opening access log file {path}")]
    OpenFile {
        /// The configured path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("starting the access log writer thread")]
    SpawnWriter(#[source] std::io::Error),
}

impl AccessLogConfig {
    /// Checks the ranges the types do not: a sampling percentage in
    /// 0–100, a non-empty queue, a rotation size above zero.
    pub fn validate(&self) -> Result<(), AccessLogError> {
        let p = self.filter.sample_percent;
        if !(0.0..=100.0).contains(&p) {
            return Err(AccessLogError::InvalidConfig(
                "filter.sample_percent must be between 0 and 100",
            ));
        }
        if self.queue == 0 {
            return Err(AccessLogError::InvalidConfig("queue must be at least 1"));
        }
        if self.queue_bytes < 64 << 10 {
            return Err(AccessLogError::InvalidConfig(
                "queue_bytes must be at least 65536",
            ));
        }
        if self.max_size == Some(0) {
            return Err(AccessLogError::InvalidConfig(
                "max_size must be above 0 (leave it out to never rotate)",
            ));
        }
        if self.keep > 1000 {
            return Err(AccessLogError::InvalidConfig("keep must be at most 1000"));
        }
        if self.flush_interval > std::time::Duration::from_secs(60) {
            return Err(AccessLogError::InvalidConfig(
                "flush_interval must be at most 60s",
            ));
        }
        Ok(())
    }
}
