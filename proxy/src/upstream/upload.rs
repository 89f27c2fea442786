//! A request body streamed to an HTTP/1.1 upstream from a body the
//! transport hands over (an HTTP/2 stream's, or hyper's), full duplex: the
//! upload is polled beside the response's reading, before the response head
//! and while the response body streams ([`super::raw_body::RawBody`]), so an
//! upstream that answers (or echoes) before the request body ended works.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::stream::Stream;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::body::request::RequestBody;
use crate::error::{ErrorKind, ProxyError};
use crate::h1::codec::{self, Framing};

/// The part of a request body still to go upstream.
pub(crate) struct Upload {
    body: RequestBody,
    framing: Framing,
    /// Bytes of the declared length still due (`Framing::Length`).
    remaining: u64,
    /// Encoded bytes not written yet.
    pending: Bytes,
    /// The body ended; what is pending is the last of it.
    ended: bool,
    /// Data frames taken from the body so far: none means the request can
    /// still be sent again as it is.
    taken: bool,
}

impl Upload {
    /// The framing the upstream gets for `body`: its exact length when known,
    /// else chunked.
    pub(crate) fn framing(body: &RequestBody) -> Framing {
        match body.size_hint().exact() {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    }

    pub(crate) fn new(body: RequestBody, framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Self {
            body,
            framing,
            remaining,
            pending: Bytes::new(),
            ended: false,
            taken: false,
        }
    }

    /// Nothing of the body was taken yet (so nothing of it was lost if the
    /// attempt failed).
    pub(crate) fn untouched(&self) -> bool {
        !self.taken
    }

    /// Writes what the body has to `stream`; ready when the body ended and
    /// all of it was written. A downstream error means the client's body
    /// broke; an upstream one that the upstream stopped taking it.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut Stream,
    ) -> Poll<Result<(), ProxyError>> {
        loop {
            while !self.pending.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, &self.pending) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ProxyError::upstream_closed(
                            "writing the request body: connection closed",
                        )))
                    }
                    Poll::Ready(Ok(n)) => self.pending.advance(n),
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(ProxyError::upstream_closed(format!(
                            "writing the request body: {e}"
                        ))))
                    }
                }
            }
            if self.ended {
                // Out of a TLS session's buffer too (a no-op for plain TCP).
                return match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(ProxyError::upstream_closed(format!(
                        "writing the request body: {e}"
                    )))),
                };
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.end()?,
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers have no place in HTTP/1.1 here (they would need
                    // a `Trailer` declaration): the body simply ends.
                    if let Ok(data) = frame.into_data() {
                        self.taken = true;
                        self.data(data)?;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(ProxyError::new(
                        ErrorKind::DownstreamClosed,
                        format!("reading the request body: {e}"),
                    )))
                }
            }
        }
    }

    fn data(&mut self, data: Bytes) -> Result<(), ProxyError> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::Length(_) => {
                let n = data.len() as u64;
                if n > self.remaining {
                    return Err(ProxyError::new(
                        ErrorKind::BadRequest,
                        "request body longer than its content-length",
                    ));
                }
                self.remaining -= n;
                self.pending = data;
            }
            _ => {
                let mut out = BytesMut::with_capacity(data.len() + 16);
                codec::write_chunk(&mut out, &data);
                self.pending = out.freeze();
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), ProxyError> {
        self.ended = true;
        match self.framing {
            Framing::Length(_) if self.remaining != 0 => Err(ProxyError::new(
                ErrorKind::BadRequest,
                "request body shorter than its content-length",
            )),
            Framing::Length(_) => Ok(()),
            _ => {
                self.pending = Bytes::from_static(codec::LAST_CHUNK);
                Ok(())
            }
        }
    }
}

/// Where a request body stands on its way upstream.
pub(crate) enum Sending {
    /// Still going out.
    Body(Box<Upload>),
    /// Written in full (or there was none).
    Sent,
    /// The upstream stopped taking it (it may have answered early): the
    /// connection cannot carry another request.
    Broken,
}

impl Sending {
    /// Drives the upload; ready once it is sent or broken. An error is the
    /// client's: its body failed.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut Stream,
    ) -> Poll<Result<(), ProxyError>> {
        let Sending::Body(upload) = self else {
            return Poll::Ready(Ok(()));
        };
        match upload.poll(cx, stream) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                *self = Sending::Sent;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) if e.kind() == ErrorKind::UpstreamClosed => {
                tracing::trace!(error = %e, "upstream stopped taking the request body");
                *self = Sending::Broken;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    /// Nothing of the body was taken from the client yet.
    pub(crate) fn untouched(&self) -> bool {
        matches!(self, Sending::Body(u) if u.untouched())
    }

    pub(crate) fn is_sent(&self) -> bool {
        matches!(self, Sending::Sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::body::{ConnSignal, Inbox, RecvBody};
    use std::future::poll_fn;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A request body whose data is all there already, as an HTTP/2
    /// stream's would be; `length` is its declared `content-length`.
    fn body(pieces: &[&'static str], length: Option<u64>) -> RequestBody {
        let inbox = Inbox::new(std::sync::Arc::new(ConnSignal::default()));
        for (i, p) in pieces.iter().enumerate() {
            inbox.push(Bytes::from_static(p.as_bytes()), i + 1 == pieces.len());
        }
        if pieces.is_empty() {
            inbox.push(Bytes::new(), true);
        }
        RequestBody::H2(RecvBody::new(inbox, length))
    }

    /// A connected pair of loopback sockets: (proxy side, upstream side).
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ours = TcpStream::connect(addr).await.expect("connect");
        let (theirs, _) = listener.accept().await.expect("accept");
        (Stream::Tcp(ours), theirs)
    }

    /// Sends `body` with its own framing; what the upstream read, or the error.
    async fn send(body: RequestBody) -> Result<(Framing, Vec<u8>), ProxyError> {
        let framing = Upload::framing(&body);
        let mut sending = Sending::Body(Box::new(Upload::new(body, framing)));
        assert!(
            sending.untouched(),
            "nothing is taken before the first poll"
        );
        let (mut ours, mut theirs) = pair().await;
        poll_fn(|cx| sending.poll(cx, &mut ours)).await?;
        assert!(sending.is_sent());
        drop(ours);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.expect("read");
        Ok((framing, got))
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_chunked() {
        let (framing, got) = send(body(&["abc", "de"], None)).await.expect("sent");
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(got, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let (_, got) = send(body(&[], None)).await.expect("sent");
        assert_eq!(got, b"0\r\n\r\n");
    }

    #[tokio::test]
    async fn a_declared_length_is_sent_as_is_and_held_to() {
        let (framing, got) = send(body(&["abc", "de"], Some(5))).await.expect("sent");
        assert_eq!(framing, Framing::Length(5));
        assert_eq!(got, b"abcde");
        let longer = send(body(&["abc", "def"], Some(5)))
            .await
            .expect_err("longer");
        assert_eq!(longer.kind(), ErrorKind::BadRequest);
        assert!(longer.detail().contains("longer"), "{longer}");
        let shorter = send(body(&["abc"], Some(5))).await.expect_err("shorter");
        assert_eq!(shorter.kind(), ErrorKind::BadRequest);
        assert!(shorter.detail().contains("shorter"), "{shorter}");
    }
}
