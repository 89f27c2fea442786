//! The settings of a listener's HTTP/1.1 server.

use std::time::Duration;

/// Listener settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSettings {
    /// Close an HTTP/1.1 connection whose request headers take longer than
    /// this (slowloris protection). Costs a timer for a request whose head
    /// does not come whole in its first read; off by default because the
    /// outbound listener only serves local apps.
    pub header_read_timeout: Option<Duration>,
    /// Close a keep-alive connection idle this long between requests (at
    /// most a quarter later: one timer per connection ticks every quarter
    /// of it). Off by default on the outbound listener; on for the inbound
    /// one.
    pub idle_timeout: Option<Duration>,
}
