//! The primary's side of a comparison: the [`PrimaryTap`] its path feeds
//! with the upstream's response (head, body chunks, end), and
//! [`TappedBody`], which feeds it from a polled body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anymesh_core::routes::MirrorCompare;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::compare::{Digest, DigestBuilder};
use crate::h1::codec::ResponseHead;

/// The primary's side of a comparison. Feed it the primary upstream's
/// response as received — before the route's response header operations,
/// as the mirror's is compared untouched: [`head`](Self::head) (or
/// [`head_h1`](Self::head_h1), [`head_map`](Self::head_map)), then
/// [`body`](Self::body) per chunk relayed, then [`end`](Self::end).
/// Dropped without `end` (the primary failed), nothing is compared and the
/// mirrors count `uncompared`.
pub(crate) struct PrimaryTap {
    compare: Arc<MirrorCompare>,
    digest: Option<DigestBuilder>,
    /// One per mirror of the request (usually one).
    waiting: SmallVec<[oneshot::Sender<Arc<Digest>>; 1]>,
}

impl PrimaryTap {
    pub(super) fn new(compare: Arc<MirrorCompare>) -> Self {
        Self {
            compare,
            digest: None,
            waiting: SmallVec::new(),
        }
    }

    /// A receiver for the primary's digest, for one mirror task.
    pub(super) fn subscribe(&mut self) -> oneshot::Receiver<Arc<Digest>> {
        let (tx, rx) = oneshot::channel();
        self.waiting.push(tx);
        rx
    }

    /// The primary's response head: its status, and `header(name)` giving
    /// the first value of a field by lower-case name.
    pub(crate) fn head<'h>(&mut self, status: u16, header: impl Fn(&str) -> Option<&'h [u8]>) {
        self.digest = Some(DigestBuilder::new(&self.compare, status, header));
    }

    /// The head of an HTTP/1.1 upstream's response, as received.
    pub(crate) fn head_h1(&mut self, head: &ResponseHead) {
        self.head(head.status.as_u16(), |name| {
            head.fields()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)
        });
    }

    /// A response head as a header map (an HTTP/2 upstream's).
    pub(crate) fn head_map(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.head(status.as_u16(), |name| {
            headers.get(name).map(|v| v.as_bytes())
        });
    }

    /// A chunk of the primary's response body, as relayed.
    #[inline]
    pub(crate) fn body(&mut self, chunk: &[u8]) {
        if let Some(d) = &mut self.digest {
            d.body(chunk);
        }
    }

    /// The primary's response ended in full: the mirrors compare.
    pub(crate) fn end(mut self) {
        let Some(digest) = self.digest.take() else {
            return;
        };
        let digest = Arc::new(digest.finish());
        for tx in self.waiting.drain(..) {
            // A mirror that failed or gave up waiting has dropped its receiver.
            let _ = tx.send(digest.clone());
        }
    }
}

/// A response body that feeds a [`PrimaryTap`] as it is polled: each data
/// frame, then the end; an error (or a drop before the end) drops the tap,
/// so the mirrors count `uncompared`.
pub(crate) struct TappedBody<B> {
    inner: B,
    tap: Option<PrimaryTap>,
}

impl<B: Body> TappedBody<B> {
    /// `tap` has been given the response head already.
    pub(crate) fn new(inner: B, tap: PrimaryTap) -> Self {
        let mut body = Self {
            inner,
            tap: Some(tap),
        };
        // Nothing may poll an empty body.
        body.end_if_ended();
        body
    }

    /// Transports stop polling once `is_end_stream` says so: the tap ends
    /// then, not at a final poll that may never come.
    fn end_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(tap) = self.tap.take() {
                tap.end();
            }
        }
    }
}

impl<B> Body for TappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(tap), Some(data)) = (&mut this.tap, frame.data_ref()) {
                    tap.body(data);
                }
                this.end_if_ended();
            }
            Poll::Ready(None) => {
                if let Some(tap) = this.tap.take() {
                    tap.end();
                }
            }
            Poll::Ready(Some(Err(_))) => this.tap = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
