//! A real `anymesh ca` (the same `CaServer` `anymesh ca serve` runs, started
//! in-process) and anymesh proxies whose `identity.ca` joins it with
//! one-time tokens; what each proxy persisted in its state directory, read
//! back to observe rotations; a log capture for what a proxy says at start.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anymesh::mesh::Mesh;
use anymesh::settings::Settings;
use anymesh::upstream::Upstream;
use anymesh_identity::ca::{CaDir, CaServer, ServeOptions};
use anymesh_identity::{Credentials, SpiffeId};
use http::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::instrument::WithSubscriber;

use crate::harness::*;

pub(crate) const TRUST_DOMAIN: &str = "cluster.local";

/// A CA state directory and the server serving it.
pub(crate) struct Ca {
    pub dir: CaDir,
    /// The bootstrap bundle proxies trust the CA with before their first join.
    pub bundle: PathBuf,
    server: Option<CaServer>,
    pub addr: SocketAddr,
    _tmp: Option<tempfile::TempDir>,
}

impl Ca {
    /// A new CA (self-signed root) serving leaves valid for `leaf_ttl`.
    pub(crate) async fn start(leaf_ttl: Duration) -> Ca {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = CaDir::init_root(tmp.path().join("ca"), TRUST_DOMAIN).expect("CA made");
        let mut ca = Ca::serve(dir, leaf_ttl).await;
        ca._tmp = Some(tmp);
        ca
    }

    /// Serves an existing CA directory (e.g. one `anymesh ca init` made).
    pub(crate) async fn serve(dir: CaDir, leaf_ttl: Duration) -> Ca {
        let server = CaServer::start(
            dir.clone(),
            ServeOptions {
                listen: "127.0.0.1:0".parse().expect("address"),
                sans: vec!["127.0.0.1".into()],
                leaf_ttl,
            },
        )
        .await
        .expect("the CA serves");
        let bundle = dir.path().join("bootstrap-bundle.pem");
        write(&bundle, &dir.bundle_pem().expect("bundle"));
        Ca {
            addr: server.local_addr(),
            dir,
            bundle,
            server: Some(server),
            _tmp: None,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A one-time join token for `spiffe://cluster.local/ns/default/sa/<sa>`.
    pub(crate) fn token(&self, sa: &str) -> String {
        self.token_for(sa, Duration::from_secs(600))
    }

    pub(crate) fn token_for(&self, sa: &str, ttl: Duration) -> String {
        let id = SpiffeId::for_account(TRUST_DOMAIN, "default", sa).expect("identity");
        self.dir.mint_token(&id, ttl).expect("token minted")
    }

    /// Stops the CA server (its state directory stays).
    pub(crate) async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// The `identity:` lines of a proxy joining `ca` with `token`, keeping its
/// certificate in `<dir>/identity`.
fn identity_yaml(ca: &Ca, token: &str, dir: &Path) -> String {
    format!(
        "identity:\n  ca: {{url: \"{}\", bundle: \"{}\", token: \"{token}\", state_dir: \"{}\"}}\n",
        ca.url(),
        ca.bundle.display(),
        dir.join("identity").display()
    )
}

/// The proxy in front of `app`: workload `<sa>` in namespace `default`
/// (labels `app: <sa>`), its certificate from `ca` with `token`.
pub(crate) async fn server_side(
    ca: &Ca,
    token: &str,
    sa: &str,
    app: &Upstream,
    routes: &str,
) -> TestMesh {
    server_side_as(ca, token, sa, app, routes, "http").await
}

/// [`server_side`] with the workload port's protocol.
pub(crate) async fn server_side_as(
    ca: &Ca,
    token: &str,
    sa: &str,
    app: &Upstream,
    routes: &str,
    protocol: &str,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("services.yaml"), "services: []\n");
    write(&dir.path().join("routes.yaml"), routes);
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 100ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}\
         workloads:\n  - {{name: {sa}, namespace: default, service_account: {sa}, labels: {{app: {sa}}}, ports: [{{port: {}, protocol: {protocol}}}]}}\n\
         inbound: {{listen: 127.0.0.1:0, handshake_timeout: 2s}}\n",
        identity_yaml(ca, token, dir.path()),
        app.addr.port()
    );
    launch(dir, &yaml, None, true).await
}

/// The services.yaml of a caller: service `reviews` whose endpoint (`app`)
/// is fronted by `server`'s proxy with identity `sa/<server_sa>`.
pub(crate) fn services_behind(app: &Upstream, server: &TestMesh, server_sa: &str) -> String {
    services_behind_as(app, server, server_sa, "http")
}

fn services_behind_as(
    app: &Upstream,
    server: &TestMesh,
    server_sa: &str,
    protocol: &str,
) -> String {
    let inbound = server
        .mesh
        .inbound
        .expect("the server side has an inbound listener");
    format!(
        "services:\n  - name: reviews\n    ports: [{{name: http, port: 80, protocol: {protocol}}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: app, mesh: {{port: {}, service_account: {server_sa}}}}}\n",
        app.addr.port(),
        inbound.port()
    )
}

