//! The response body the proxy returns: either a short local reply or the
//! upstream's streaming body, which holds the balancer's in-flight guard until
//! it ends and enforces the route timeout on the rest of the stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::end::BodyEnd;
use crate::error::{BodyError, BodyTimeout};
use crate::mirror::tap::TappedBody;
use crate::mirror::PrimaryTap;
use crate::upstream::held::Held;
use crate::upstream::raw_body::RawBody;

/// A response body whose exchange is reported when it is dropped.
pub(crate) struct Recorded {
    inner: ProxyBody,
    end: Box<dyn BodyEnd>,
}

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Local { data: Option<Bytes> },
        Upstream {
            #[pin]
            inner: Incoming,
            // Released when the body ends or is dropped: counts the request as in flight until then.
            guard: Option<Held>,
            // Boxed: most routes have no timeout, and the body stays small.
            deadline: Option<Pin<Box<Sleep>>>,
        },
        // Read from a raw HTTP/1.1 upstream connection (boxed: it carries its read buffer and state).
        Raw { body: Box<RawBody> },
        // Fed to a mirror comparison as it is polled (boxed: rare).
        Tapped { body: Box<TappedBody<ProxyBody>> },
        // Counted as it is polled; the exchange is reported when it is dropped.
        Recorded { body: Box<Recorded> },
    }
}

impl ProxyBody {
    pub fn local(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ProxyBody::Local {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Self {
        ProxyBody::Local { data: None }
    }

    /// The bytes of a local reply; an upstream body gives none.
    pub(crate) fn into_local(self) -> Bytes {
        match self {
            ProxyBody::Local { data } => data.unwrap_or_default(),
            ProxyBody::Upstream { .. }
            | ProxyBody::Raw { .. }
            | ProxyBody::Tapped { .. }
            | ProxyBody::Recorded { .. } => Bytes::new(),
        }
    }

    /// This body, feeding `tap` (a mirror comparison, given the head
    /// already) as it is polled.
    pub(crate) fn tapped(self, tap: PrimaryTap) -> Self {
        ProxyBody::Tapped {
            body: Box::new(TappedBody::new(self, tap)),
        }
    }

    /// This body, reporting the exchange to `end` (with the bytes polled
    /// from it) when dropped.
    pub(crate) fn recorded(self, end: Box<dyn BodyEnd>) -> Self {
        ProxyBody::Recorded {
            body: Box::new(Recorded { inner: self, end }),
        }
    }

    /// An HTTP/2 upstream's body (hyper's client).
    pub(crate) fn upstream(inner: Incoming, guard: Held, deadline: Option<Instant>) -> Self {
        if inner.is_end_stream() {
            // Nothing will poll an empty body: the exchange is over already.
            drop(guard);
            return ProxyBody::empty();
        }
        ProxyBody::Upstream {
            inner,
            guard: Some(guard),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
    }
}

fn res_is_none<T>(res: &Poll<Option<T>>) -> bool {
    matches!(res, Poll::Ready(None))
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ProxyBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Raw { body } => Pin::new(&mut **body).poll_frame(cx),
            ProxyBodyProj::Tapped { body } => Pin::new(&mut **body).poll_frame(cx),
            ProxyBodyProj::Recorded { body } => {
                let res = Pin::new(&mut body.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &res {
                    if let Some(data) = frame.data_ref() {
                        body.end.data(data);
                    } else if let Some(trailers) = frame.trailers_ref() {
                        body.end.trailers(trailers);
                    }
                }
                res
            }
            ProxyBodyProj::Upstream {
                inner,
                guard,
                deadline,
            } => {
                let mut inner = inner;
                let res = inner.as_mut().poll_frame(cx);
                if res.is_pending() {
                    if let Some(d) = deadline.as_mut() {
                        if d.as_mut().poll(cx).is_ready() {
                            guard.take();
                            *deadline = None;
                            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                        }
                    }
                    return Poll::Pending;
                }
                match &res {
                    // hyper stops polling once `is_end_stream` is true, so the
                    // last data frame may be the last poll: finish there too.
                    Poll::Ready(None) | Poll::Ready(Some(Ok(_)))
                        if res_is_none(&res) || inner.is_end_stream() =>
                    {
                        guard.take();
                        *deadline = None;
                    }
                    Poll::Ready(Some(Err(_))) => {
                        guard.take();
                        *deadline = None;
                    }
                    _ => {}
                }
                res.map(|r| r.map(|f| f.map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local { data } => data.is_none(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
            ProxyBody::Raw { body } => body.is_end_stream(),
            ProxyBody::Tapped { body } => body.is_end_stream(),
            ProxyBody::Recorded { body } => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
            ProxyBody::Raw { body } => body.size_hint(),
            ProxyBody::Tapped { body } => body.size_hint(),
            ProxyBody::Recorded { body } => body.inner.size_hint(),
        }
    }
}
