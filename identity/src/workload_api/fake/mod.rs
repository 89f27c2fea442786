//! A SPIFFE Workload API server for tests (SPIRE cannot be installed
//! here), faithful to the protocol: gRPC over a Unix socket, the service
//! `SpiffeWorkloadAPI` with `FetchX509SVID` and `FetchX509Bundles`
//! (server-streaming, the specification's messages), and SPIRE's answers:
//! a call without exactly one `workload.spiffe.io: true` metadata value is
//! refused with `InvalidArgument` "security header missing from request";
//! a workload with no SVID gets `PermissionDenied` "no identity issued".
//! The JWT methods answer `Unimplemented`.
//!
//! The test drives it: [`FakeWorkloadApi::set_svids`] pushes a new
//! response on every open stream (a rotation),
//! [`FakeWorkloadApi::close_streams`] ends them, [`FakeWorkloadApi::stop`]
//! shuts the server down as an agent restart would.

pub mod pb;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::server::Grpc;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use pb::{X509BundlesRequest, X509BundlesResponse, X509SvidRequest, X509SvidResponse};

/// The metadata key every Workload API call must carry.
const SECURITY_HEADER: &str = "workload.spiffe.io";

/// What every stream follows: the current response (`None`: no identity
/// issued) and how many times streams were closed.
#[derive(Clone, Default)]
struct Snapshot {
    response: Option<Arc<X509SvidResponse>>,
    epoch: u64,
}

struct Shared {
    state: watch::Sender<Snapshot>,
    accepted: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
}

