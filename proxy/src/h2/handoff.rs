//! The one place where the HTTP/2 server meets the forwarding layer: a
//! stream's request goes in, its answer comes out. Nothing else in this
//! module tree names the forwarding layer's types.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::Request;

use super::body::RecvBody;
use super::encode::encode_fields;
use super::hpack;
use crate::body::{ProxyBody, RequestBody};
use crate::forward::{Proxy, Reply};

/// What serves the requests.
pub(super) type Handler = Proxy;
/// A response body, sent as DATA frames.
pub(super) type ResponseBody = ProxyBody;
/// A stream's answer: a response, or a head already encoded.
pub(super) type Answer = Reply;
/// A stream's request being served, ready with the stream's id and its answer.
pub(super) type AnswerFuture = Pin<Box<dyn Future<Output = (u32, Answer)> + Send>>;

/// Starts serving stream `id`'s request; `body` is `None` when the stream
/// ended with its head.
pub(super) fn start(
    handler: &Arc<Handler>,
    id: u32,
    req: Request<()>,
    peer: SocketAddr,
    body: Option<RecvBody>,
) -> AnswerFuture {
    let proxy = handler.clone();
    match body {
        None => {
            let parts = req.into_parts().0;
            Box::pin(async move { (id, proxy.handle_bodiless(parts, peer).await) })
        }
        Some(body) => {
            let req = req.map(|()| RequestBody::H2(body));
            Box::pin(async move { (id, Reply::Response(proxy.handle(req, peer).await)) })
        }
    }
}

/// Encodes an answer's head into `block` (after what it holds); its body follows.
pub(super) fn head(answer: Answer, block: &mut BytesMut) -> ResponseBody {
    match answer {
        Reply::Response(resp) => {
            let (parts, body) = resp.into_parts();
            hpack::encode_status(block, parts.status);
            encode_fields(block, &parts.headers);
            body
        }
        Reply::Raw { block: head, body } => {
            block.extend_from_slice(&head);
            ProxyBody::Raw { body }
        }
    }
}

/// A handler without routes: every request gets a local answer with a body.
#[cfg(test)]
pub(super) fn test_handler() -> Arc<Handler> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(crate::metrics::Metrics::new(&mut registry));
    let router = Arc::new(crate::router::Router::new());
    let settings = crate::forward::UpstreamSettings::default();
    Arc::new(Proxy::new(router, metrics, &settings))
}
