//! The inbound listener: the side of the sidecar that faces the network.
//! Other mesh proxies connect here with mutual TLS; it authenticates the
//! peer, and the request goes to the local workload's port on loopback
//! through the same forwarding layer the outbound side uses (with an
//! inbound route table: one virtual host per workload port).
//!
//! A connection opens with plaintext, mesh mutual TLS (a ClientHello that
//! offers anymesh's ALPN) or other TLS (told apart by the `sniff` module);
//! what happens next is the PeerAuthentication mode of the workload port it
//! is for:
//!
//! | opening | STRICT | PERMISSIVE | DISABLE |
//! |---|---|---|---|
//! | mesh mTLS | served | served | passed through to the app as TCP |
//! | plaintext | refused | served | served |
//! | other TLS | refused | passed through | passed through |
//!
//! Facing the network, every connection is bounded: a connection limit,
//! of which connections still opening may hold half, a deadline for the
//! opening and TLS handshake, the HTTP/1.1 header-read and idle timeouts
//! (the idle timeout also ends passed-through connections), and the HTTP/2
//! server's abuse limits.

mod relay;
pub(crate) mod sniff;
pub mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anymesh_identity::tls::PeerError;
use anymesh_identity::Identity;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::forward::Proxy;
use crate::h1;
use crate::h1::handover::builder;
use crate::h1::ServerSettings;
use crate::metrics::istio::PeerLabels;
use crate::policy::{InboundPolicy, SharedPolicy};
use crate::rewind::Rewind;
use crate::server::{accept_until, Connections};
use crate::service::{InboundConn, Peer};
use crate::stream::{Stream, Tls};
pub use sniff::server_name_for_port;
use sniff::{sniff, Opening, ALPN_H2};

pub use anymesh_core::security::MtlsMode;

/// A local workload port the inbound listener serves.
#[derive(Debug, Clone)]
pub struct InboundPort {
    /// The port as registries advertise it (what mesh peers ask for).
    pub port: u16,
    /// Where the application listens (loopback).
    pub app: SocketAddr,
    pub mode: MtlsMode,
    /// What the application speaks on it.
    pub protocol: anymesh_core::model::Protocol,
    /// The inbound route table's virtual host for this port.
    pub route_key: Arc<str>,
    /// Istio's name of the port's cluster, `inbound|<port>||` (the access
    /// log's and the spans' upstream cluster on the inbound side).
    pub cluster: Arc<str>,
}

/// The workload ports the inbound listener serves; the first is where
/// connections that name no port go (plaintext, TLS without a server name).
#[derive(Debug, Default)]
pub struct InboundPorts {
    pub ports: Vec<InboundPort>,
}

impl InboundPorts {
    fn by_port(&self, port: u16) -> Option<&InboundPort> {
        self.ports.iter().find(|p| p.port == port)
    }

    fn default_port(&self) -> Option<&InboundPort> {
        self.ports.first()
    }

    /// The port a mesh peer's server name asks for; the default port when
    /// it names none.
    /// A server name that names no port (a DestinationRule's own `sni`)
    /// goes to the only port when there is one; with several it is refused
    /// rather than guessed.
    fn for_server_name(&self, sni: Option<&str>) -> Option<&InboundPort> {
        match sni.map(sniff::port_of_server_name) {
            None => self.default_port(),
            Some(Some(p)) => self.by_port(p),
            Some(None) if self.ports.len() == 1 => self.ports.first(),
            Some(None) => None,
        }
    }
}

/// The inbound listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct InboundSettings {
    /// From accept to a finished TLS handshake (or the first plaintext bytes).
    pub handshake_timeout: Duration,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// The HTTP/1.1 server's settings (header-read and idle timeouts on).
    pub server: ServerSettings,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            server: ServerSettings {
                header_read_timeout: Some(Duration::from_secs(10)),
                idle_timeout: Some(Duration::from_secs(3600)),
            },
        }
    }
}