/// A running fake Workload API on a Unix socket. Dropping it stops the
/// server abruptly; [`FakeWorkloadApi::stop`] closes it cleanly.
pub struct FakeWorkloadApi {
    socket: PathBuf,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeWorkloadApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWorkloadApi")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl FakeWorkloadApi {
    /// Serves on `socket` (a stale socket file there is removed first),
    /// with no SVID issued yet.
    pub async fn start(socket: impl AsRef<Path>) -> io::Result<Self> {
        let socket = socket.as_ref().to_path_buf();
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&socket)?;
        let shared = Arc::new(Shared {
            state: watch::channel(Snapshot::default()).0,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            let conn = listener.accept().await.map(|(stream, _)| stream);
            Some((conn, listener))
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let api = Api {
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move {
            let signal = async {
                let _ = stopped.await;
            };
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(api, incoming, signal)
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "fake workload api: server failed");
            }
        });
        Ok(Self {
            socket,
            shared,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The workload's SVIDs from now on: sent at once on every open
    /// `FetchX509SVID` stream and first on every new one. An empty list
    /// means no identity is issued (`PermissionDenied`, which ends the
    /// streams, as SPIRE does).
    pub fn set_svids(&self, svids: Vec<pb::X509Svid>) {
        self.shared.state.send_modify(|s| {
            let federated = s
                .response
                .as_ref()
                .map(|r| r.federated_bundles.clone())
                .unwrap_or_default();
            s.response = (!svids.is_empty()).then(|| {
                Arc::new(X509SvidResponse {
                    svids,
                    crl: Vec::new(),
                    federated_bundles: federated,
                })
            });
        });
    }

    /// Federated bundles (DER, keyed by trust domain ID) sent with the
    /// SVIDs; pushed on the open streams if an SVID is issued.
    pub fn set_federated_bundles(&self, bundles: HashMap<String, Vec<u8>>) {
        self.shared
            .state
            .send_if_modified(|s| match &mut s.response {
                Some(r) => {
                    Arc::make_mut(r).federated_bundles = bundles;
                    true
                }
                None => false,
            });
    }

    /// Ends every open stream with an OK status (the agent does at
    /// shutdown); new calls are served as before.
    pub fn close_streams(&self) {
        self.shared.state.send_modify(|s| s.epoch += 1);
    }

    /// `FetchX509SVID` and `FetchX509Bundles` calls accepted so far.
    pub fn accepted_calls(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Calls refused for a missing security header so far.
    pub fn refused_calls(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Responses handed to open streams so far (all methods): a test
    /// waits on it to know a push went out before it pushes the next.
    pub fn sent_responses(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared.state.receiver_count()
    }

    /// Ends the streams, stops serving and removes the socket.
    pub async fn stop(mut self) {
        self.close_streams();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for FakeWorkloadApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `SpiffeWorkloadAPI` service, routed by path as gRPC does.
#[derive(Clone)]
struct Api {
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Updates<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl tower_service::Service<http::Request<Body>> for Api {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let method = req.uri().path().strip_prefix("/SpiffeWorkloadAPI/");
            let response = match method {
                Some("FetchX509SVID") => {
                    let codec = ProstCodec::<X509SvidResponse, X509SvidRequest>::default();
                    Grpc::new(codec)
                        .server_streaming(FetchX509Svid(shared), req)
                        .await
                }
                Some("FetchX509Bundles") => {
                    let codec = ProstCodec::<X509BundlesResponse, X509BundlesRequest>::default();
                    Grpc::new(codec)
                        .server_streaming(FetchX509Bundles(shared), req)
                        .await
                }
                Some(other) => {
                    Status::unimplemented(format!("SpiffeWorkloadAPI/{other}: not in this fake"))
                        .into_http()
                }
                None => Status::unimplemented("unknown service").into_http(),
            };
            Ok(response)
        })
    }
}

/// SPIRE's check: exactly one `workload.spiffe.io` value, and it is `true`.
fn check_header<T>(shared: &Shared, req: &Request<T>) -> Result<(), Status> {
    let mut values = req.metadata().get_all(SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if v == "true" => {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        _ => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            Err(Status::invalid_argument(
                "security header missing from request",
            ))
        }
    }
}

/// The stream of `map(response)` for each new snapshot until the streams
/// are closed; no identity ends it with `PermissionDenied`.
fn updates<T, F>(shared: &Arc<Shared>, map: F) -> Updates<T>
where
    T: Send + 'static,
    F: Fn(&X509SvidResponse) -> T + Send + 'static,
{
    let mut rx = shared.state.subscribe();
    let epoch = rx.borrow().epoch;
    rx.mark_changed();
    let shared = shared.clone();
    let stream = futures_util::stream::unfold(Some((rx, map)), move |state| {
        let shared = shared.clone();
        async move {
            let (mut rx, map) = state?;
            rx.changed().await.ok()?;
            let snapshot = rx.borrow_and_update().clone();
            if snapshot.epoch != epoch {
                return None;
            }
            match snapshot.response {
                Some(response) => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    Some((Ok(map(&response)), Some((rx, map))))
                }
                None => Some((Err(Status::permission_denied("no identity issued")), None)),
            }
        }
    });
    Box::pin(stream)
}

struct FetchX509Svid(Arc<Shared>);

impl tower_service::Service<Request<X509SvidRequest>> for FetchX509Svid {
    type Response = Response<Updates<X509SvidResponse>>;
    type Error = Status;
    type Future = Ready<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<X509SvidRequest>) -> Self::Future {
        ready(
            check_header(&self.0, &req)
                .map(|()| Response::new(updates(&self.0, |r: &X509SvidResponse| r.clone()))),
        )
    }
}

struct FetchX509Bundles(Arc<Shared>);

impl tower_service::Service<Request<X509BundlesRequest>> for FetchX509Bundles {
    type Response = Response<Updates<X509BundlesResponse>>;
    type Error = Status;
    type Future = Ready<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<X509BundlesRequest>) -> Self::Future {
        ready(check_header(&self.0, &req).map(|()| Response::new(updates(&self.0, bundles_of))))
    }
}

/// The bundles a `FetchX509Bundles` answer carries: each SVID's trust
/// domain's, then the federated ones, keyed by trust domain ID.
fn bundles_of(response: &X509SvidResponse) -> X509BundlesResponse {
    let mut bundles = HashMap::new();
    for svid in &response.svids {
        let td = svid
            .spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        bundles.insert(format!("spiffe://{td}"), svid.bundle.clone());
    }
    bundles.extend(response.federated_bundles.clone());
    X509BundlesResponse {
        crl: response.crl.clone(),
        bundles,
    }
}
