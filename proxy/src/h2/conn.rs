//! The connection driver: one task per connection reads into the state's
//! buffer, lets the state handle frames, answers and bodies, and writes what
//! the state buffered. Generic over the I/O, so tests run it over an
//! in-memory duplex.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::stream::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::frame::{Code, ConnError, HEAD_LEN, MAX_FRAME};
use super::handoff::{self, Handler};
use super::limits::{KEEPALIVE, WRITE_HIGH};
use super::state::State;
use crate::h1::bufs;
use crate::service::Peer;
use crate::service::Service;

/// Serves one HTTP/2 connection, handing each stream's request to
/// `service`; `prefix` holds the bytes already read (the preface, at least
/// its start).
pub(crate) fn serve<S, I>(
    io: I,
    prefix: Bytes,
    peer: Peer,
    service: Arc<S>,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send
where
    S: Service,
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_with(io, prefix, peer, handoff::handler(service), stop)
}

/// [`serve`] with the handler made.
pub(super) async fn serve_with<I>(
    io: I,
    prefix: Bytes,
    peer: Peer,
    handler: Arc<Handler>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut conn = Conn {
        io,
        st: State::new(&prefix, peer.clone(), handler),
    };
    let mut stopping = false;
    let keepalive = tokio::time::sleep(KEEPALIVE);
    tokio::pin!(keepalive);
    loop {
        tokio::select! {
            biased;
            () = poll_fn(|cx| conn.poll(cx)) => return,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.st.go_away(Code::NoError, "");
            }
            () = &mut keepalive => match conn.st.keepalive() {
                Some(next) => keepalive.as_mut().reset(Instant::now() + next),
                None => {
                    tracing::debug!(%peer, "HTTP/2 client did not answer a PING; closing");
                    return;
                }
            },
        }
    }
}

pub(super) struct Conn<I> {
    pub(super) io: I,
    pub(super) st: State,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    /// Drives the connection; ready when it is over.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.st.wbuf.capacity() == 0 {
            self.st.wbuf = bufs::take();
        }
        loop {
            let mut progress = false;
            let st = &mut self.st;
            if !st.failed && !st.read_closed && st.wbuf.len() < WRITE_HIGH {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.st.on_read_closed();
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                let st = &mut self.st;
                if let Err(ConnError(code, why)) = st.on_input() {
                    tracing::debug!(peer = %st.peer, ?code, why, "HTTP/2 connection error");
                    st.go_away(code, why);
                    st.fail();
                }
            }
            let st = &mut self.st;
            if !st.failed {
                // Reply heads wait while the client is not reading.
                while st.wbuf.len() < WRITE_HIGH {
                    let Poll::Ready(Some(reply)) = st.replies.poll_next_unpin(cx) else {
                        break;
                    };
                    progress = true;
                    if let Ok((id, answer)) = reply {
                        st.respond(id, answer, cx);
                    }
                }
                if st.signal.take(cx) {
                    st.credit_bodies();
                }
                progress |= st.poll_bodies(cx);
                st.send_credit();
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(true)) => progress = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
            }
            let st = &mut self.st;
            if st.finished() && st.wbuf.is_empty() {
                let _ = Pin::new(&mut self.io).poll_shutdown(cx);
                return Poll::Ready(());
            }
            if !progress {
                // An idle connection holds no buffer: they go back to the
                // thread's free list until bytes come or go again.
                if st.rbuf.is_empty() && st.rbuf.capacity() > 0 {
                    bufs::give(std::mem::take(&mut st.rbuf));
                }
                if st.wbuf.is_empty() && st.wbuf.capacity() > 0 {
                    bufs::give(std::mem::take(&mut st.wbuf));
                }
                return Poll::Pending;
            }
        }
    }

    /// Reads what the socket has; `Ok(0)` at its end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let rbuf = &mut self.st.rbuf;
        if rbuf.capacity() == 0 {
            *rbuf = bufs::take();
        }
        rbuf.reserve(MAX_FRAME + HEAD_LEN);
        // Through AsyncRead: a short read clears the readiness, so the next
        // poll does not try a read that can only fail. The future keeps no
        // state between polls.
        std::pin::pin!(self.io.read_buf(rbuf)).poll(cx)
    }

    /// Writes what is buffered; `Ok(true)` when something was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let wbuf = &mut self.st.wbuf;
        let mut wrote = false;
        while !wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    wbuf.advance(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if wrote => return Poll::Ready(Ok(true)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(wrote))
    }
}