/// Counts of what became of inbound connections.
#[derive(Debug, Default)]
pub struct InboundStats {
    pub mtls: AtomicU64,
    pub plaintext: AtomicU64,
    pub passthrough: AtomicU64,
    /// Plaintext (or other TLS) refused by STRICT.
    pub refused_plaintext: AtomicU64,
    /// Handshakes that failed (the peer's certificate was refused, or the
    /// handshake broke).
    pub refused_tls: AtomicU64,
    /// Closed at accept: the connection limit was reached, or half of it
    /// is taken by connections still in their opening.
    pub refused_limit: AtomicU64,
    /// No opening or handshake within the deadline, or a ClientHello too large.
    pub refused_slow: AtomicU64,
    /// Asked for a port no local workload serves.
    pub refused_port: AtomicU64,
}

/// What every inbound connection is served with.
pub struct Inbound {
    ports: ArcSwap<InboundPorts>,
    /// The proxy's identity, whose certificate the listener presents.
    identity: Arc<Identity>,
    /// The local workload's authentication and authorization policies.
    policy: SharedPolicy,
    settings: InboundSettings,
    permits: Arc<Semaphore>,
    /// Connections still in their opening (no ClientHello or first
    /// plaintext byte yet, or their TLS handshake unfinished) may hold at
    /// most half of the permits: a flood of connections that never finish
    /// opening cannot take the room of authenticated ones.
    openings: Arc<Semaphore>,
    pub stats: InboundStats,
    /// Refusals a peer can cause at will are logged at most once a second
    /// (the counters keep every one): a flood of bad handshakes must not
    /// become a flood of log lines.
    refusal_log: LogBudget,
    /// Istio's source labels per peer identity, shared by its connections
    /// (bounded; `unknown` for plaintext peers).
    peers: PeerLabelCache,
}

/// Istio's source labels of inbound peers, by principal, so that every
/// connection of one peer shares one value (and one metrics series cache
/// entry). Cleared whole past its bound.
#[derive(Debug)]
struct PeerLabelCache {
    unknown: Arc<PeerLabels>,
    by_principal: parking_lot::Mutex<std::collections::HashMap<Arc<str>, Arc<PeerLabels>>>,
}

impl Default for PeerLabelCache {
    fn default() -> Self {
        Self {
            unknown: Arc::new(PeerLabels::unknown()),
            by_principal: Default::default(),
        }
    }
}

impl PeerLabelCache {
    const LIMIT: usize = 4096;

    fn of(&self, id: Option<&anymesh_identity::SpiffeId>) -> Arc<PeerLabels> {
        let Some(id) = id else {
            return self.unknown.clone();
        };
        let mut map = self.by_principal.lock();
        if let Some(l) = map.get(id.principal()) {
            return l.clone();
        }
        if map.len() >= Self::LIMIT {
            map.clear();
        }
        let labels = Arc::new(PeerLabels::of_peer(Some(id)));
        map.insert(Arc::from(id.principal()), labels.clone());
        labels
    }
}

/// Allows one log line per second; counts the lines it held back.
#[derive(Debug, Default)]
struct LogBudget {
    /// The second (since the listener started) of the last line allowed.
    last: AtomicU64,
    held: AtomicU64,
    start: std::sync::OnceLock<Instant>,
}

