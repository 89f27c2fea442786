//! Upstream connections, pooled per endpoint.
//!
//! The proxy connects to an endpoint's address but sends the *service's*
//! authority (`Host` for HTTP/1.1, `:authority` for HTTP/2), so it keeps its
//! own pool keyed by endpoint address rather than by URI.
//!
//! - HTTP/1.1: a stack of idle plain connections per endpoint. A connection
//!   is checked out for one exchange ([`Pool::raw`]) and handed back
//!   ([`Pool::release_raw`]) when the response body ended where its framing
//!   said and the request body went out in full; any other end closes it.
//!   Whether a failed attempt is sent again is decided in one place
//!   ([`super::may_resend`]).
//! - HTTP/2 (prior knowledge): one multiplexed connection per endpoint,
//!   opened once (concurrent first requests wait for the same handshake),
//!   driven by hyper's client.
//!
//! Connections are made in one place ([`Pool::connect`]), secured as the
//! compiler decided for the endpoint ([`ClusterEndpoint::tls`]):
//! - none: plaintext to the endpoint's address;
//! - mesh mTLS ([`UpstreamTls::Mesh`]: auto mTLS or `ISTIO_MUTUAL`) to the
//!   mesh proxy's inbound port: the proxy's own certificate, the server
//!   name asking for the endpoint's port (or `ISTIO_MUTUAL`'s `sni`), and
//!   the peer's SPIFFE ID compared with the one the registry names or one
//!   of the rule's `subjectAltNames` (secure naming);
//! - TLS origination ([`UpstreamTls::Origination`]: `SIMPLE`, `MUTUAL`) to
//!   the endpoint's address, with the configs of [`super::tls`].
//!
//! Plaintext connections are pooled by address; secured ones apart from
//! them, by address and the way they are secured (two clusters securing
//! one address differently never share a connection).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{
    ClusterEndpoint, ConnectionPool, MeshUpstream, Origination, TcpKeepalive, UpstreamTls,
};
use anymesh_identity::{Identity, SpiffeId};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::request::RequestBody;
use crate::error::{ErrorKind, ProxyError};
use anymesh_support::error_chain;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpStream;

use super::tls::OriginationConfigs;
use crate::stream::{Stream, Tls};
use tokio::time::Instant;

/// Upstream-side settings.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// The proxy's identity, for mutual TLS to other mesh proxies (none:
    /// endpoints behind a mesh proxy cannot be reached).
    pub identity: Option<Arc<Identity>>,
    /// The trust domain of the identities registries name by namespace
    /// and service account.
    pub trust_domain: Arc<str>,
}

fn connect_error(authority: &str, what: String) -> ProxyError {
    ProxyError::new(
        ErrorKind::UpstreamConnect,
        format!("connect to {authority} {what}"),
    )
}

fn handshake_error(authority: &str, source: hyper::Error) -> ProxyError {
    ProxyError::new(
        ErrorKind::UpstreamConnect,
        format!(
            "HTTP handshake with {authority} failed: {}",
            error_chain(&source)
        ),
    )
}

/// A request hyper's client could not complete.
fn request_error(source: hyper::Error) -> ProxyError {
    let refused = std::error::Error::source(&source)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        == Some(h2::Reason::REFUSED_STREAM);
    let e = ProxyError::upstream_closed(error_chain(&source));
    if refused {
        e.refused()
    } else {
        e
    }
}

/// An idle plain connection of the HTTP/1.1 fast path ([`crate::h1`]).
struct RawIdle {
    stream: Stream,
    since: Instant,
    life: Life,
}

/// What a connection may still serve under the `maxRequestsPerConnection`
/// and `maxConnectionDuration` of the cluster that opened it (kept small:
/// a connection is in every exchange's future).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Life {
    /// Requests it may serve after the current one (`u32::MAX`: no limit).
    uses_left: u32,
    /// When it stops being reused.
    expires: Option<Instant>,
}

impl Life {
    fn new(policy: &ConnectionPool) -> Self {
        Self {
            uses_left: policy
                .max_requests_per_connection
                .map_or(u32::MAX, |n| n.saturating_sub(1)),
            expires: policy
                .max_connection_duration
                .and_then(|d| Instant::now().checked_add(d)),
        }
    }

