//! What the connection keeps of one stream: its windows, its request
//! body's queue, its response side, and a header block still arriving in
//! CONTINUATION frames. The frames that change them are in `streams`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::AbortHandle;

use super::body::Inbox;
use super::frame::Code;
use super::handoff::ResponseBody;

pub(super) struct Stream {
    /// The request body's queue, while the client may still send data.
    pub(super) inbox: Option<Arc<Inbox>>,
    /// The client ended its side.
    pub(super) remote_done: bool,
    /// How much the client may still send on this stream.
    pub(super) recv_window: i64,
    /// Data read that was not credited back yet.
    pub(super) recv_credit: u32,
    /// The declared `content-length` and the data received.
    pub(super) expect_len: Option<u64>,
    pub(super) received: u64,
    /// How much this side may still send on this stream.
    pub(super) send_window: i64,
    pub(super) out: Out,
    pub(super) abort: AbortHandle,
}

/// The response side of a stream.
pub(super) enum Out {
    /// The request is being served.
    Waiting,
    /// The head went out; the body follows as the windows allow.
    Body {
        body: ResponseBody,
        /// Data taken from the body that the windows did not let out yet.
        pending: Option<Bytes>,
    },
}

/// A header block split over HEADERS and CONTINUATION frames.
pub(super) struct Continuation {
    pub(super) id: u32,
    pub(super) end_stream: bool,
    /// Reset the stream with this code instead of serving it.
    pub(super) reject: Option<Code>,
    pub(super) block: BytesMut,
}

impl Continuation {
    /// The bytes of the header block held so far.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.block.len()
    }
}
