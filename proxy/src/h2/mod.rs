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

pub(crate) mod body;
mod conn;
mod encode;
mod flow;
mod frame;
mod handoff;
pub(crate) mod hpack;
mod limits;
mod request;
mod send;
mod state;
mod stream;
mod streams;

pub(crate) use conn::serve;

#[cfg(test)]
mod tests;
