//! The boundary between the transports (the HTTP/1.1 server [`crate::h1`]
//! and the HTTP/2 server [`crate::h2`]) and the forwarding layer
//! ([`crate::forward`]).
//!
//! A transport parses requests and encodes responses for its protocol; it
//! hands each parsed request to a [`Service`] and knows nothing of routes,
//! endpoints or upstream connections. The forwarding layer implements the
//! trait and knows nothing of frames or codecs: a response head it passes
//! on unparsed from an HTTP/1.1 upstream is encoded by the transport's own
//! [`EncodeHead`]. The calls are static (the transports are generic over
//! the service), so the boundary costs nothing per request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anymesh_core::routes::HeaderOps;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response};
use tokio::sync::watch;

use crate::body::request::RequestBody;
use crate::body::response::ProxyBody;
use crate::h1::codec::ResponseHead;
use crate::h1::settings::ServerSettings;
use crate::stream::Stream;
use crate::upstream::raw_body::RawBody;

/// Encodes an HTTP/1.1 upstream's response head, as received, for the
/// client's protocol: the received fields minus hop-by-hop ones, with the
/// route's header operations and one extra field (the session cookie).
pub(crate) type EncodeHead =
    fn(&ResponseHead, &[&HeaderOps], Option<(&HeaderName, &HeaderValue)>) -> BytesMut;

/// Who a request came from: the client's address and, on the inbound
/// listener, what the connection established (the peer's identity, the
/// local port the request is for). Cheap to clone: outbound connections
/// carry no context.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) inbound: Option<Arc<InboundConn>>,
}

impl Peer {
    /// A client of the outbound listener.
    pub(crate) fn outbound(addr: SocketAddr) -> Self {
        Self {
            addr,
            inbound: None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// What an inbound connection established before its first request.
#[derive(Debug)]
pub(crate) struct InboundConn {
    /// The virtual host of the local workload port the connection is for
    /// (the TLS server name a mesh peer sent, or the listener's default).
    pub(crate) route_key: Arc<str>,
    /// Istio's name of the port's cluster, `inbound|<port>||`.
    pub(crate) cluster: Arc<str>,
    /// The peer's SPIFFE ID, verified by mutual TLS.
    pub(crate) peer_id: Option<anymesh_identity::SpiffeId>,
    /// The local workload port the connection is for.
    pub(crate) port: u16,
    /// The address the connection arrived on.
    pub(crate) local: SocketAddr,
    /// The TLS server name the peer asked for.
    pub(crate) sni: Option<Box<str>>,
    /// The local workload's policies in force.
    pub(crate) policy: crate::policy::SharedPolicy,
    /// The peer as Istio's metrics label it (`source_*` of inbound
    /// exchanges): from its verified identity, shared by its connections.
    pub(crate) source: Arc<crate::metrics::istio::PeerLabels>,
    /// The same with the workload labels the peer proxy sent
    /// (`x-anymesh-peer`), read from the connection's first request that
    /// carries them, over mutual TLS only.
    pub(crate) peer_labels: std::sync::OnceLock<Arc<crate::metrics::istio::PeerLabels>>,
}

/// A response for an HTTP/2 client's request without a body.
pub(crate) enum Reply {
    /// A response with a header map (local replies, HTTP/2 upstreams).
    Response(Response<ProxyBody>),
    /// An HTTP/1.1 upstream's answer: the head, already encoded by the
    /// transport's [`EncodeHead`], and the body still on the connection.
    Raw { block: BytesMut, body: Box<RawBody> },
}

/// What an HTTP/1.1 connection does after an exchange.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Serve the rest with hyper; the bytes are the ones already read.
    Handover(Bytes),
    /// The client speaks HTTP/2: serve the rest with [`crate::h2`].
    Http2(Bytes),
}

/// What the transports call. `Send` futures: connections run on a
/// multi-threaded runtime.
pub(crate) trait Service: Send + Sync + 'static {
    /// Serves one request with a body (or from hyper's server).
    fn request(
        &self,
        req: Request<RequestBody>,
        peer: Peer,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;

    /// Serves one request without a body from an HTTP/2 client.
    fn request_bodiless(
        &self,
        parts: Parts,
        peer: Peer,
        encode: EncodeHead,
    ) -> impl Future<Output = Reply> + Send;

    /// Serves one HTTP/1.1 exchange on `client` (`buf` holds what was read
    /// already): it reads the head with the transport's
    /// [`crate::h1::read_head`], then drives the client socket for the body
    /// and the response.
    fn h1_exchange<'a>(
        &'a self,
        client: &'a mut Stream,
        buf: &'a mut BytesMut,
        peer: &'a Peer,
        settings: &'a ServerSettings,
        first: bool,
        stop: &'a watch::Receiver<bool>,
    ) -> impl Future<Output = Next> + Send + 'a;
}
