//! The request body a transport hands to the forwarding layer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::BodyError;

/// A request body as the proxy forwards it.
pub(crate) enum RequestBody {
    /// The request has no body.
    Empty,
    /// From a connection hyper serves.
    Hyper(Incoming),
    /// From this proxy's HTTP/2 server ([`crate::h2`]).
    H2(crate::h2::body::RecvBody),
    /// Read in full before forwarding (a mirrored copy, a replayable
    /// request); `None` once sent.
    Full(Option<Bytes>),
    /// A body copied into a [`Tee`] as it streams.
    Teed {
        inner: Box<RequestBody>,
        tee: std::sync::Arc<Tee>,
    },
    /// Data already taken from a body that goes on streaming (boxed: rare,
    /// and every request's future holds a body).
    Resumed(Box<Resumed>),
    /// A gRPC request's body, its messages counted as they stream (boxed:
    /// gRPC requests only).
    Counted(Box<Counted>),
}

/// A request body whose gRPC messages are counted into a shared total,
/// read when the exchange ends.
pub(crate) struct Counted {
    inner: RequestBody,
    messages: super::end::GrpcMessages,
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RequestBody {
    /// This body, counting its gRPC messages into the returned total.
    pub(crate) fn counted(self) -> (Self, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = RequestBody::Counted(Box::new(Counted {
            inner: self,
            messages: super::end::GrpcMessages::default(),
            total: total.clone(),
        }));
        (body, total)
    }
}

/// What [`RequestBody::Resumed`] gives before the rest of the body.
pub(crate) struct Resumed {
    head: Option<Bytes>,
    /// Trailers taken after `head` (then `rest` has ended).
    trailers: Option<http::HeaderMap>,
    /// The error the body broke with while being taken, given after `head`.
    error: Option<BodyError>,
    rest: RequestBody,
}

/// A copy of a streamed request body, kept while it goes to the first
/// attempt so that a retry can send it again: usable when the body ended
/// within the bound and had no trailers.
pub(crate) struct Tee {
    limit: usize,
    copy: parking_lot::Mutex<bytes::BytesMut>,
    /// 0: still streaming; 1: ended, copy complete; 2: not replayable.
    state: std::sync::atomic::AtomicU8,
}

impl Tee {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            copy: parking_lot::Mutex::new(bytes::BytesMut::new()),
            state: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The body ended within the bound: it can be sent again.
    pub(crate) fn complete(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Acquire) == 1
    }

    /// The whole body, when it ended within the bound.
    pub(crate) fn whole(&self) -> Option<Bytes> {
        (self.state.load(std::sync::atomic::Ordering::Acquire) == 1)
            .then(|| self.copy.lock().clone().freeze())
    }

    fn seen(&self, frame: &Frame<Bytes>) {
        use std::sync::atomic::Ordering;
        if self.state.load(Ordering::Relaxed) != 0 {
            return;
        }
        match frame.data_ref() {
            Some(data) => {
                let mut copy = self.copy.lock();
                if copy.len() + data.len() > self.limit {
                    self.state.store(2, Ordering::Release);
                    *copy = bytes::BytesMut::new();
                } else {
                    copy.extend_from_slice(data);
                }
            }
            None => self.state.store(2, Ordering::Release),
        }
    }

    fn ended(&self) {
        use std::sync::atomic::Ordering;
        let _ = self
            .state
            .compare_exchange(0, 1, Ordering::Release, Ordering::Relaxed);
    }
}

/// A body whose whole arrived already, or the body to stream.
pub(crate) enum Taken {
    Whole(Bytes),
    Streaming(RequestBody),
}

impl RequestBody {
    /// Takes the body whole when all of it (at most `limit` bytes, no
    /// trailers) has arrived already, without waiting: a unary gRPC call's
    /// message usually comes with its head. Otherwise the body streams on,
    /// with what was taken first.
    pub(crate) fn take_whole(mut self, limit: usize) -> Taken {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut taken = bytes::BytesMut::new();
        let mut trailers = None;
        let mut error = None;
        loop {
            if self.is_end_stream() {
                return Taken::Whole(taken.freeze());
            }
            match Pin::new(&mut self).poll_frame(&mut cx) {
                Poll::Ready(None) => return Taken::Whole(taken.freeze()),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if taken.len() + data.len() <= limit => taken.extend_from_slice(&data),
                    Ok(data) => {
                        taken.extend_from_slice(&data);
                        break;
                    }
                    // Trailers: the body's end, forwarded but not replayed.
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        break;
                    }
                },
                // Kept: a body that broke must not look ended.
                Poll::Ready(Some(Err(e))) => {
                    error = Some(e);
                    break;
                }
                // The poll registered no waker that matters: the transport
                // polls again with its own when it forwards the rest.
                Poll::Pending => break,
            }
        }
        if taken.is_empty() && trailers.is_none() && error.is_none() {
            return Taken::Streaming(self);
        }
        Taken::Streaming(RequestBody::Resumed(Box::new(Resumed {
            head: (!taken.is_empty()).then(|| taken.freeze()),
            trailers,
            error,
            rest: self,
        })))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|r| r.map(|f| f.map_err(BodyError::from))),
            RequestBody::H2(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Teed { inner, tee } => {
                let polled = Pin::new(&mut **inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        tee.seen(frame);
                        if inner.is_end_stream() {
                            tee.ended();
                        }
                    }
                    Poll::Ready(None) => tee.ended(),
                    _ => {}
                }
                polled
            }
            RequestBody::Resumed(r) => {
                if let Some(d) = r.head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if let Some(e) = r.error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if let Some(t) = r.trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Pin::new(&mut r.rest).poll_frame(cx)
            }
            RequestBody::Counted(c) => {
                let polled = Pin::new(&mut c.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        c.messages.feed(data);
                        c.total
                            .store(c.messages.count(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
            RequestBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::Resumed(r) => {
                r.head.is_none()
                    && r.trailers.is_none()
                    && r.error.is_none()
                    && r.rest.is_end_stream()
            }
            RequestBody::Counted(c) => c.inner.is_end_stream(),
            RequestBody::Teed { inner, tee } => {
                // A transport that learns the end here polls no more.
                let ended = inner.is_end_stream();
                if ended {
                    tee.ended();
                }
                ended
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
            RequestBody::Teed { inner, .. } => inner.size_hint(),
            RequestBody::Counted(c) => c.inner.size_hint(),
            RequestBody::Resumed(resumed) => {
                let extra = resumed.head.as_ref().map_or(0, |d| d.len() as u64);
                let r = resumed.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + extra);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + extra);
                }
                hint
            }
        }
    }
}
