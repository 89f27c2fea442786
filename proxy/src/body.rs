//! The response body the proxy returns: either a short local reply or the
//! upstream's streaming body (holding the balancer's in-flight guard until it ends).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::balance::InFlight;

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Local { data: Option<Bytes> },
        Upstream {
            #[pin]
            inner: Incoming,
            // Released when the body is dropped: counts the request as in flight until then.
            guard: Option<InFlight>,
        },
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

    pub fn upstream(inner: Incoming, guard: InFlight) -> Self {
        ProxyBody::Upstream {
            inner,
            guard: Some(guard),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ProxyBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Upstream { inner, guard } => {
                let res = inner.poll_frame(cx);
                if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = res {
                    guard.take();
                }
                res
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local { data } => data.is_none(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
