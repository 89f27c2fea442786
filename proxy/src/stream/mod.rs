//! The byte stream of a connection, client or upstream side: plain TCP, or
//! mutual TLS between mesh proxies. One type for both, so the HTTP/1.1
//! server, the forwarding layer and the upstream pool are written once; a
//! plain connection pays one well-predicted branch per read or write.
//!
//! Mesh mutual TLS ([`mesh`]) seals and opens records in the connection's
//! own buffers; TLS origination to servers outside the mesh goes through
//! tokio-rustls. Both may hold written bytes the socket did not take yet. So
//! that no written byte waits for a flush nobody makes, a TLS write pushes
//! out what it can at once, and every read (and [`Stream::readable`]) first
//! pushes out what is still buffered: whoever waits on a connection also
//! drains its output.

pub(crate) mod mesh;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) use mesh::MeshTls;

/// A TLS session originated to a server outside the mesh (DestinationRule
/// `SIMPLE` or `MUTUAL`).
pub(crate) type OriginTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connection's byte stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    /// Boxed: a TLS session's state is large and most connections are plain.
    Tls(Box<Tls>),
}

/// A TLS session. Boxed whole in [`Stream`]; the mesh variant (about 1.9
/// KB, its keys' schedules included) is the common one and stays inline.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Tls {
    /// Mutual TLS between mesh proxies, either side.
    Mesh(MeshTls),
    /// TLS origination.
    Origin(Box<OriginTls>),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl Tls {
    /// Whether rustls holds decrypted bytes not read yet (or the peer's
    /// close), after processing what it has received.
    fn origin_has_plaintext(s: &mut OriginTls) -> bool {
        match s.get_mut().1.process_new_packets() {
            Ok(st) => st.plaintext_bytes_to_read() > 0 || st.peer_has_closed(),
            // The read that follows reports the error.
            Err(_) => true,
        }
    }
}

impl Stream {
    /// Waits until a read would return something (bytes, the end, or an
    /// error) without taking a buffer: an idle connection holds none.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Tls(t) => match &mut **t {
                Tls::Mesh(m) => m.readable().await,
                Tls::Origin(o) => {
                    // Output still buffered in rustls goes first.
                    std::future::poll_fn(|cx| Pin::new(&mut *o).poll_flush(cx)).await?;
                    if Tls::origin_has_plaintext(o) {
                        return Ok(());
                    }
                    o.get_ref().0.readable().await
                }
            },
        }
    }

    /// Whether an idle connection still looks usable: nothing to read and
    /// not closed. Never waits.
    pub(crate) fn looks_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            // Open unless the runtime saw it become readable (EOF, reset,
            // or stray bytes); only then is a read attempted.
            Stream::Tcp(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match s.poll_read_ready(&mut cx) {
                    Poll::Pending => true,
                    Poll::Ready(Err(_)) => false,
                    Poll::Ready(Ok(())) => matches!(
                        s.try_read(&mut probe),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock
                    ),
                }
            }
            Stream::Tls(t) => {
                // A read polled once with a waker that does nothing: pending
                // (only TLS records that hold no data, such as session
                // tickets, or nothing at all) means open and quiet.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut buf = ReadBuf::new(&mut probe);
                matches!(tls_read(t, &mut cx, &mut buf), Poll::Pending)
            }
        }
    }

    /// The read and write halves, borrowed (no lock for plain TCP).
    pub(crate) fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Tls(t) => {
                let (r, w) = tokio::io::split(&mut **t);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

fn tls_read(t: &mut Tls, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    // Never read without pushing out what is buffered: the peer may be
    // waiting for it before it sends anything.
    match t {
        Tls::Mesh(s) => s.poll_read(cx, buf),
        Tls::Origin(s) => {
            if let Poll::Ready(Err(e)) = Pin::new(&mut *s).poll_flush(cx) {
                return Poll::Ready(Err(e));
            }
            Pin::new(s).poll_read(cx, buf)
        }
    }
}

fn tls_flush(t: &mut Tls, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    match t {
        Tls::Mesh(s) => s.poll_send(cx),
        Tls::Origin(s) => Pin::new(s).poll_flush(cx),
    }
}

fn tls_write(t: &mut Tls, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    let n = match t {
        Tls::Mesh(s) => return Pin::new(s).poll_write(cx, buf),
        Tls::Origin(s) => Pin::new(s).poll_write(cx, buf),
    };
    if let Poll::Ready(Ok(_)) = n {
        // Out at once what the socket takes; the rest goes with the next
        // read or write on this connection.
        let _ = tls_flush(t, cx);
    }
    n
}

fn tls_shutdown(t: &mut Tls, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    match t {
        Tls::Mesh(s) => Pin::new(s).poll_shutdown(cx),
        Tls::Origin(s) => Pin::new(s).poll_shutdown(cx),
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        tls_read(self.get_mut(), cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tls_write(self.get_mut(), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            // Small slices share one record.
            Tls::Mesh(m) => Pin::new(m).poll_write_vectored(cx, bufs),
            // rustls takes one slice at a time.
            t @ Tls::Origin(_) => {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &**b);
                tls_write(t, cx, first)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        matches!(self, Tls::Mesh(_))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tls_flush(self.get_mut(), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tls_shutdown(self.get_mut(), cx)
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => tls_read(t, cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => tls_write(t, cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(_) => true,
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(_) => Poll::Ready(Ok(())),
            Stream::Tls(t) => tls_flush(t, cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => tls_shutdown(t, cx),
        }
    }
}

/// The read half of a [`Stream`].
pub(crate) enum ReadHalf<'a> {
    Tcp(tokio::net::tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut Tls>),
}

/// The write half of a [`Stream`].
pub(crate) enum WriteHalf<'a> {
    Tcp(tokio::net::tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut Tls>),
}

impl AsyncRead for ReadHalf<'_> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
