//! Request bodies that arrive as DATA frames.
//!
//! The connection task pushes each frame's data into the stream's [`Inbox`];
//! whoever forwards the request (hyper's client, on its own task) reads it
//! through [`RecvBody`]. What the reader takes is credited back to the
//! client's flow-control windows: the reader signals the connection, which
//! sends the WINDOW_UPDATE frames.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;

use crate::error::BodyError;

/// Wakes the connection task when a reader took data (or went away).
#[derive(Default)]
pub(crate) struct ConnSignal {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl ConnSignal {
    fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Registers the connection task; true when a reader signalled since the last call.
    pub(crate) fn take(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.pending.swap(false, Ordering::AcqRel)
    }
}

#[derive(Default)]
struct State {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The client ended the body.
    end: bool,
    /// The stream was reset: the body is incomplete.
    reset: bool,
    /// Bytes the reader took that the connection has not credited back yet.
    taken: usize,
    /// The reader was dropped: nothing more will be read.
    gone: bool,
    reader: Option<Waker>,
}

/// One stream's received body, shared by the connection and the reader.
pub(crate) struct Inbox {
    state: Mutex<State>,
    conn: Arc<ConnSignal>,
}

impl Inbox {
    pub(crate) fn new(conn: Arc<ConnSignal>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            conn,
        })
    }

    /// Queues one DATA frame's data; false when the reader is gone (the
    /// caller credits the bytes back at once).
    pub(crate) fn push(&self, data: Bytes, end: bool) -> bool {
        let mut s = self.state.lock();
        if s.gone {
            return false;
        }
        if !data.is_empty() {
            s.data.push_back(data);
        }
        s.end |= end;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        true
    }

    /// Ends the body with trailers.
    pub(crate) fn trailers(&self, fields: HeaderMap) {
        let mut s = self.state.lock();
        s.trailers = Some(fields);
        s.end = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Ends the connection's part: what is still queued is dropped, and the
    /// reader, unless it has read everything, gets an error. Returns the
    /// bytes to credit back (taken, or dropped).
    pub(crate) fn close(&self) -> usize {
        let mut s = self.state.lock();
        let queued: usize = s.data.drain(..).map(|d| d.len()).sum();
        if queued > 0 || !s.end {
            s.end = false;
            s.trailers = None;
            s.reset = true;
        }
        s.gone = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        queued + std::mem::take(&mut s.taken)
    }

    /// Bytes to credit back: what the reader took, and everything queued once
    /// it is gone. The second value is true when the reader is gone.
    pub(crate) fn credit(&self) -> (usize, bool) {
        let mut s = self.state.lock();
        let mut n = std::mem::take(&mut s.taken);
        if s.gone {
            n += s.data.drain(..).map(|d| d.len()).sum::<usize>();
        }
        (n, s.gone)
    }
}

/// The reading end of a request body.
pub(crate) struct RecvBody {
    inbox: Arc<Inbox>,
    /// The declared `content-length`, for the size hint.
    length: Option<u64>,
}

impl RecvBody {
    pub(crate) fn new(inbox: Arc<Inbox>, length: Option<u64>) -> Self {
        Self { inbox, length }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        self.inbox.state.lock().gone = true;
        self.inbox.conn.notify();
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut s = this.inbox.state.lock();
        if let Some(d) = s.data.pop_front() {
            s.taken += d.len();
            drop(s);
            this.inbox.conn.notify();
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = s.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if s.end {
            return Poll::Ready(None);
        }
        if s.reset {
            return Poll::Ready(Some(Err(BodyError::from(
                "the client reset the stream before the request body ended",
            ))));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.inbox.state.lock();
        s.end && s.data.is_empty() && s.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
