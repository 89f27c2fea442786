//! A response body read from a raw HTTP/1.1 upstream connection, as hyper's
//! server or the HTTP/2 server polls it. The connection goes back to the
//! pool when the body ended exactly where its framing said.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep};

use super::held::Held;
use super::pool::{Pool, RawConn};
use super::upload::Sending;
use crate::error::{BodyError, BodyTimeout};
use crate::h1::bufs;
use crate::h1::codec::{ChunkedDecoder, Framing, ResponseHead};

/// The received fields as a header map; fields that are not valid HTTP are
/// left out (httparse accepted them, `http` is stricter on names).
pub(crate) fn fields(head: &ResponseHead) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(head.fields().size_hint().0);
    // The values share the received head's bytes instead of copying them.
    for (name, value) in head.shared_fields() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// A response body read from a raw upstream connection.
pub struct RawBody {
    /// `None` once the body ended (the connection was released or dropped).
    conn: Option<RawConn>,
    pool: Arc<Pool>,
    rbuf: BytesMut,
    framing: Framing,
    /// Bytes still due with `Framing::Length`.
    remaining: u64,
    decoder: ChunkedDecoder,
    upstream_keep_alive: bool,
    /// Counts the request as in flight to the endpoint until the body ends.
    guard: Option<Held>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The request body still going out on the same connection.
    upload: Sending,
    /// The exchange's end, reported when this body is dropped; counts the
    /// bytes that went to the client.
    end: Option<Box<dyn crate::body::end::BodyEnd>>,
}

/// Body pieces up to this size are copied out of the read buffer, which then
/// stays this connection's; larger ones are handed over without a copy.
const COPY_LIMIT: usize = 4 * 1024;

impl RawBody {
    pub(crate) fn new(
        conn: RawConn,
        rbuf: BytesMut,
        head: &ResponseHead,
        pool: Arc<Pool>,
        deadline: Option<Instant>,
    ) -> Self {
        let remaining = match head.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut body = Self {
            conn: Some(conn),
            pool,
            rbuf,
            framing: head.framing,
            remaining,
            decoder: ChunkedDecoder::new(),
            upstream_keep_alive: head.keep_alive,
            guard: None,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            upload: Sending::Sent,
            end: None,
        };
        if matches!(head.framing, Framing::None | Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// Goes on sending the request body while the response streams; the
    /// connection is reused only when the request body went out in full.
    pub(crate) fn uploading(mut self, upload: Sending) -> Self {
        if self.conn.is_some() {
            self.upload = upload;
        }
        self
    }

    /// Reports the exchange's end, with the body's size, when this body is
    /// dropped.
    pub(crate) fn finish_with(&mut self, end: Box<dyn crate::body::end::BodyEnd>) {
        self.end = Some(end);
    }

    /// Keeps the in-flight guard until the body ends.
    pub(crate) fn hold(&mut self, guard: Held) {
        if self.conn.is_some() {
            self.guard = Some(guard);
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match (self.conn.is_some(), self.framing) {
            (false, _) => SizeHint::with_exact(0),
            (true, Framing::Length(_)) => SizeHint::with_exact(self.remaining),
            _ => SizeHint::default(),
        }
    }

    /// The body ended where its framing said: the connection can serve the
    /// next request unless the upstream said otherwise or sent more bytes.
    fn finish(&mut self) {
        self.guard = None;
        self.deadline = None;
        if let Some(conn) = self.conn.take() {
            if self.upstream_keep_alive && self.rbuf.is_empty() && self.upload.is_sent() {
                self.pool.release_raw(conn);
            }
            // Answered before the request body ended: the rest is not sent.
            if !self.upload.is_sent() {
                self.upload = Sending::Broken;
            }
        }
    }

    /// Ends the body with an error; the connection is closed.
    fn fail(&mut self, e: impl Into<BodyError>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.guard = None;
        self.deadline = None;
        self.conn = None;
        self.upload = Sending::Broken;
        Poll::Ready(Some(Err(e.into())))
    }

    /// The next piece of the body that is in the read buffer, if any.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self.framing {
            Framing::None => Ok(None),
            Framing::Length(_) => {
                let take = self.remaining.min(self.rbuf.len() as u64) as usize;
                if take == 0 {
                    return Ok(None);
                }
                let data = if take <= COPY_LIMIT {
                    let d = Bytes::copy_from_slice(&self.rbuf[..take]);
                    self.rbuf.advance(take);
                    d
                } else {
                    self.rbuf.split_to(take).freeze()
                };
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            Framing::Chunked => {
                let mut data = BytesMut::new();
                let used = self
                    .decoder
                    .decode(&self.rbuf, |piece| data.extend_from_slice(piece))
                    .map_err(|e| BodyError::from(e.to_string()))?;
                self.rbuf.advance(used);
                if self.decoder.is_done() {
                    self.finish();
                }
                Ok((!data.is_empty()).then(|| data.freeze()))
            }
            Framing::Close => {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                Ok(Some(self.rbuf.split().freeze()))
            }
        }
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        bufs::give(std::mem::take(&mut self.rbuf));
    }
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            match this.take_buffered() {
                Ok(Some(data)) => {
                    if let Some(end) = this.end.as_mut() {
                        end.data(&data);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Poll::Ready(Err(e)) = this.upload.poll(cx, &mut conn.stream) {
                // The client's request body failed: the exchange is broken.
                return this.fail(e);
            }
            this.rbuf.reserve(bufs::BUF_SIZE);
            // The read future keeps no state between polls: one per poll is fine.
            let read = std::pin::pin!(conn.stream.read_buf(&mut this.rbuf)).poll(cx);
            match read {
                Poll::Pending => {
                    if let Some(d) = this.deadline.as_mut() {
                        if d.as_mut().poll(cx).is_ready() {
                            return this.fail(BodyTimeout);
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) if this.framing == Framing::Close => {
                    this.upstream_keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return this.fail(BodyError::from("the upstream's response body ended early"))
                }
                Poll::Ready(Err(e)) => {
                    return this.fail(BodyError::from(format!(
                        "reading the upstream's response body: {e}"
                    )))
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        RawBody::is_end_stream(self)
    }

    fn size_hint(&self) -> SizeHint {
        RawBody::size_hint(self)
    }
}
