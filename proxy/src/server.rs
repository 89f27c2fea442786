//! Accept loops: HTTP/1.1 and HTTP/2 (prior knowledge) on one listener, with
//! graceful shutdown (stop accepting, let running requests finish).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::body::response::ProxyBody;
use crate::forward::Proxy;
use crate::h1;
use crate::h1::handover::builder;
pub use crate::h1::ServerSettings;
use crate::service::Peer;

/// How long connections get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection accepted by another listener thread.
pub struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
}

/// Where a listener thread's connections come from.
pub enum Connections {
    /// Accepted here. With `others`, connections are dealt in turn: one kept
    /// here, then one handed to each other thread, so every thread serves its
    /// share with its own runtime.
    Accept {
        listener: TcpListener,
        others: Vec<mpsc::UnboundedSender<Handed>>,
    },
    /// Handed over by the accepting thread; ends when it stops.
    Handed(mpsc::UnboundedReceiver<Handed>),
}

impl Connections {
    /// A channel for [`Connections::Accept`]'s `others`, and its receiving end.
    pub fn handoff() -> (mpsc::UnboundedSender<Handed>, Connections) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Connections::Handed(rx))
    }

    /// The next connection to serve on this thread; `None` when no more come.
    pub(crate) async fn next(&mut self, turn: &mut usize) -> Option<(TcpStream, SocketAddr)> {
        match self {
            Connections::Accept { listener, others } => loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                *turn = (*turn + 1) % (others.len() + 1);
                if *turn == 0 {
                    return Some((stream, peer));
                }
                let handed = stream.into_std().map(|stream| Handed { stream, peer });
                match handed.map(|h| others[*turn - 1].send(h)) {
                    Ok(Ok(())) => {}
                    // That thread has stopped: the connection is served here.
                    Ok(Err(back)) => match TcpStream::from_std(back.0.stream) {
                        Ok(s) => return Some((s, peer)),
                        Err(e) => tracing::warn!(error = %e, "cannot serve a connection"),
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot hand a connection over"),
                }
            },
            Connections::Handed(rx) => loop {
                let Handed { stream, peer } = rx.recv().await?;
                match TcpStream::from_std(stream) {
                    Ok(s) => return Some((s, peer)),
                    Err(e) => tracing::warn!(error = %e, "cannot take a handed-over connection"),
                }
            },
        }
    }
}

/// Serves the outbound listener until `shutdown` resolves, then drains:
/// HTTP/1.1 on anymesh's own server and codec, HTTP/2 on its own HTTP/2 server.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let conns = Connections::Accept {
        listener,
        others: Vec::new(),
    };
    serve_connections(conns, proxy, settings, shutdown).await;
}

/// Serves connections on this thread until `shutdown` resolves (or no more
/// come), then drains them.
pub async fn serve_connections(
    conns: Connections,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(h1::Shared {
        service: proxy,
        settings,
        hyper: builder(settings),
    });
    accept_until(conns, shutdown, "outbound", |stream, peer, stop| {
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        Some(h1::serve_connection(
            stream.into(),
            Peer::outbound(peer),
            shared,
            stop,
            None,
        ))
    })
    .await;
}

/// Takes the connections `conns` gives until `shutdown` resolves (or no
/// more come), each served on its own task by the future `serve` makes
/// (`None`: the connection was refused and is dropped), then drains: every
/// connection sees the stop and gets [`DRAIN_TIMEOUT`] to finish.
pub(crate) async fn accept_until<S, F>(
    mut conns: Connections,
    shutdown: impl Future<Output = ()>,
    listener: &'static str,
    mut serve: S,
) where
    S: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> Option<F>,
    F: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; the drain waits until all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<Infallible>(1);
    tokio::pin!(shutdown);
    let mut turn = 0;
    loop {
        let next = tokio::select! {
            next = conns.next(&mut turn) => next,
            () = &mut shutdown => break,
        };
        let Some((stream, peer)) = next else { break };
        let Some(served) = serve(stream, peer, stop_rx.clone()) else {
            continue;
        };
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            served.await;
            drop(alive);
        });
    }
    drop(conns);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            listener,
            "connections still open after drain timeout; closing"
        );
    }
}

/// Generic accept loop with graceful shutdown.
pub async fn serve<F, S>(
    listener: TcpListener,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder(settings);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), make_service(peer)).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::trace!(%peer, error = %e, "connection ended with error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after drain timeout; closing");
    }
}
