//! The access log's and the tracer's counters, read when scraped.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::counters;
use crate::telemetry::Telemetry;

const NO_LABELS: [(&str, &str); 0] = [];

/// Under `anymesh_`, when configured:
///
/// - `access_log_lines_total{result}`: `written`, `dropped` (the queue was
///   full: the writer falls behind), `lost` (in a batch whose write failed);
/// - `access_log_write_errors_total`: failed writes, opens and rotations;
/// - `trace_spans_total{result}`: `exported` (some collector accepted the
///   batch), `dropped` (the queue was full);
/// - `trace_export_failures_total`: exports (a batch to one collector)
///   that failed or timed out.
pub(super) struct TelemetryCollector(pub(super) Arc<Telemetry>);

impl fmt::Debug for TelemetryCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryCollector").finish_non_exhaustive()
    }
}

impl Collector for TelemetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        if let Some(log) = self.0.access_log() {
            let s = log.stats();
            counters(
                &mut encoder,
                "access_log_lines",
                "Access log lines by what became of them",
                &[
                    ([("result", "written")], s.written),
                    ([("result", "dropped")], s.dropped),
                    ([("result", "lost")], s.lost),
                ],
            )?;
            counters(
                &mut encoder,
                "access_log_write_errors",
                "Failed access log writes, opens, reopens and rotations",
                &[(NO_LABELS, s.write_errors)],
            )?;
        }
        if let Some(tracer) = self.0.tracer() {
            let s = tracer.stats();
            counters(
                &mut encoder,
                "trace_spans",
                "Spans by what became of them",
                &[
                    ([("result", "exported")], s.exported),
                    ([("result", "dropped")], s.dropped),
                ],
            )?;
            counters(
                &mut encoder,
                "trace_export_failures",
                "Span exports (one batch to one collector) that failed or timed out",
                &[(NO_LABELS, s.export_failures)],
            )?;
        }
        Ok(())
    }
}