impl LogBudget {
    /// `Some(lines held back since the last one)` when a line may be written now.
    fn take(&self) -> Option<u64> {
        let start = *self.start.get_or_init(Instant::now);
        let now = start.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != now
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Inbound {
    pub fn new(ports: InboundPorts, identity: Arc<Identity>, settings: InboundSettings) -> Self {
        Self {
            ports: ArcSwap::from_pointee(ports),
            identity,
            policy: SharedPolicy::default(),
            settings,
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            openings: Arc::new(Semaphore::new(opening_budget(settings.max_connections))),
            stats: InboundStats::default(),
            refusal_log: LogBudget::default(),
            peers: PeerLabelCache::default(),
        }
    }

    /// Replaces the ports and their modes (a PeerAuthentication change);
    /// connections already open keep what they were accepted with.
    pub fn set_ports(&self, ports: InboundPorts) {
        self.ports.store(Arc::new(ports));
    }

    /// Puts new policies in force for every request from now on.
    pub fn set_policy(&self, policy: InboundPolicy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn settings(&self) -> &InboundSettings {
        &self.settings
    }
}

/// How many of `max_connections` may be in their opening at once: half,
/// and at least one.
fn opening_budget(max_connections: usize) -> usize {
    max_connections.div_ceil(2)
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Serves inbound connections on this thread until `shutdown` resolves (or
/// no more come), then drains them.
pub async fn serve_inbound(
    conns: Connections,
    inbound: Arc<Inbound>,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let settings = inbound.settings.server;
    let shared = Arc::new(h1::Shared {
        service: proxy,
        settings,
        hyper: builder(settings),
    });
    accept_until(conns, shutdown, "inbound", |tcp, addr, stop| {
        let Ok(permit) = inbound.permits.clone().try_acquire_owned() else {
            count(&inbound.stats.refused_limit);
            tracing::debug!(%addr, "inbound connection refused: connection limit reached");
            return None;
        };
        let Ok(opening) = inbound.openings.clone().try_acquire_owned() else {
            count(&inbound.stats.refused_limit);
            tracing::debug!(%addr, "inbound connection refused: too many connections still opening");
            return None;
        };
        let (shared, inbound) = (shared.clone(), inbound.clone());
        Some(async move {
            connection(tcp, addr, &shared, &inbound, stop, opening).await;
            drop(permit);
        })
    })
    .await;
}

/// Serves one inbound connection.
async fn connection(
    mut tcp: TcpStream,
    addr: SocketAddr,
    shared: &Arc<h1::Shared<Proxy>>,
    inbound: &Inbound,
    stop: watch::Receiver<bool>,
    opening: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let Ok(local) = tcp.local_addr() else { return };
    let stats = &inbound.stats;
    let idle = inbound.settings.server.idle_timeout;
    let deadline = Instant::now() + inbound.settings.handshake_timeout;
    let mut buf = BytesMut::new();
    let kind = match tokio::time::timeout_at(deadline, sniff(&mut tcp, &mut buf)).await {
        Ok(Ok(o)) => o,
        Ok(Err(sniff::SniffError::TooLarge)) | Err(_) => {
            count(&stats.refused_slow);
            tracing::debug!(%addr, "inbound connection closed: no complete opening in time (or too large)");
            return;
        }
        Ok(Err(e)) => {
            tracing::trace!(%addr, error = %e, "inbound connection ended before it opened");
            return;
        }
    };
    let ports = inbound.ports.load_full();
    match kind {
        Opening::Mesh { sni } => {
            let Some(port) = ports.for_server_name(sni.as_deref()) else {
                count(&stats.refused_port);
                if let Some(held) = inbound.refusal_log.take() {
                    tracing::info!(%addr, server_name = ?sni, held_back = held, "inbound mTLS refused: no local workload serves the port asked for");
                }
                return;
            };
            if port.mode == MtlsMode::Disable {
                drop(opening);
                count(&stats.passthrough);
                passthrough(tcp, buf.freeze(), port.app, addr, idle).await;
                return;
            }
            let Some(config) = inbound.identity.tls().map(|t| t.server.clone()) else {
                count(&stats.refused_tls);
                if let Some(held) = inbound.refusal_log.take() {
                    tracing::warn!(%addr, held_back = held, "inbound mTLS refused: this proxy has no certificate yet");
                }
                return;
            };
            let first = buf.freeze();
            let accept = crate::stream::mesh::accept(tcp, &first, config, |session| {
                (
                    session.alpn_protocol() == Some(ALPN_H2),
                    anymesh_identity::tls::peer_id(session),
                )
            });
            let (tls, (h2, peer_id)) = match tokio::time::timeout_at(deadline, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    count(&stats.refused_tls);
                    let reason =
                        PeerError::from_io(&e).map_or_else(|| e.to_string(), |p| p.to_string());
                    if let Some(held) = inbound.refusal_log.take() {
                        tracing::warn!(%addr, %reason, held_back = held, "inbound mTLS handshake refused");
                    }
                    return;
                }
                Err(_) => {
                    count(&stats.refused_slow);
                    tracing::debug!(%addr, "inbound mTLS handshake did not finish in time");
                    return;
                }
            };
            drop(opening);
            count(&stats.mtls);
            let peer = Peer {
                addr,
                inbound: Some(Arc::new(InboundConn {
                    source: inbound.peers.of(peer_id.as_ref()),
                    peer_labels: Default::default(),
                    route_key: port.route_key.clone(),
                    cluster: port.cluster.clone(),
                    peer_id,
                    port: port.port,
                    local,
                    sni: sni.map(String::into_boxed_str),
                    policy: inbound.policy.clone(),
                })),
            };
            let stream = Stream::Tls(Box::new(Tls::Mesh(tls)));
            serve(stream, Bytes::new(), h2, peer, shared, stop).await;
        }
        Opening::Plain | Opening::OtherTls => {
            // What comes next is bounded by the header-read timeout or is
            // the application's.
            drop(opening);
            let Some(port) = ports.default_port() else {
                count(&stats.refused_port);
                return;
            };
            if port.mode == MtlsMode::Strict {
                count(&stats.refused_plaintext);
                tracing::debug!(%addr, "inbound connection refused: STRICT mutual TLS and the peer did not offer mesh mTLS");
                return;
            }
            if kind == Opening::OtherTls {
                count(&stats.passthrough);
                passthrough(tcp, buf.freeze(), port.app, addr, idle).await;
                return;
            }
            count(&stats.plaintext);
            let peer = Peer {
                addr,
                inbound: Some(Arc::new(InboundConn {
                    route_key: port.route_key.clone(),
                    cluster: port.cluster.clone(),
                    peer_id: None,
                    port: port.port,
                    local,
                    sni: None,
                    policy: inbound.policy.clone(),
                    source: inbound.peers.of(None),
                    peer_labels: Default::default(),
                })),
            };
            h1::serve_connection(Stream::Tcp(tcp), peer, shared.clone(), stop, Some(buf)).await;
        }
    }
}

/// Serves an authenticated connection with the protocol its ALPN chose.
async fn serve(
    stream: Stream,
    prefix: Bytes,
    h2: bool,
    peer: Peer,
    shared: &Arc<h1::Shared<Proxy>>,
    stop: watch::Receiver<bool>,
) {
    if h2 {
        Box::pin(crate::h2::serve(
            stream,
            prefix,
            peer,
            shared.service.clone(),
            stop,
        ))
        .await;
    } else {
        h1::serve_connection(stream, peer, shared.clone(), stop, None).await;
    }
}

/// Relays a connection the proxy does not terminate to the application,
/// bytes already read first, until either side ends or it idles for `idle`.
async fn passthrough(
    tcp: TcpStream,
    prefix: Bytes,
    app: SocketAddr,
    addr: SocketAddr,
    idle: Option<Duration>,
) {
    let mut client = Rewind::new(prefix, tcp);
    let mut upstream = match TcpStream::connect(app).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%addr, %app, error = %e, "inbound passthrough: the application refused");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(e) = relay::relay(&mut client, &mut upstream, idle).await {
        tracing::trace!(%addr, error = %e, "inbound passthrough ended");
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_once_a_second_with_the_count_held_back() {
        let budget = LogBudget::default();
        assert_eq!(budget.take(), Some(0), "the first line is written");
        assert_eq!((budget.take(), budget.take()), (None, None));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            budget.take(),
            Some(2),
            "the next second's line says two were held back"
        );
        assert_eq!(budget.take(), None);
    }
}
