//! `anymesh demo`: two versions of a service, the file registry, Istio routing
//! and the proxy, all on loopback; shows the split and header routing with
//! real requests, then keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::mesh::Mesh;
use crate::settings::Settings;
use crate::upstream;

const SERVICES: &str = include_str!("../examples/demo/services.yaml");
const ROUTES: &str = include_str!("../examples/demo/routes.yaml");
const MESH: &str = include_str!("../examples/demo/anymesh.yaml");

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(requests: usize, wait: bool) -> ExitCode {
    match demo(requests, wait).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anymesh demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(requests: usize, wait: bool) -> anyhow::Result<()> {
    let v1 = upstream::spawn("reviews-v1")
        .await
        .context("starting demo upstream v1")?;
    let v2 = upstream::spawn("reviews-v2")
        .await
        .context("starting demo upstream v2")?;
    let dir = TempDir(std::env::temp_dir().join(format!("anymesh-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let services = SERVICES
        .replace("{{V1_PORT}}", &v1.addr.port().to_string())
        .replace("{{V2_PORT}}", &v2.addr.port().to_string());
    write(&dir.0.join("services.yaml"), &services)?;
    write(&dir.0.join("routes.yaml"), ROUTES)?;
    let mesh_file = dir.0.join("anymesh.yaml");
    write(&mesh_file, MESH)?;

    let settings = Settings::load(&mesh_file)?;
    let mesh = Mesh::start(settings).await?;
    wait_until_routed(&mesh).await?;
    let proxy = mesh.outbound;
    println!("anymesh demo");
    println!(
        "  upstreams: reviews v1 at {}, reviews v2 at {}",
        v1.addr, v2.addr
    );
    println!(
        "  proxy (outbound) at {proxy}, admin at http://{}/config",
        mesh.admin
    );
    println!(
        "  config in {} (edit services.yaml or routes.yaml: changes apply live)",
        dir.0.display()
    );
    println!();

    let split = send(proxy, requests, None).await?;
    print_counts(
        &format!("{requests} requests to host reviews (VirtualService: 95% v1, 5% v2)"),
        &split,
        requests,
    );
    let iphone = 200;
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)";
    let by_ua = send(proxy, iphone, Some(ua)).await?;
    print_counts(
        &format!("{iphone} requests with User-Agent containing iPhone (route iphone-to-v2)"),
        &by_ua,
        iphone,
    );

    println!("try it:");
    println!("  curl -s -H 'Host: reviews' http://{proxy}/");
    println!("  curl -s -H 'Host: reviews' -H 'User-Agent: iPhone' http://{proxy}/");
    println!("  curl -s http://{}/metrics", mesh.admin);
    if wait {
        println!("serving until Ctrl-C");
        crate::mesh::wait_for_signal().await;
    }
    mesh.shutdown().await;
    drop(dir);
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Polls until the proxy routes `reviews` to both versions (deadline 10 s).
async fn wait_until_routed(mesh: &Mesh) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let routing = mesh.router.current();
        let ready = routing
            .table
            .clusters
            .iter()
            .filter(|c| !c.endpoints.is_empty())
            .count()
            >= 2;
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the mesh did not pick up the demo services within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` GET requests for host `reviews` (32 at a time) and counts answers by upstream.
async fn send(
    proxy: std::net::SocketAddr,
    n: usize,
    user_agent: Option<&str>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let client = Arc::new(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let mut counts = BTreeMap::new();
    let mut set = tokio::task::JoinSet::new();
    let ua = user_agent.map(str::to_string);
    for i in 0..n {
        let client = client.clone();
        let ua = ua.clone();
        set.spawn(async move {
            let mut req = Request::get(format!("http://{proxy}/")).header("host", "reviews");
            if let Some(ua) = ua {
                req = req.header("user-agent", ua);
            }
            let resp = client.request(req.body(Empty::new())?).await?;
            let who = resp
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", resp.status()));
            anyhow::Ok(who)
        });
        if set.len() >= 32 || i + 1 == n {
            while let Some(r) = set.join_next().await {
                *counts.entry(r??).or_insert(0) += 1;
                if set.len() < 16 && i + 1 < n {
                    break;
                }
            }
        }
    }
    while let Some(r) = set.join_next().await {
        *counts.entry(r??).or_insert(0) += 1;
    }
    Ok(counts)
}

fn print_counts(title: &str, counts: &BTreeMap<String, usize>, total: usize) {
    println!("{title}:");
    for (who, n) in counts {
        let pct = 100.0 * *n as f64 / total.max(1) as f64;
        println!("  {who:<12} {n:>6}  {pct:5.1}%");
    }
    println!();
}
