//! The CA's HTTPS server (`anymesh ca serve`): HTTP/1.1 over TLS with a
//! certificate the CA issues itself, optional client certificates (for
//! renewal), and bounded connections, handshakes, headers and bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex, Semaphore};
use tokio::task::JoinHandle;

use super::authority::{CaDir, Loaded};
use super::pem::{self, rfc3339};
use super::{issue, tokens, wire, CaError};
use crate::creds::leaf_info;
use crate::spiffe::SpiffeId;

/// Largest request body.
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection may live.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How `anymesh ca serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (`--listen`).
    pub listen: SocketAddr,
    /// Host names and IP addresses clients reach the CA by (the server
    /// certificate's SANs).
    pub sans: Vec<String>,
    /// Lifetime of the leaves it signs.
    pub leaf_ttl: Duration,
}

impl ServeOptions {
    /// Default leaf lifetime: 24 hours.
    pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
}

/// A running CA server.
#[derive(Debug)]
pub struct CaServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    ca: CaDir,
    opts: ServeOptions,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    raw: Vec<u8>,
    loaded: Option<Arc<Loaded>>,
    tls: Option<ServerTls>,
}

struct ServerTls {
    /// The state it was built from (its client certificate anchors).
    built_from: Arc<Loaded>,
    generation: u32,
    config: Arc<ServerConfig>,
    refresh_at: SystemTime,
}

impl CaServer {
    /// Binds `opts.listen` and serves the CA in `ca` until `shutdown`.
    pub async fn start(ca: CaDir, opts: ServeOptions) -> Result<Self, CaError> {
        if opts.sans.is_empty() {
            return Err(CaError::Invalid(
                "the CA's server certificate needs at least one name (--san)".into(),
            ));
        }
        if opts.leaf_ttl < Duration::from_secs(1) {
            return Err(CaError::Invalid("--leaf-ttl must be at least 1s".into()));
        }
        let shared = Arc::new(Shared {
            ca,
            opts,
            cache: Mutex::new(Cache::default()),
        });
        // Fail now, not on the first connection, if the state is unusable.
        shared.tls_config().await?;
        let listener = TcpListener::bind(shared.opts.listen)
            .await
            .map_err(|e| CaError::Invalid(format!("listen on {}: {e}", shared.opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CaError::Invalid(format!("listen on {}: {e}", shared.opts.listen)))?;
        let (stop, stopped) = watch::channel(false);
        tracing::info!(%addr, dir = %shared.ca.path().display(), "ca: serving");
        let task = tokio::spawn(accept_loop(shared, listener, stopped));
        Ok(Self { addr, stop, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "ca: accept failed");
                    // Out of file descriptors, typically: let some close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "ca: refused connection: {MAX_CONNECTIONS} connections open");
            continue;
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ =
                tokio::time::timeout(CONNECTION_TIMEOUT, serve_conn(shared, stream, peer)).await;
        });
    }
    conns.shutdown().await;
}

async fn serve_conn(shared: Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let config = match shared.tls_config().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "ca: cannot build the server's TLS settings");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, reason = %e, "ca: refused connection: tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "ca: refused connection: tls handshake timed out");
            return;
        }
    };
    let client_leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let client_leaf = client_leaf.clone();
        async move { Ok::<_, Infallible>(handle(&shared, client_leaf.as_ref(), peer, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "ca: connection ended with an error");
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn refuse(
    peer: SocketAddr,
    path: &str,
    status: StatusCode,
    reason: String,
) -> Response<Full<Bytes>> {
    tracing::warn!(%peer, path, status = status.as_u16(), %reason, "ca: refused");
    json_response(status, &wire::Failure { error: reason })
}

fn status_of(e: &CaError) -> StatusCode {
    match e {
        CaError::Refused(r) if r.starts_with("csr:") => StatusCode::BAD_REQUEST,
        CaError::Refused(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn reason_of(e: &CaError) -> String {
    match e {
        CaError::Refused(r) => r.clone(),
        other => other.to_string(),
    }
}

async fn handle(
    shared: &Shared,
    client_leaf: Option<&CertificateDer<'static>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), method) {
        ("/v1/join", Method::POST) => {
            let body = match read_json::<wire::JoinRequest>(req).await {
                Ok(b) => b,
                Err((status, reason)) => return refuse(peer, &path, status, reason),
            };
            match shared.join(&body).await {
                Ok(out) => json_response(StatusCode::OK, &out),
                Err(e) => refuse(peer, &path, status_of(&e), reason_of(&e)),
            }
        }
        ("/v1/renew", Method::POST) => {
            let Some(leaf) = client_leaf else {
                return refuse(
                    peer,
                    &path,
                    StatusCode::UNAUTHORIZED,
                    "renewal needs the current certificate as the TLS client certificate".into(),
                );
            };
            let body = match read_json::<wire::RenewRequest>(req).await {
                Ok(b) => b,
                Err((status, reason)) => return refuse(peer, &path, status, reason),
            };
            match shared.renew(leaf, &body).await {
                Ok(out) => json_response(StatusCode::OK, &out),
                Err(e) => refuse(peer, &path, status_of(&e), reason_of(&e)),
            }
        }
        ("/v1/bundle", Method::GET) => match shared.loaded().await {
            Ok(loaded) => json_response(
                StatusCode::OK,
                &wire::Bundle {
                    bundle: pem::certs_pem(&loaded.bundle()),
                },
            ),
            Err(e) => refuse(
                peer,
                &path,
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ),
        },
        ("/v1/join" | "/v1/renew" | "/v1/bundle", m) => refuse(
            peer,
            &path,
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {m} not allowed"),
        ),
        _ => refuse(
            peer,
            &path,
            StatusCode::NOT_FOUND,
            "no such endpoint".into(),
        ),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, (StatusCode, String)> {
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(HEADER_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {MAX_BODY} bytes"),
                ));
            }
            return Err((StatusCode::BAD_REQUEST, format!("reading the body: {e}")));
        }
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time".into(),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, format!("body: {e}")))
}

impl Shared {
    /// The CA's signers, re-read when `ca.json` changes.
    async fn loaded(&self) -> Result<Arc<Loaded>, CaError> {
        let raw = self.ca.state_bytes().await?;
        let mut cache = self.cache.lock().await;
        if let Some(loaded) = &cache.loaded {
            if cache.raw == raw {
                return Ok(loaded.clone());
            }
        }
        let loaded = Arc::new(self.ca.load_from(&raw)?);
        tracing::info!(
            signers = loaded.signers.len(),
            bundle_roots = loaded.bundle().len(),
            "ca: state loaded"
        );
        cache.raw = raw;
        cache.loaded = Some(loaded.clone());
        Ok(loaded)
    }

    /// The TLS settings for a new connection: a server certificate from
    /// the active signer (renewed at half its life or when the signer
    /// changes), client certificates checked against the live signers.
    async fn tls_config(&self) -> Result<Arc<ServerConfig>, CaError> {
        let loaded = self.loaded().await?;
        let now = SystemTime::now();
        let signer = loaded
            .active(now)
            .ok_or_else(|| CaError::Invalid("no active signer".into()))?;
        let mut cache = self.cache.lock().await;
        if let Some(tls) = &cache.tls {
            if Arc::ptr_eq(&tls.built_from, &loaded)
                && tls.generation == signer.generation
                && now < tls.refresh_at
            {
                return Ok(tls.config.clone());
            }
        }
        let ttl = self.opts.leaf_ttl;
        let (signed, key) = issue::server(&signer.issuer, &self.opts.sans, ttl, now)?;
        let mut chain = vec![signed.cert];
        chain.extend(signer.above.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in loaded.signer_certs() {
            roots.add(cert)?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| CaError::Invalid(format!("client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        cache.tls = Some(ServerTls {
            built_from: loaded.clone(),
            generation: signer.generation,
            config: config.clone(),
            refresh_at: now + ttl / 2,
        });
        tracing::info!(
            generation = signer.generation,
            serial = %signed.serial,
            not_after = %rfc3339(signed.not_after),
            "ca: server certificate issued"
        );
        Ok(config)
    }

    /// Signs a leaf for `id` with the active signer.
    async fn issue(&self, id: &SpiffeId, csr: &str, via: &str) -> Result<wire::Issued, CaError> {
        let key = issue::csr_key(csr)?;
        let loaded = self.loaded().await?;
        let now = SystemTime::now();
        let signer = loaded
            .active(now)
            .ok_or_else(|| CaError::Invalid("no active signer".into()))?;
        let signed = issue::leaf(&signer.issuer, id, &key, self.opts.leaf_ttl, now)?;
        tracing::info!(
            identity = %id,
            serial = %signed.serial,
            not_after = %rfc3339(signed.not_after),
            signer = signer.generation,
            via,
            "ca: issued"
        );
        let mut chain = vec![signed.cert];
        chain.extend(signer.above.iter().cloned());
        Ok(wire::Issued {
            chain: pem::certs_pem(&chain),
            bundle: pem::certs_pem(&loaded.bundle()),
        })
    }

    async fn join(&self, req: &wire::JoinRequest) -> Result<wire::Issued, CaError> {
        let trust_domain = self.loaded().await?.trust_domain.clone();
        let token = tokens::check(self.ca.dir(), &req.token, &trust_domain, SystemTime::now())?;
        let issued = self.issue(&token.id, &req.csr, "join").await?;
        // Used up only once the certificate exists; a lost race discards it.
        tokens::consume(self.ca.dir(), &token)?;
        Ok(issued)
    }

    async fn renew(
        &self,
        client_leaf: &CertificateDer<'static>,
        req: &wire::RenewRequest,
    ) -> Result<wire::Issued, CaError> {
        // The TLS handshake checked the chain against the live signers and
        // the validity; the identity is the leaf's one URI SAN.
        let info = leaf_info(client_leaf)
            .map_err(|e| CaError::Refused(format!("client certificate: {e}")))?;
        let trust_domain = self.loaded().await?.trust_domain.clone();
        if info.id.trust_domain() != trust_domain {
            return Err(CaError::Refused(format!(
                "client certificate for {} is outside this CA's trust domain {trust_domain}",
                info.id
            )));
        }
        if SystemTime::now() >= info.not_after {
            return Err(CaError::Refused("client certificate expired".into()));
        }
        self.issue(&info.id, &req.csr, "renew").await
    }
}
