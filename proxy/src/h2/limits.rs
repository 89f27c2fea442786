//! The limits and windows of this HTTP/2 server, in one place.

use std::time::Duration;

/// Streams one connection may have open at once.
pub(super) const MAX_STREAMS: usize = 1024;
/// The largest decoded header list (as an HTTP/1.1 head may be).
pub(super) const MAX_HEADER_LIST: usize = crate::h1::codec::MAX_HEAD;
/// The largest header block, CONTINUATION frames included.
pub(super) const MAX_HEADER_BLOCK: usize = 2 * MAX_HEADER_LIST;
/// Above this much unsent output, the connection stops reading and
/// producing until the client has read some.
pub(super) const WRITE_HIGH: usize = 64 * 1024;
/// Streams the client may reset before their response before the
/// connection is closed, unless most of its streams completed.
pub(super) const RESET_ALLOWANCE: u64 = 200;
/// Idle time before a PING checks that the client is still there, and how
/// long its answer may take.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(30);
pub(super) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams closed by a reset from this side, remembered so frames the client
/// sent before it saw the reset are ignored.
pub(super) const RECENT_RESETS: usize = 64;

/// The receive window of each stream and of the connection: how much request
/// body the client may send ahead of the upstream reading it.
pub(super) const STREAM_WINDOW: u32 = 256 * 1024;
pub(super) const CONN_WINDOW: u32 = 1024 * 1024;
/// The initial window of the protocol, and the largest a window may be.
pub(super) const DEFAULT_WINDOW: i64 = 65_535;
pub(super) const MAX_WINDOW: i64 = (1 << 31) - 1;
