//! HTTP/1.1 connections served by hyper from the request on: those whose
//! request goes to an HTTP/2 upstream (hyper's HTTP/2 client carries it).

use std::convert::Infallible;
use std::time::Duration;

use crate::service::Peer;
use crate::stream::Stream;
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

use super::{ServerSettings, Shared};
use crate::body::request::RequestBody;
use crate::rewind::Rewind;
use crate::service::Service;

/// hyper's server, as the listeners configure it.
pub(crate) fn builder(settings: ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    match settings.header_read_timeout {
        Some(t) => {
            b.http1().timer(TokioTimer::new()).header_read_timeout(t);
        }
        None => {
            b.http1().header_read_timeout(None);
        }
    }
    // Small messages dominate mesh traffic: one flattened write is cheaper
    // than gathering a few tiny buffers (measured with callgrind).
    b.http1().keep_alive(true).writev(false);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves the rest of a connection with hyper.
pub(super) async fn handover<S: Service>(
    stream: Stream,
    prefix: Bytes,
    peer: Peer,
    shared: &Shared<S>,
    mut stop: watch::Receiver<bool>,
) {
    let svc = shared.service.clone();
    let who = peer.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let svc = svc.clone();
        let peer = who.clone();
        // Boxed: hyper moves the service future around; a pointer is cheap to move.
        Box::pin(async move {
            Ok::<_, Infallible>(svc.request(req.map(RequestBody::Hyper), peer).await)
        })
    });
    let io = TokioIo::new(Rewind::new(prefix, stream));
    let conn = shared.hyper.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(%peer, error = %e, "connection ended with error");
    }
}
