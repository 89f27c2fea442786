//! Access logs: Envoy's default text format, Istio's TEXT default and Istio's
//! JSON default (`meshConfig.accessLogEncoding: JSON`), field for field.
//!
//! The proxy builds an [`AccessRecord`] at the end of an exchange (every
//! field borrowed, nothing allocated) and hands it to [`AccessLog::log`],
//! which
//!
//! 1. applies the [`AccessLogFilter`] (status classes, sampling),
//! 2. formats the line into a buffer of the calling thread
//!    ([`AccessLogFormat::write`]: values that came from a request are
//!    escaped and cut at [`MAX_VALUE_BYTES`]),
//! 3. appends it to a bounded queue under a lock held for one copy; when the
//!    queue is full the line is dropped and counted ([`AccessLogStats`]).
//!
//! A dedicated writer thread takes the whole queue at once and writes it in
//! one call to stdout or to a file, rotating the file by size and reopening
//! it on request ([`AccessLog::reopen`], wired to SIGHUP by
//! [`AccessLog::reopen_on_sighup`]). A thread rather than a tokio task: the
//! proxy runs one single-threaded runtime per listener thread, and a write
//! to a slow disk or a full pipe blocks; on a listener's runtime it would
//! stall that listener's requests, and a task tied to one listener's runtime
//! would also end with it. The thread sleeps on a condition variable while
//! the queue is empty (no periodic wake-up) and is woken once per batch.
//!
//! After warm-up (the thread's line buffer and the two queue buffers have
//! grown to the size of the traffic) logging a line allocates nothing.

mod config;
mod filter;
mod format;
mod sink;
mod writer;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::SystemTime;

pub use config::{AccessLogConfig, AccessLogError, AccessLogFormat};
pub use filter::{AccessLogFilter, StatusClass};
pub use format::MAX_VALUE_BYTES;
pub use writer::FLUSH_BYTES;
pub use writer::{AccessLog, AccessLogHandle, AccessLogStats, LogOutcome};

/// One exchange as an access log sees it, borrowed from the proxy's state at
/// the end of the exchange. `None` (and an empty string) is a missing value:
/// `-` in the text formats, `null` in JSON, as Envoy prints them.
///
/// Build it with [`AccessRecord::new`] and set what is known; every field is
/// public and the record is `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRecord<'a> {
    /// When the exchange started (`%START_TIME%`): the first byte of the
    /// request for HTTP, the connection for TCP. Printed in UTC with
    /// milliseconds, `2024-01-02T03:04:05.678Z`.
    pub start_time: SystemTime,
    /// The request method (`%REQ(:METHOD)%`).
    pub method: Option<&'a str>,
    /// The request path as the client sent it, before any rewrite
    /// (`%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`), query included.
    pub path: Option<&'a str>,
    /// The downstream protocol (`%PROTOCOL%`): `HTTP/1.0`, `HTTP/1.1`,
    /// `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'a str>,
    /// The response status sent downstream (`%RESPONSE_CODE%`); `0` when no
    /// response was started (the client went away first), as Envoy prints.
    pub response_code: u16,
    /// Envoy's short response flags (`%RESPONSE_FLAGS%`), comma separated
    /// when several (`UH`, `UF,URX`); `-` or empty when none.
    pub response_flags: &'a str,
    /// Why the response has its code (`%RESPONSE_CODE_DETAILS%`), e.g.
    /// `via_upstream`, `route_not_found`.
    pub response_code_details: Option<&'a str>,
    /// Why the proxy closed the connection, when it did
    /// (`%CONNECTION_TERMINATION_DETAILS%`).
    pub connection_termination_details: Option<&'a str>,
    /// Why the upstream connection failed, e.g. a TLS error
    /// (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// Request body bytes received (`%BYTES_RECEIVED%`).
    pub bytes_received: u64,
    /// Response body bytes sent (`%BYTES_SENT%`).
    pub bytes_sent: u64,
    /// Milliseconds from the start to the last byte sent (`%DURATION%`).
    pub duration_ms: u64,
    /// The upstream's time in milliseconds, the value of the response's
    /// `x-envoy-upstream-service-time` (`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`).
    pub upstream_service_time_ms: Option<u64>,
    /// The request's `x-forwarded-for` (`%REQ(X-FORWARDED-FOR)%`).
    pub x_forwarded_for: Option<&'a str>,
    /// The request's `user-agent` (`%REQ(USER-AGENT)%`).
    pub user_agent: Option<&'a str>,
    /// The request's `x-request-id` (`%REQ(X-REQUEST-ID)%`).
    pub request_id: Option<&'a str>,
    /// The request's `:authority` / `host` (`%REQ(:AUTHORITY)%`).
    pub authority: Option<&'a str>,
    /// The upstream endpoint the request went to (`%UPSTREAM_HOST%`).
    pub upstream_host: Option<SocketAddr>,
    /// The upstream cluster, Istio's `outbound|8080||svc.ns.svc.cluster.local`
    /// naming where the proxy has it (`%UPSTREAM_CLUSTER_RAW%`).
    pub upstream_cluster: Option<&'a str>,
    /// The local address of the upstream connection
    /// (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub upstream_local_address: Option<SocketAddr>,
    /// The address the downstream connection arrived on
    /// (`%DOWNSTREAM_LOCAL_ADDRESS%`).
    pub downstream_local_address: Option<SocketAddr>,
    /// The downstream peer's address (`%DOWNSTREAM_REMOTE_ADDRESS%`).
    pub downstream_remote_address: Option<SocketAddr>,
    /// The TLS SNI the downstream sent (`%REQUESTED_SERVER_NAME%`).
    pub requested_server_name: Option<&'a str>,
    /// The name of the route that matched (`%ROUTE_NAME%`).
    pub route_name: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// A record of the exchange that started at `start_time`, every other
    /// value missing (numbers 0, flags `-`).
    pub fn new(start_time: SystemTime) -> Self {
        AccessRecord {
            start_time,
            method: None,
            path: None,
            protocol: None,
            response_code: 0,
            response_flags: "-",
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
            upstream_service_time_ms: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
            route_name: None,
        }
    }
}
