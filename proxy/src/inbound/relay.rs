//! Relaying a connection the inbound listener does not terminate, with an
//! idle timeout: a passed-through connection holds one of the listener's
//! permits, so one that moves nothing either way is not kept forever.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Copies both ways until either side ends, or nothing was read from
/// either side for `idle` (then `Err(TimedOut)`).
pub(super) async fn relay<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let Some(idle) = idle else {
        return tokio::io::copy_bidirectional(a, b).await.map(drop);
    };
    let start = Instant::now();
    // Milliseconds from `start` to the last read that returned bytes.
    let last = AtomicU64::new(0);
    let mut a = Watched {
        inner: a,
        start,
        last: &last,
    };
    let mut b = Watched {
        inner: b,
        start,
        last: &last,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let until = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            r = &mut copy => return r.map(drop),
            () = tokio::time::sleep_until(until) => {
                let now = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if now <= Instant::now() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
            }
        }
    }
}

/// A stream that notes when a read last returned bytes.
struct Watched<'a, S> {
    inner: &'a mut S,
    start: Instant,
    last: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(this.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_moves_nothing_ends_at_the_idle_timeout_and_traffic_keeps_it() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut app) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(10);
        let start = Instant::now();
        let relay = tokio::spawn(async move { relay(&mut a, &mut b, Some(idle)).await });
        // Traffic every 6 s for 30 s keeps it open.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            app.read_exact(&mut got).await.expect("relayed");
            assert!(!relay.is_finished());
        }
        let r = relay.await.expect("relay task");
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(40) && took < Duration::from_secs(41),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_idle_timeout_a_relay_ends_when_a_side_does() {
        let (client, mut a) = tokio::io::duplex(1024);
        let (mut b, app) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { relay(&mut a, &mut b, None).await });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!relay.is_finished());
        drop(client);
        // The client's end reaches the application; the relay waits for
        // the application's end.
        drop(app);
        assert!(relay.await.expect("relay task").is_ok());
    }
}
