//! Telemetry that leaves the proxy off the request path: access logs
//! ([`access_log`]) and distributed traces ([`trace`]). The proxy builds a
//! record at the end of an exchange and hands it over; formatting and
//! writing, batching and exporting happen elsewhere, behind bounded queues
//! whose overflow is counted, so a slow disk or a collector that is down
//! costs a request nothing.
//!
//! The metrics (Istio's standard names and labels) live in the proxy
//! (`anymesh_proxy::metrics`), beside the request path that records them.

pub mod access_log;
pub mod trace;