    /// May serve another request.
    fn renewable(&self) -> bool {
        self.uses_left > 0 && self.expires.is_none_or(|at| Instant::now() < at)
    }

    /// One more request on it.
    fn next(self) -> Self {
        Self {
            uses_left: if self.uses_left == u32::MAX {
                u32::MAX
            } else {
                self.uses_left.saturating_sub(1)
            },
            ..self
        }
    }
}

/// A plain TCP connection to an endpoint, lent to one exchange of the
/// HTTP/1.1 fast path. Hand it back with [`Pool::release_raw`] only when the
/// exchange ended cleanly; dropping it closes it.
pub(crate) struct RawConn {
    pub stream: Stream,
    /// Taken from the idle list (it may have been closed by the upstream meanwhile).
    pub reused: bool,
    home: Arc<Endpoint>,
    life: Life,
}

/// An HTTP/2 connection to an endpoint.
struct H2Conn {
    sender: http2::SendRequest<RequestBody>,
    /// Streams open on it, counted only for clusters with
    /// `maxConcurrentStreams`; also the connection's identity.
    streams: Arc<AtomicU32>,
}

/// A stream counted against its connection's `maxConcurrentStreams` until
/// dropped (held with the response, until its body ends).
pub(crate) struct StreamSlot(Arc<AtomicU32>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections to one endpoint.
struct Endpoint {
    authority: Arc<str>,
    /// How the connections are secured (`None`: plaintext).
    tls: Option<UpstreamTls>,
    raw: Mutex<Vec<RawIdle>>,
    /// Usually one; more only when a cluster's `maxConcurrentStreams`
    /// fills the others.
    h2: Mutex<Vec<H2Conn>>,
    /// Serialises HTTP/2 handshakes so concurrent first requests share one connection.
    h2_connect: tokio::sync::Mutex<()>,
}

impl Endpoint {
    fn new(authority: Arc<str>, tls: Option<UpstreamTls>) -> Arc<Self> {
        Arc::new(Self {
            authority,
            tls,
            raw: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            h2_connect: tokio::sync::Mutex::new(()),
        })
    }

    fn handshake_failed(&self, source: hyper::Error) -> ProxyError {
        handshake_error(&self.authority, source)
    }

    /// Runs a connection's I/O until it closes.
    fn drive<C>(&self, conn: C)
    where
        C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %authority, error = %e, "upstream connection ended");
            }
        });
    }
}

/// All upstream connections of the proxy.
pub(crate) struct Pool {
    settings: PoolSettings,
    /// foldhash: looked up on every request; seeded per process.
    endpoints: RwLock<HashMap<Arc<str>, Arc<Endpoint>, foldhash::fast::RandomState>>,
    /// Those reached with TLS, by the same key, one entry per way of
    /// securing them (usually one).
    tls_endpoints: RwLock<HashMap<Arc<str>, Vec<Arc<Endpoint>>, foldhash::fast::RandomState>>,
    /// The client configs of TLS origination.
    origination: OriginationConfigs,
}

/// A connection of `ep` for one more stream: the first open one, or with
/// `max_streams` the first with a stream free (counted in the slot).
#[allow(clippy::type_complexity)]
fn h2_sender(
    ep: &Endpoint,
    max_streams: Option<u32>,
) -> Option<(
    http2::SendRequest<RequestBody>,
    Arc<AtomicU32>,
    Option<StreamSlot>,
)> {
    let mut conns = ep.h2.lock();
    conns.retain(|c| !c.sender.is_closed());
    let conn = match max_streams {
        None => conns.first()?,
        Some(max) => conns
            .iter()
            .find(|c| c.streams.load(Ordering::Relaxed) < max)?,
    };
    let slot = max_streams.map(|_| take_slot(&conn.streams));
    Some((conn.sender.clone(), conn.streams.clone(), slot))
}

fn take_slot(streams: &Arc<AtomicU32>) -> StreamSlot {
    streams.fetch_add(1, Ordering::Relaxed);
    StreamSlot(streams.clone())
}

