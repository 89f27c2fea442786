//! The one place where the HTTP/2 server meets the forwarding layer: a
//! stream's request goes in, its answer comes out. Nothing else in this
//! module tree names the forwarding layer's types.

use crate::service::Peer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::Request;

use super::body::RecvBody;
use super::encode::{encode_fields, encode_proxied_head};
use super::hpack;
use crate::body::request::RequestBody;
use crate::body::response::ProxyBody;
use crate::service::{Reply, Service};

/// What serves the requests: starts a stream's request (a plain call per
/// stream; the answer's future is boxed anyway, as the connection polls
/// many at once).
pub(super) type Handler =
    dyn Fn(u32, Request<()>, Peer, Option<RecvBody>) -> AnswerFuture + Send + Sync;
/// A response body, sent as DATA frames.
pub(super) type ResponseBody = ProxyBody;
/// A stream's answer: a response, or a head already encoded.
pub(super) type Answer = Reply;
/// A stream's request being served, ready with the stream's id and its answer.
pub(super) type AnswerFuture = Pin<Box<dyn Future<Output = (u32, Answer)> + Send>>;

/// The handler that hands each stream's request to `service`.
pub(super) fn handler<S: Service>(service: Arc<S>) -> Arc<Handler> {
    Arc::new(move |id, req, peer, body| {
        let service = service.clone();
        match body {
            None => {
                let parts = req.into_parts().0;
                Box::pin(async move {
                    let answer = service
                        .request_bodiless(parts, peer, encode_proxied_head)
                        .await;
                    (id, answer)
                })
            }
            Some(body) => {
                let req = req.map(|()| RequestBody::H2(body));
                Box::pin(async move { (id, Reply::Response(service.request(req, peer).await)) })
            }
        }
    })
}

/// Starts serving stream `id`'s request; `body` is `None` when the stream
/// ended with its head.
pub(super) fn start(
    handler: &Arc<Handler>,
    id: u32,
    req: Request<()>,
    peer: Peer,
    body: Option<RecvBody>,
) -> AnswerFuture {
    handler(id, req, peer, body)
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
