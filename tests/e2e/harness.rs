//! Shared set-up: temp config dirs, a running mesh, an HTTP client, polling.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anymesh::mesh::Mesh;
use anymesh::settings::Settings;
use anymesh::upstream::{self, Upstream};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};

pub(crate) const DEADLINE: Duration = anymesh_testkit::wait::DEADLINE;

/// Polls `check` (async, returning `Some` when done) until it holds, failing
/// the test after testkit's deadline (the same 15 s as [`DEADLINE`]).
pub(crate) use anymesh_testkit::wait::eventually_async as eventually;

/// A mesh with its config directory.
pub(crate) struct TestMesh {
    pub mesh: Mesh,
    pub dir: tempfile::TempDir,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) fn endpoint(up: &Upstream, labels: &str) -> String {
    format!(
        "      - {{address: 127.0.0.1, port: {}, id: {}, labels: {{{labels}}}}}\n",
        up.addr.port(),
        up.name
    )
}

/// A services.yaml with one service `name` on port 80 and the given endpoint lines.
pub(crate) fn services(name: &str, protocol: &str, endpoints: &[String]) -> String {
    format!(
        "services:\n  - name: {name}\n    ports: [{{name: http, port: 80, protocol: {protocol}}}]\n    endpoints:\n{}",
        endpoints.concat()
    )
}

