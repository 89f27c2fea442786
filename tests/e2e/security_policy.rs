//! Istio's security resources end to end, through real proxies with mutual
//! TLS between them: AuthorizationPolicy cases from Istio's task pages,
//! RequestAuthentication against a local HTTPS JWKS server, the SPIFFE
//! Workload API as the certificate source, and Istio's bookinfo
//! `destination-rule-all-mtls.yaml` in a caller's routing.
//!
//! Every test starts a serving proxy (workloads whose applications run on
//! loopback) and callers whose file registry says the serving proxy fronts
//! those endpoints, with the identity it must prove.

mod authz;
mod bookinfo;
mod jwt;
mod workload_api;

use std::net::SocketAddr;

use anymesh::upstream::Upstream;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::{write, TestMesh};
use crate::mtls::launch;
use crate::mtls::pki::{identity_files, Root};

/// The `anymesh.yaml` lines every proxy of these tests shares.
const COMMON: &str = "listeners: {outbound: 127.0.0.1:0, admin: 127.0.0.1:0}\n\
     registries: [{name: file, type: file, path: services.yaml, poll_interval: 200ms}]\n\
     routing: [routes.yaml]\nrouting_reload_interval: 100ms\n";

/// A workload the serving proxy fronts: name, labels (flow-mapping
/// entries) and its application.
pub(crate) struct Served<'a> {
    pub name: &'a str,
    pub labels: &'a str,
    pub app: &'a Upstream,
}

/// The `workloads:` and `inbound:` lines of a proxy serving `served` as
/// `namespace`/`service_account` (one identity for all of them).
fn workloads(namespace: &str, service_account: &str, served: &[Served<'_>]) -> String {
    let mut out = String::from("workloads:\n");
    for s in served {
        out += &format!(
            "  - {{name: {}, namespace: {namespace}, service_account: {service_account}, labels: {{{}}}, ports: [{{port: {}, protocol: http}}]}}\n",
            s.name,
            s.labels,
            s.app.addr.port()
        );
    }
    out + "inbound: {listen: 127.0.0.1:0, handshake_timeout: 2s}\n"
}

/// Starts a proxy in `dir` (holding whatever its `identity` lines read)
/// with a registry, routing, and more `anymesh.yaml` lines.
async fn start(dir: tempfile::TempDir, services: &str, routes: &str, extra: &str) -> TestMesh {
    write(&dir.path().join("services.yaml"), services);
    write(&dir.path().join("routes.yaml"), routes);
    launch(dir, &format!("{COMMON}{extra}")).await
}

/// The serving proxy: identity files of `namespace`/`service_account` from
/// `root`, `routes` (Istio YAML), more `anymesh.yaml` lines in `extra`.
pub(crate) async fn server(
    root: &Root,
    namespace: &str,
    service_account: &str,
    served: &[Served<'_>],
    routes: &str,
    extra: &str,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    let id = dir.path().join("id");
    root.write_svid(&id, namespace, service_account, false);
    let yaml = format!(
        "{}{}{extra}",
        identity_files(&id),
        workloads(namespace, service_account, served)
    );
    start(dir, "services: []\n", routes, &yaml).await
}

/// An endpoint of a caller's registry: the application `app` with
/// `labels`, fronted by the proxy at `inbound` which must prove
/// `namespace`/`service_account`; `None` marks no proxy (plaintext).
pub(crate) fn endpoint(
    app: &Upstream,
    labels: &str,
    mesh: Option<(SocketAddr, &str, &str)>,
) -> String {
    let mesh = match mesh {
        Some((inbound, ns, sa)) => format!(
            ", mesh: {{port: {}, namespace: {ns}, service_account: {sa}}}",
            inbound.port()
        ),
        None => String::new(),
    };
    format!(
        "      - {{address: 127.0.0.1, port: {}, id: {}, labels: {{{labels}}}{mesh}}}\n",
        app.addr.port(),
        app.name
    )
}

/// A caller's proxy with identity `namespace`/`service_account` from
/// `root`, whose registry has one HTTP service `name` with `endpoints`.
pub(crate) async fn caller(
    root: &Root,
    namespace: &str,
    service_account: &str,
    name: &str,
    endpoints: &[String],
    routes: &str,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    let id = dir.path().join("id");
    root.write_svid(&id, namespace, service_account, false);
    let services = format!(
        "services:\n  - name: {name}\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints:\n{}",
        endpoints.concat()
    );
    start(dir, &services, routes, &identity_files(&id)).await
}

/// Who sends a request: a caller's proxy, or a plaintext client straight
/// to the serving proxy's inbound listener (no principal).
#[derive(Clone, Copy)]
pub(crate) enum From<'a> {
    Proxy(&'a TestMesh),
    Plaintext(SocketAddr),
}

/// An answer: status, the `x-upstream` of the application (`-` when none
/// answered) and the body.
pub(crate) type Answer = (StatusCode, String, String);

/// Sends `method path` for host `host` with `headers`.
pub(crate) async fn call(
    from: From<'_>,
    host: &str,
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    call_seen(from, host, method, path, headers).await.0
}

/// [`call`], with the names of the headers the application saw
/// (comma-separated, from its `x-seen-headers`).
pub(crate) async fn call_seen(
    from: From<'_>,
    host: &str,
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (Answer, String) {
    let addr = match from {
        From::Proxy(mesh) => mesh.proxy(),
        From::Plaintext(inbound) => inbound,
    };
    let mut b = Request::builder()
        .method(method.clone())
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(b.body(Full::default()).expect("request"))
        .await
        .expect("an answer");
    let status = resp.status();
    let header = |name: &str, absent: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(absent)
            .to_string()
    };
    let (who, seen) = (header("x-upstream", "-"), header("x-seen-headers", ""));
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        (status, who, String::from_utf8_lossy(&body).into_owned()),
        seen,
    )
}
