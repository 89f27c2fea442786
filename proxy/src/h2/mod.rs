//! The HTTP/2 server of the outbound listener (cleartext, prior knowledge).
//!
//! One task per connection reads frames, decodes header blocks ([`hpack`]),
//! and runs each stream's request through the forwarding layer as a future
//! the connection task polls itself (no task per stream, no channel between
//! the stream and the connection). Responses are encoded straight from the
//! response's fields into the connection's write buffer, and every frame
//! that is ready goes out in one write.
//!
//! What it enforces (RFC 9113): the stream state rules, flow control in both
//! directions, the frame size and header list limits, and malformed-request
//! checks. Against abuse: a cap on concurrent streams, on the size of a
//! header block (CONTINUATION floods), on streams the client resets before
//! their response (rapid reset), and no reading while the client does not
//! read what it asked for (PING and SETTINGS floods).
//!
//! The modules, by concern:
//! - [`frame`]: frame types, flags, settings, error codes, frame heads;
//! - `conn`: the driver, generic over the I/O: reads, writes, keep-alive;
//! - `state`: the connection's state and the frame loop, SETTINGS, PING, GOAWAY;
//! - `streams`: stream states, HEADERS, CONTINUATION, DATA, RST_STREAM, PRIORITY;
//! - `flow`: flow-control windows both ways, WINDOW_UPDATE;
//! - `request`: request validation (RFC 9113, 8);
//! - `send` and `encode`: responses out, header blocks and frames;
//! - `handoff`: the one place that meets the forwarding layer;
//! - [`body`]: request bodies, from DATA frames to their reader.

mod body;
mod conn;
mod encode;
mod flow;
mod frame;
mod handoff;
pub(crate) mod hpack;
mod request;
mod send;
mod state;
mod streams;

use std::time::Duration;

pub use body::RecvBody;
pub(crate) use conn::serve;
pub(crate) use encode::encode_proxied_head;

/// Streams one connection may have open at once.
const MAX_STREAMS: usize = 1024;
/// The largest decoded header list (as an HTTP/1.1 head may be).
const MAX_HEADER_LIST: usize = crate::h1::codec::MAX_HEAD;
/// The largest header block, CONTINUATION frames included.
const MAX_HEADER_BLOCK: usize = 2 * MAX_HEADER_LIST;
/// Above this much unsent output, the connection stops reading and
/// producing until the client has read some.
const WRITE_HIGH: usize = 64 * 1024;
/// Streams the client may reset before their response before the
/// connection is closed, unless most of its streams completed.
const RESET_ALLOWANCE: u64 = 200;
/// Idle time before a PING checks that the client is still there, and how
/// long its answer may take.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams closed by a reset from this side, remembered so frames the client
/// sent before it saw the reset are ignored.
const RECENT_RESETS: usize = 64;

#[cfg(test)]
mod tests;