/// Sets TCP keepalive on an upstream connection (`tcpKeepalive`: unset
/// parts keep the system's values).
fn keepalive(stream: &TcpStream, k: &TcpKeepalive) {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        ka = ka.with_time(t);
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    if let Some(n) = k.probes {
        ka = ka.with_retries(n);
    }
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on an upstream connection");
    }
}

/// The identities a mesh proxy may present: the rule's
/// `subjectAltNames`, else the one its registry names.
fn expected_peers(mesh: &MeshUpstream, trust_domain: &str) -> Result<Vec<SpiffeId>, String> {
    if mesh.subject_alt_names.is_empty() {
        let id = mesh.proxy.identity(trust_domain);
        return SpiffeId::parse(&id)
            .map(|id| vec![id])
            .map_err(|e| format!("refused: the registry names an invalid identity {id:?}: {e}"));
    }
    mesh.subject_alt_names
        .iter()
        .map(|n| {
            SpiffeId::parse(n)
                .map_err(|e| format!("refused: subjectAltNames {n:?} is not a SPIFFE ID: {e}"))
        })
        .collect()
}

/// Secure naming: the peer must be one of `expected`.
fn check_peers(
    conn: &rustls::CommonState,
    expected: &[SpiffeId],
) -> Result<(), anymesh_identity::tls::PeerError> {
    match expected {
        [one] => anymesh_identity::tls::check_peer(conn, one).map(drop),
        _ => {
            let found = anymesh_identity::tls::peer(conn)?;
            if expected.contains(&found) {
                return Ok(());
            }
            Err(anymesh_identity::tls::PeerError::Handshake(format!(
                "the peer is {found}, the DestinationRule's subjectAltNames say {}",
                Names(expected)
            )))
        }
    }
}

/// Identities listed for a log line.
struct Names<'a>(&'a [SpiffeId]);

impl std::fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// Why a TLS origination handshake failed, naming the setting behind it.
fn origination_failure(e: &std::io::Error, o: &Origination) -> String {
    use anymesh_identity::tls::PeerError;
    let Some(reason) = PeerError::from_io(e) else {
        return e.to_string();
    };
    match reason {
        PeerError::UnknownCa => match &o.settings.ca_certificates {
            Some(ca) => format!(
                "the server's certificate is not signed by a CA of caCertificates {}",
                ca.display()
            ),
            None => "the server's certificate is not signed by a CA of the webpki roots (no caCertificates)".into(),
        },
        other => other.to_string(),
    }
}