/// A caller's proxy (no workloads) whose registry says `reviews` is `app`
/// behind `server` (identity `sa/b`); `extra` are more anymesh.yaml lines.
/// `logs`, if given, captures what it logs while starting; `certified`:
/// whether it is expected to get a certificate.
pub(crate) async fn client_side(
    ca: &Ca,
    token: &str,
    app: &Upstream,
    server: &TestMesh,
    extra: &str,
    logs: Option<&Logs>,
    certified: bool,
) -> TestMesh {
    client_side_as(ca, token, app, server, extra, logs, certified, "http").await
}

/// [`client_side`] with the service port's protocol.
#[allow(clippy::too_many_arguments)] // a test's one-call set-up
pub(crate) async fn client_side_as(
    ca: &Ca,
    token: &str,
    app: &Upstream,
    server: &TestMesh,
    extra: &str,
    logs: Option<&Logs>,
    certified: bool,
    protocol: &str,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        &dir.path().join("services.yaml"),
        &services_behind_as(app, server, "b", protocol),
    );
    write(&dir.path().join("routes.yaml"), "");
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 100ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}{extra}",
        identity_yaml(ca, token, dir.path()),
    );
    launch(dir, &yaml, logs, certified).await
}

/// Starts a mesh from `yaml` written into `dir` and waits until it is
/// ready, or (`certified` false) until `/ready` says it has its routing
/// but no certificate.
pub(crate) async fn launch(
    dir: tempfile::TempDir,
    yaml: &str,
    logs: Option<&Logs>,
    certified: bool,
) -> TestMesh {
    let file = dir.path().join("anymesh.yaml");
    write(&file, yaml);
    let mesh = start_mesh(&file, logs).await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let t = TestMesh { mesh, dir, client };
    if certified {
        eventually("/ready", || async {
            (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    } else {
        eventually("/ready: no certificate", || async {
            let (status, body) = t.admin("/ready").await;
            (status == StatusCode::SERVICE_UNAVAILABLE && body.contains("no valid certificate"))
                .then_some(())
        })
        .await;
    }
    t
}

/// `Mesh::start` with the settings in `file` (what a restart does).
pub(crate) async fn start_mesh(file: &Path, logs: Option<&Logs>) -> Mesh {
    let settings = Settings::load(file).expect("settings");
    match logs {
        Some(logs) => Mesh::start(settings)
            .with_subscriber(logs.subscriber())
            .await
            .expect("mesh starts"),
        None => Mesh::start(settings).await.expect("mesh starts"),
    }
}

pub(crate) fn stats(server: &TestMesh) -> &anymesh_proxy::inbound::InboundStats {
    &server.mesh.inbound_state.as_ref().expect("inbound").stats
}

pub(crate) fn mtls_count(server: &TestMesh) -> u64 {
    stats(server).mtls.load(Ordering::Relaxed)
}

/// What a proxy persisted in its state directory: `svid.pem` (key, then
/// chain) as bytes and read, and the number of roots in `bundle.pem`.
pub(crate) struct Persisted {
    pub svid: Vec<u8>,
    pub creds: Credentials,
}

impl Persisted {
    pub(crate) fn read(proxy: &TestMesh) -> Option<Persisted> {
        let dir = proxy.path("identity");
        let svid = std::fs::read(dir.join("svid.pem")).ok()?;
        let bundle = std::fs::read(dir.join("bundle.pem")).ok()?;
        let creds = Credentials::from_pem(&svid, &svid, &bundle).ok()?;
        Some(Persisted { svid, creds })
    }

    /// Which of the CA's roots signed the leaf: its issuer name is the
    /// root's, `anymesh root <trust domain> #<generation> …`.
    pub(crate) fn signer(&self) -> Option<u32> {
        generation_named_in(self.creds.chain.first()?.as_ref())
    }

    /// The generations of the roots in the bundle.
    pub(crate) fn bundle_roots(&self) -> Vec<u32> {
        self.creds
            .bundle
            .iter()
            .filter_map(|r| generation_named_in(r.as_ref()))
            .collect()
    }
}

fn generation_named_in(der: &[u8]) -> Option<u32> {
    let needle = format!("anymesh root {TRUST_DOMAIN} #");
    let at = der
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let digits: String = der[at + needle.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| *b as char)
        .collect();
    digits.parse().ok()
}

/// Counts how often a proxy's persisted certificate changed (each renewal
/// writes a new key and chain), polling its state directory.
pub(crate) struct Renewals {
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Renewals {
    pub(crate) fn watch(proxy: &TestMesh) -> Renewals {
        let path = proxy.path("identity").join("svid.pem");
        let (count, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s) = (count.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut last = std::fs::read(&path).ok();
            while !s.load(Ordering::SeqCst) {
                let now = std::fs::read(&path).ok();
                if now.is_some() && now != last {
                    c.fetch_add(1, Ordering::SeqCst);
                    last = now;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Renewals { count, stop, task }
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub(crate) async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("watcher");
        self.count.load(Ordering::SeqCst)
    }
}

/// Everything logged through one subscriber, as text.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(self.clone())
            .finish()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}