pub(crate) fn write(path: &Path, text: &str) {
    // Write-then-rename so a watcher never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

impl TestMesh {
    /// Starts a mesh reading `services` and `routes` (Istio YAML) from a temp
    /// dir, and waits until it is ready.
    pub(crate) async fn start(services: &str, routes: &str) -> TestMesh {
        let t = Self::launch(Some(services), routes).await;
        let admin = t.mesh.admin;
        let c = t.client.clone();
        eventually("/ready", || {
            let c = c.clone();
            async move {
                let r = c
                    .request(
                        Request::get(format!("http://{admin}/ready"))
                            .body(Full::default())
                            .ok()?,
                    )
                    .await
                    .ok()?;
                (r.status() == StatusCode::OK).then_some(())
            }
        })
        .await;
        t
    }

    /// Starts a mesh whose services file does not exist yet (so it is not ready).
    pub(crate) async fn start_unready(routes: &str) -> TestMesh {
        Self::launch(None, routes).await
    }

    async fn launch(services: Option<&str>, routes: &str) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(services) = services {
            write(&dir.path().join("services.yaml"), services);
        }
        Self::launch_in(
            dir,
            "[{name: file, type: file, path: services.yaml, poll_interval: 200ms}]",
            routes,
        )
        .await
    }

    /// Starts a mesh with the given `registries:` value (YAML) and waits until it is ready.
    pub(crate) async fn start_with_registries(registries: &str, routes: &str) -> TestMesh {
        Self::start_with_settings(registries, routes, "").await
    }

    /// A file registry reading `services` with the given extra registry keys
    /// (e.g. `mapping: {...}`), waiting until ready.
    pub(crate) async fn start_file_registry(
        services: &str,
        registry_extra: &str,
        routes: &str,
    ) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("services.yaml"), services);
        let registries =
            format!("[{{name: file, type: file, path: services.yaml, {registry_extra}}}]");
        let t = Self::launch_in(dir, &registries, routes).await;
        eventually("/ready", || async {
            (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
        })
        .await;
        t
    }

    /// Like [`TestMesh::start_with_registries`], with more `anymesh.yaml` lines.
    pub(crate) async fn start_with_settings(
        registries: &str,
        routes: &str,
        extra: &str,
    ) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("extra.yaml"), extra);
        let t = Self::launch_in(dir, registries, routes).await;
        eventually("/ready", || async {
            (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
        })
        .await;
        t
    }

    /// A mesh with the file registry and more `listeners:` settings, as
    /// flow-mapping entries (e.g. `header_read_timeout: 300ms`).
    pub(crate) async fn start_with_listener(
        services: &str,
        routes: &str,
        listener: &str,
    ) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("services.yaml"), services);
        write(&dir.path().join("listener.yaml"), listener);
        let t = Self::launch_in(
            dir,
            "[{name: file, type: file, path: services.yaml}]",
            routes,
        )
        .await;
        eventually("/ready", || async {
            (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
        })
        .await;
        t
    }

    /// A mesh with the file registry whose outbound listener is served by
    /// `threads` threads (`anymesh proxy --workers`), waiting until ready.
    pub(crate) async fn start_with_threads(
        services: &str,
        routes: &str,
        threads: usize,
    ) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("services.yaml"), services);
        let t = Self::launch_tweaked(
            dir,
            "[{name: file, type: file, path: services.yaml}]",
            routes,
            |s| s.listeners.threads = threads,
        )
        .await;
        eventually("/ready", || async {
            (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
        })
        .await;
        t
    }

    async fn launch_in(dir: tempfile::TempDir, registries: &str, routes: &str) -> TestMesh {
        Self::launch_tweaked(dir, registries, routes, |_| {}).await
    }

    async fn launch_tweaked(
        dir: tempfile::TempDir,
        registries: &str,
        routes: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestMesh {
        write(&dir.path().join("routes.yaml"), routes);
        let mesh_file = dir.path().join("anymesh.yaml");
        let extra = std::fs::read_to_string(dir.path().join("extra.yaml")).unwrap_or_default();
        let listener = std::fs::read_to_string(dir.path().join("listener.yaml"))
            .map(|l| format!(", {l}"))
            .unwrap_or_default();
        write(
            &mesh_file,
            &format!(
                "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0{listener}}}\n\
                 registries: {registries}\n\
                 routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{extra}"
            ),
        );
        let mut settings = Settings::load(&mesh_file).expect("settings");
        tweak(&mut settings);
        let mesh = Mesh::start(settings).await.expect("mesh starts");
        let client = Client::builder(TokioExecutor::new()).build_http();
        TestMesh { mesh, dir, client }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn proxy(&self) -> SocketAddr {
        self.mesh.outbound
    }

    /// Sends a request through the proxy.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        self.client
            .request(req)
            .await
            .expect("request through the proxy")
    }

    /// GET `path` for `host` with extra headers; returns status, `x-upstream` and body.
    pub(crate) async fn get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, String) {
        let mut b = Request::get(format!("http://{}{path}", self.proxy())).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.send(b.body(Full::default()).expect("request")).await;
        let status = resp.status();
        let who = resp
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, who, String::from_utf8_lossy(&body).into_owned())
    }

    /// Counts which upstream answered `n` GETs.
    pub(crate) async fn count(
        &self,
        host: &str,
        n: usize,
        headers: &[(&str, &str)],
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let (status, who, body) = self.get(host, "/", headers).await;
            assert_eq!(status, StatusCode::OK, "unexpected answer: {body}");
            *counts.entry(who).or_insert(0) += 1;
        }
        counts
    }

    pub(crate) async fn admin(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .request(
                Request::get(format!("http://{}{path}", self.mesh.admin))
                    .body(Full::default())
                    .expect("req"),
            )
            .await
            .expect("admin request");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Starts named upstreams.
pub(crate) async fn upstreams(names: &[&str]) -> Vec<Upstream> {
    let mut v = Vec::new();
    for n in names {
        v.push(upstream::spawn(n).await.expect("upstream starts"));
    }
    v
}

/// Istio YAML: a DestinationRule with subsets by `version` label.
pub(crate) fn subsets_dr(host: &str, versions: &[&str], extra_policy: &str) -> String {
    let subsets: String = versions
        .iter()
        .map(|v| format!("    - name: {v}\n      labels: {{version: {v}}}\n"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n{extra_policy}  subsets:\n{subsets}"
    )
}

/// Sends requests in a loop from 8 tasks until stopped; counts failures, and
/// answers per upstream for the current epoch (requests that *started* in it).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicUsize>,
    failures: Arc<parking_lot::Mutex<Vec<String>>>,
    total: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    seen: Arc<parking_lot::Mutex<std::collections::BTreeMap<(usize, String), usize>>>,
}

impl Load {
    pub(crate) fn start(mesh: &TestMesh, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let total = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(parking_lot::Mutex::new(std::collections::BTreeMap::new()));
        let tasks = (0..8)
            .map(|_| {
                let (stop, epoch, failures, total, seen) = (
                    stop.clone(),
                    epoch.clone(),
                    failures.clone(),
                    total.clone(),
                    seen.clone(),
                );
                let client = mesh.client.clone();
                let proxy = mesh.proxy();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let started_in = epoch.load(Ordering::SeqCst);
                        let req = http::Request::get(format!("http://{proxy}/"))
                            .header("host", host)
                            .body(http_body_util::Full::default())
                            .expect("request");
                        match client.request(req).await {
                            Ok(r) if r.status() == StatusCode::OK => {
                                let who = r
                                    .headers()
                                    .get("x-upstream")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_string();
                                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                                *seen.lock().entry((started_in, who)).or_insert(0) += 1;
                            }
                            Ok(r) => failures.lock().push(format!("status {}", r.status())),
                            Err(e) => failures.lock().push(format!("error {e}")),
                        }
                        total.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            stop,
            epoch,
            failures,
            total,
            tasks,
            seen,
        }
    }

    /// Answers from `who` to requests started in the current epoch.
    pub(crate) fn seen(&self, who: &str) -> usize {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.seen
            .lock()
            .get(&(epoch, who.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Starts a new epoch: later counts only include requests started from now on.
    pub(crate) fn next_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = self.failures.lock().clone();
        (self.total.load(Ordering::SeqCst), failures)
    }
}

/// Panics on the mesh's listener threads, counted by a panic hook.
pub(crate) fn listener_panics() -> &'static std::sync::atomic::AtomicUsize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static COUNT: OnceLock<&'static AtomicUsize> = OnceLock::new();
    COUNT.get_or_init(|| {
        let count: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let listener = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("anymesh-listener"));
            if listener {
                count.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
        count
    })
}

/// Cases per generated end-to-end test: `PROPTEST_CASES`, or 64 (every case
/// is real traffic through the mesh).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

/// Runs `check` on `cases()` generated values, on a runtime that also
/// serves the mesh it sets up first.
pub(crate) fn run<S: Strategy, M>(
    setup: impl Future<Output = M>,
    strategy: S,
    check: impl AsyncFn(&M, S::Value),
) where
    S::Value: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mesh = rt.block_on(setup);
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&strategy, |value| {
        rt.block_on(check(&mesh, value));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A services.yaml endpoint line for a chaos upstream (id = its name).
pub(crate) fn chaos_endpoint(up: &anymesh_testkit::ChaosUpstream, labels: &str) -> String {
    format!(
        "      - {{address: 127.0.0.1, port: {}, id: {}, labels: {{{labels}}}}}\n",
        up.port(),
        up.name()
    )
}

impl TestMesh {
    /// A mesh with the file registry reading `services` and more
    /// `anymesh.yaml` lines (`extra`, e.g. `health_checks:`), waiting until
    /// ready.
    pub(crate) async fn start_with_services_and_settings(
        services: &str,
        routes: &str,
        extra: &str,
    ) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("services.yaml"), services);
        write(&dir.path().join("extra.yaml"), extra);
        let t = Self::launch_in(
            dir,
            "[{name: file, type: file, path: services.yaml, poll_interval: 200ms}]",
            routes,
        )
        .await;
        eventually("/ready", || async {
            (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
        })
        .await;
        t
    }
}