/// Whether connections secured as `a` may serve an endpoint secured as `b`
/// (the same `Arc` from one table, equal settings across tables).
fn same_tls(a: &UpstreamTls, b: &UpstreamTls) -> bool {
    match (a, b) {
        (UpstreamTls::Mesh(a), UpstreamTls::Mesh(b)) => Arc::ptr_eq(a, b) || a == b,
        (UpstreamTls::Origination(a), UpstreamTls::Origination(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

impl Pool {
    pub(crate) fn new(settings: PoolSettings) -> Arc<Self> {
        let pool = Arc::new(Self {
            settings,
            endpoints: RwLock::new(HashMap::default()),
            tls_endpoints: RwLock::new(HashMap::default()),
            origination: OriginationConfigs::default(),
        });
        let weak = Arc::downgrade(&pool);
        // Drops idle connections past their timeout and forgets endpoints with none left.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.reap();
            }
        });
        pool
    }

    fn reap(&self) {
        let cutoff = Instant::now().checked_sub(self.settings.idle_timeout);
        // Keep entries that are in use (someone else holds the Arc) or have connections.
        let keep = |ep: &Arc<Endpoint>| {
            let mut raw = ep.raw.lock();
            raw.retain(|c| cutoff.is_none_or(|cut| c.since > cut));
            let mut h2 = ep.h2.lock();
            h2.retain(|c| !c.sender.is_closed());
            !raw.is_empty() || !h2.is_empty() || Arc::strong_count(ep) > 1
        };
        self.endpoints.write().retain(|_, ep| keep(ep));
        self.tls_endpoints.write().retain(|_, eps| {
            eps.retain(keep);
            !eps.is_empty()
        });
    }

    /// The connections to `target`: plaintext to its address, or secured
    /// as its [`ClusterEndpoint::tls`] says (pooled apart, per way of
    /// securing them: when the registry changes a mesh proxy's port or
    /// identity, the connections made for the old one are not reused).
    fn endpoint(&self, target: &ClusterEndpoint) -> Arc<Endpoint> {
        let authority = target.authority.as_str();
        let Some(tls) = &target.tls else {
            if let Some(ep) = self.endpoints.read().get(authority) {
                return ep.clone();
            }
            return self
                .endpoints
                .write()
                .entry(Arc::from(authority))
                .or_insert_with_key(|k| Endpoint::new(k.clone(), None))
                .clone();
        };
        let same = |ep: &&Arc<Endpoint>| ep.tls.as_ref().is_some_and(|t| same_tls(t, tls));
        if let Some(ep) = self
            .tls_endpoints
            .read()
            .get(authority)
            .and_then(|eps| eps.iter().find(same))
        {
            return ep.clone();
        }
        let mut map = self.tls_endpoints.write();
        let eps = map.entry(Arc::from(authority)).or_default();
        if let Some(ep) = eps.iter().find(same) {
            return ep.clone();
        }
        let ep = Endpoint::new(Arc::from(authority), Some(tls.clone()));
        eps.push(ep.clone());
        ep
    }

    /// A connection to `authority` for one HTTP/1.1 exchange of a cluster
    /// with connection-pool settings `policy`: an idle one that still looks
    /// open (and was idle less than the cluster's idle timeout), else a new
    /// one.
    pub(crate) async fn raw(
        &self,
        target: &ClusterEndpoint,
        policy: &ConnectionPool,
    ) -> Result<RawConn, ProxyError> {
        match self.idle(target, policy) {
            Some(conn) => Ok(conn),
            // Boxed: connecting is rare, and its future would enlarge every exchange's.
            None => Box::pin(self.raw_fresh(target, policy)).await,
        }
    }

    /// An idle connection to `authority` that still looks open and was
    /// idle less than the cluster's idle timeout.
    fn idle(&self, target: &ClusterEndpoint, policy: &ConnectionPool) -> Option<RawConn> {
        let ep = self.endpoint(target);
        let idle_timeout = policy
            .http_idle_timeout
            .or(policy.tcp_idle_timeout)
            .filter(|t| !t.is_zero())
            .unwrap_or(self.settings.idle_timeout);
        let idle = {
            let mut list = ep.raw.lock();
            let mut found = None;
            while let Some(mut c) = list.pop() {
                if c.since.elapsed() < idle_timeout && c.stream.looks_open() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        idle.map(|c| RawConn {
            stream: c.stream,
            reused: true,
            home: ep,
            life: c.life.next(),
        })
    }

    /// A new connection to `authority`.
    pub(crate) async fn raw_fresh(
        &self,
        target: &ClusterEndpoint,
        policy: &ConnectionPool,
    ) -> Result<RawConn, ProxyError> {
        let ep = self.endpoint(target);
        let stream = self.connect(&ep, policy, false).await?;
        Ok(RawConn {
            stream,
            reused: false,
            home: ep,
            life: Life::new(policy),
        })
    }

    /// Keeps a connection whose last exchange ended cleanly for reuse,
    /// unless its cluster's limits say it has served enough.
    pub(crate) fn release_raw(&self, conn: RawConn) {
        if !conn.life.renewable() {
            return;
        }
        let mut idle = conn.home.raw.lock();
        if idle.len() < self.settings.max_idle_per_endpoint {
            idle.push(RawIdle {
                stream: conn.stream,
                since: Instant::now(),
                life: conn.life,
            });
        }
    }

    /// Sends `req` over the endpoint's shared HTTP/2 connection; with
    /// `max_streams` (a cluster's `maxConcurrentStreams`), over one with a
    /// stream free, another connection being opened when every one is
    /// full (as Envoy). The slot, when counted, is held until the response
    /// ends.
    pub(crate) async fn send_h2(
        &self,
        target: &ClusterEndpoint,
        req: Request<RequestBody>,
        max_streams: Option<u32>,
    ) -> Result<(Response<Incoming>, Option<StreamSlot>), ProxyError> {
        let ep = self.endpoint(target);
        let (mut sender, id, slot) = match h2_sender(&ep, max_streams) {
            Some(s) => s,
            None => {
                let _one = ep.h2_connect.lock().await;
                match h2_sender(&ep, max_streams) {
                    Some(s) => s,
                    None => {
                        let sender = self.connect_h2(&ep).await?;
                        let streams = Arc::new(AtomicU32::new(0));
                        // The slot first: a concurrent request sees the
                        // connection with this stream counted.
                        let slot = max_streams.map(|_| take_slot(&streams));
                        ep.h2.lock().push(H2Conn {
                            sender: sender.clone(),
                            streams: streams.clone(),
                        });
                        (sender, streams, slot)
                    }
                }
            }
        };
        if let Err(source) = sender.ready().await {
            ep.h2.lock().retain(|c| !Arc::ptr_eq(&c.streams, &id));
            return Err(request_error(source));
        }
        let resp = sender.send_request(req).await.map_err(request_error)?;
        Ok((resp, slot))
    }

    /// Connects to an endpoint with its cluster's connect timeout and TCP
    /// keepalive (the proxy's defaults when the cluster sets none); through
    /// its mesh proxy with mutual TLS, or with TLS origination, as the
    /// endpoint's `tls` says, offering HTTP/2 or HTTP/1.1 as the connection
    /// will carry.
    async fn connect(
        &self,
        ep: &Endpoint,
        policy: &ConnectionPool,
        h2: bool,
    ) -> Result<Stream, ProxyError> {
        let after = policy
            .connect_timeout
            .unwrap_or(self.settings.connect_timeout);
        let address = match &ep.tls {
            Some(UpstreamTls::Mesh(m)) => m.connect.as_str(),
            _ => &*ep.authority,
        };
        let stream = tokio::time::timeout(after, TcpStream::connect(address))
            .await
            .map_err(|_| connect_error(address, format!("timed out after {after:?}")))?
            .map_err(|e| connect_error(address, format!("failed: {e}")))?;
        let _ = stream.set_nodelay(true);
        if let Some(k) = &policy.tcp_keepalive {
            keepalive(&stream, k);
        }
        match &ep.tls {
            None => Ok(Stream::Tcp(stream)),
            // Boxed: a handshake's future is large and secured connections are made rarely.
            Some(UpstreamTls::Mesh(mesh)) => {
                Box::pin(self.mutual_tls(stream, mesh, after, h2)).await
            }
            Some(UpstreamTls::Origination(o)) => {
                Box::pin(self.originate(stream, &ep.authority, o, after, h2)).await
            }
        }
    }

    /// Mutual TLS with the mesh proxy in front of an endpoint, checked
    /// against the identity its registry names.
    async fn mutual_tls(
        &self,
        stream: TcpStream,
        mesh: &MeshUpstream,
        within: Duration,
        h2: bool,
    ) -> Result<Stream, ProxyError> {
        let fail = |what: String| connect_error(&mesh.connect, what);
        let configs = self
            .settings
            .identity
            .as_ref()
            .and_then(|i| i.tls())
            .ok_or_else(|| {
                fail("refused: the endpoint is behind a mesh proxy and this proxy has no certificate for mutual TLS yet".into())
            })?;
        let expected = expected_peers(mesh, &self.settings.trust_domain).map_err(fail)?;
        let name = match &mesh.sni {
            Some(sni) => sni.clone(),
            None => anymesh_identity::tls::server_name_for_port(mesh.port),
        };
        let name = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| fail(format!("refused: {e}")))?;
        let connect =
            crate::stream::mesh::connect(stream, configs.client(h2).clone(), name, |session| {
                check_peers(session, &expected)
            });
        let tls = match tokio::time::timeout(within, connect).await {
            Err(_) => {
                return Err(fail(format!(
                    "mutual TLS handshake timed out after {within:?}"
                )))
            }
            Ok(Err(e)) => {
                let why = anymesh_identity::tls::PeerError::from_io(&e)
                    .map_or_else(|| e.to_string(), |p| p.to_string());
                tracing::warn!(proxy = %mesh.connect, expected = %Names(&expected), reason = %why, "mutual TLS to a mesh proxy refused");
                return Err(fail(format!("mutual TLS handshake failed: {why}")));
            }
            Ok(Ok((tls, Err(e)))) => {
                drop(tls);
                tracing::warn!(proxy = %mesh.connect, expected = %Names(&expected), reason = %e, "mesh proxy refused: secure naming");
                return Err(fail(format!("refused by secure naming: {e}")));
            }
            Ok(Ok((tls, Ok(())))) => tls,
        };
        Ok(Stream::Tls(Box::new(Tls::Mesh(tls))))
    }

    /// TLS origination to an endpoint (DestinationRule `SIMPLE` or
    /// `MUTUAL`), verified as [`super::tls`] says.
    async fn originate(
        &self,
        stream: TcpStream,
        authority: &str,
        o: &Origination,
        within: Duration,
        h2: bool,
    ) -> Result<Stream, ProxyError> {
        let fail = |what: String| connect_error(authority, what);
        let config = self.origination.config(o, h2).map_err(|e| {
            fail(format!(
                "refused: TLS origination (cluster {}): {e}",
                o.cluster
            ))
        })?;
        let name = rustls::pki_types::ServerName::try_from(o.server_name.clone())
            .map_err(|e| fail(format!("refused: server name {:?}: {e}", o.server_name)))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(within, connector.connect(name, stream)).await {
            Err(_) => Err(fail(format!("TLS handshake timed out after {within:?}"))),
            Ok(Err(e)) => {
                let why = origination_failure(&e, o);
                tracing::warn!(endpoint = %authority, cluster = %o.cluster, server_name = %o.server_name, reason = %why, "TLS origination refused");
                Err(fail(format!("TLS handshake failed: {why}")))
            }
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(Tls::Origin(Box::new(tls))))),
        }
    }

    async fn connect_h2(
        &self,
        ep: &Endpoint,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        // One connection per endpoint, shared by every cluster holding it:
        // the proxy's own connect settings apply.
        let io = TokioIo::new(self.connect(ep, &ConnectionPool::default(), true).await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .handshake(io)
            .await
            .map_err(|source| ep.handshake_failed(source))?;
        ep.drive(conn);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use hyper::server::conn::http2 as server;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    /// An HTTP/2 server that counts its connections and holds every answer
    /// until released.
    async fn holding_server() -> (String, Arc<AtomicUsize>, Arc<Notify>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (conns, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let (c, r) = (conns.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                let svc = hyper::service::service_fn(move |_req| {
                    let r = r.clone();
                    async move {
                        r.notified().await;
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<
                            bytes::Bytes,
                        >::new(
                        )))
                    }
                });
                tokio::spawn(
                    server::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        (addr, conns, release)
    }

    fn pool() -> Arc<Pool> {
        Pool::new(PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 8,
            identity: None,
            trust_domain: Arc::from("cluster.local"),
        })
    }

    /// The pool's view of the plaintext endpoint at `addr`.
    fn target(addr: &str) -> ClusterEndpoint {
        let sock: std::net::SocketAddr = addr.parse().expect("addr");
        let endpoint = anymesh_core::model::Endpoint {
            service: anymesh_core::model::Hostname::new("svc").expect("host"),
            address: sock.ip().to_string(),
            ports: vec![anymesh_core::model::EndpointPort {
                name: String::new(),
                number: sock.port(),
            }],
            labels: Default::default(),
            health: Default::default(),
            weight: 1,
            locality: Default::default(),
            mesh: None,
            provenance: anymesh_core::model::Provenance {
                source: anymesh_core::model::SourceId::new("test"),
                native_id: addr.to_string(),
                raw_labels: Default::default(),
            },
        };
        ClusterEndpoint {
            key: endpoint.key(),
            authority: addr.to_string(),
            weight: 1,
            tls: None,
            endpoint: Arc::new(endpoint),
        }
    }

    /// `target` secured as `tls`.
    fn secured(addr: &str, tls: UpstreamTls) -> ClusterEndpoint {
        ClusterEndpoint {
            tls: Some(tls),
            ..target(addr)
        }
    }

    fn mesh(port: u16, sans: &[&str]) -> UpstreamTls {
        UpstreamTls::Mesh(Arc::new(MeshUpstream {
            connect: format!("127.0.0.1:{port}"),
            port: 80,
            proxy: anymesh_core::model::MeshProxy::new(port, None, Some("b".into())),
            sni: None,
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
        }))
    }

    fn origination(mutual: bool) -> UpstreamTls {
        UpstreamTls::Origination(Arc::new(Origination {
            mutual,
            settings: Default::default(),
            server_name: "svc".into(),
            cluster: "outbound|80||svc".into(),
        }))
    }

    /// Connections to one address secured differently are never shared;
    /// equal settings (from another table) share them.
    #[tokio::test]
    async fn each_way_of_securing_an_address_has_its_own_connections() {
        let pool = pool();
        let addr = "127.0.0.1:9";
        let plain = pool.endpoint(&target(addr));
        let ways = [
            mesh(15006, &[]),
            mesh(15007, &[]),
            mesh(15006, &["spiffe://td/ns/a/sa/b"]),
            origination(false),
            origination(true),
        ];
        let entries: Vec<_> = ways
            .iter()
            .map(|w| pool.endpoint(&secured(addr, w.clone())))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            assert!(
                !Arc::ptr_eq(e, &plain),
                "{:?} apart from plaintext",
                ways[i]
            );
            for (j, f) in entries.iter().enumerate() {
                assert_eq!(Arc::ptr_eq(e, f), i == j, "{:?} / {:?}", ways[i], ways[j]);
            }
        }
        // Equal settings in new Arcs (a new table): the same connections.
        let again = pool.endpoint(&secured(addr, mesh(15006, &[])));
        assert!(Arc::ptr_eq(&again, &entries[0]));
        let again = pool.endpoint(&secured(addr, origination(true)));
        assert!(Arc::ptr_eq(&again, &entries[4]));
        assert!(Arc::ptr_eq(&pool.endpoint(&target(addr)), &plain));
    }

    fn get() -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.uri_mut() = "http://svc/".parse().expect("uri");
        req
    }

    /// `maxConcurrentStreams: 1`: a second stream in flight opens a second
    /// connection, and a stream that ended frees its place.
    #[tokio::test]
    async fn a_stream_limit_opens_another_connection_when_every_one_is_full() {
        let (addr, conns, release) = holding_server().await;
        let pool = pool();
        let (p, a) = (pool.clone(), target(&addr));
        let first = tokio::spawn(async move { p.send_h2(&a, get(), Some(1)).await });
        anymesh_testkit::wait::eventually_async("the first connection", || async {
            conns.load(Ordering::SeqCst) == 1
        })
        .await;
        let (p, a) = (pool.clone(), target(&addr));
        let second = tokio::spawn(async move { p.send_h2(&a, get(), Some(1)).await });
        anymesh_testkit::wait::eventually_async("a second connection", || async {
            conns.load(Ordering::SeqCst) == 2
        })
        .await;
        release.notify_waiters();
        let (one, two) = (first.await.expect("task"), second.await.expect("task"));
        let (resp, slot) = one.expect("an answer");
        assert!(resp.status().is_success() && slot.is_some());
        drop((resp, slot, two));
        // Both streams ended: the next request fits on an open connection.
        let (p, a) = (pool.clone(), target(&addr));
        let third = tokio::spawn(async move { p.send_h2(&a, get(), Some(1)).await });
        release.notify_waiters();
        anymesh_testkit::wait::eventually_async("the third answer", || async {
            release.notify_waiters();
            third.is_finished()
        })
        .await;
        assert_eq!(conns.load(Ordering::SeqCst), 2, "no third connection");
        // Without a limit, every stream shares the first open connection.
        let (p, a) = (pool.clone(), target(&addr));
        let unlimited = tokio::spawn(async move { p.send_h2(&a, get(), None).await });
        anymesh_testkit::wait::eventually_async("the unlimited answer", || async {
            release.notify_waiters();
            unlimited.is_finished()
        })
        .await;
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }
}
