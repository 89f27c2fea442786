//! The real binary: `check`, `routes`, `proxy` as a process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::write;

const BIN: &str = env!("CARGO_BIN_EXE_anymesh");

/// `anymesh proxy` running as a child process; killed on drop.
pub(crate) struct Binary {
    child: Child,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    pub(crate) async fn start(services: &str, routes: &str) -> Binary {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("services.yaml"), services);
        write(&dir.path().join("routes.yaml"), routes);
        let cfg = dir.path().join("anymesh.yaml");
        write(
            &cfg,
            "listeners: {outbound: 127.0.0.1:0, admin: 127.0.0.1:0}\nrouting: [routes.yaml]\n",
        );
        let mut child = Command::new(BIN)
            .args(["proxy", "-c"])
            .arg(&cfg)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anymesh");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Reads log lines; keeps draining after startup so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "anymesh listening" {
                    let addr = |k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                    let _ = tx.send((addr("outbound"), addr("admin")));
                }
            }
        });
        let (outbound, admin) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
                .await
                .expect("join")
                .expect("anymesh logged its listening addresses");
        let bin = Binary {
            child,
            outbound: outbound.expect("outbound addr"),
            admin: admin.expect("admin addr"),
            _dir: dir,
        };
        let admin = bin.admin;
        crate::harness::eventually("binary ready", || async move {
            let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /ready HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.ok()?;
            buf.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
        bin
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("memory field")
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], cfg: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .expect("run anymesh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn config_dir(services: &str, routes: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("services.yaml"), services);
    write(&dir.path().join("routes.yaml"), routes);
    write(&dir.path().join("anymesh.yaml"), "routing: [routes.yaml]\n");
    dir
}

const SERVICES: &str = "services:\n  - name: reviews\n    ports: [{name: http, port: 9080}]\n    endpoints:\n      - {address: 10.0.0.1, port: 9080, labels: {version: v1}}\n      - {address: 10.0.0.2, port: 9080, labels: {version: v2}}\n      - {address: 10.0.0.3, port: 9080, labels: {version: v2}, health: unhealthy}\n";

const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

#[test]
fn check_reports_three_mistakes_and_fails() {
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        user-agent: {{regex: \"(iPhone\"}}\n    route:\n    - destination: {{host: reviews, subset: v3}}\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 90\n    - destination: {{host: reviews, subset: v2}}\n      weight: 5\n---\n{DR}"
    );
    let dir = config_dir(SERVICES, &routes);
    let (code, out) = run(&["check"], &dir.path().join("anymesh.yaml"));
    assert_eq!(code, 64, "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 3, "{out}");
    assert!(
        out.contains("spec.http[0].match[0].headers.user-agent.regex"),
        "{out}"
    );
    assert!(
        out.contains("spec.http[0].route[0].destination.subset"),
        "{out}"
    );
    assert!(out.contains("spec.http[1].route"), "{out}");
    assert!(out.contains("3 errors"), "{out}");
}

#[test]
fn check_passes_a_good_config() {
    let dir = config_dir(SERVICES, DR);
    let (code, out) = run(&["check"], &dir.path().join("anymesh.yaml"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 errors"), "{out}");
    assert!(out.contains("1 services, 3 endpoints"), "{out}");
}

/// `check` counts Telemetry resources, and names the one it refuses.
#[test]
fn check_counts_telemetry_resources() {
    let routes = format!(
        "{DR}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  tracing:\n  - randomSamplingPercentage: 10\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: bad, namespace: default}}\nspec:\n  tracing:\n  - randomSamplingPercentage: 150\n"
    );
    let dir = config_dir(SERVICES, &routes);
    let (code, out) = run(&["check"], &dir.path().join("anymesh.yaml"));
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("telemetry: 1 Telemetries"), "{out}");
    assert!(out.contains("randomSamplingPercentage"), "{out}");
}

#[test]
fn check_reports_a_broken_registry_file_with_line() {
    let dir = config_dir("services:\n  - name: [oops\n", DR);
    let (code, out) = run(&["check"], &dir.path().join("anymesh.yaml"));
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("services.yaml"), "{out}");
    assert!(out.contains("line 2"), "{out}");
}

#[test]
fn routes_explains_split_subset_and_exclusions() {
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - name: mobile\n    match:\n    - headers:\n        user-agent: {{regex: \".*iPhone.*\"}}\n    route:\n    - destination: {{host: reviews, subset: v2}}\n  - name: canary\n    route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 95\n    - destination: {{host: reviews, subset: v2}}\n      weight: 5\n---\n{DR}"
    );
    let dir = config_dir(SERVICES, &routes);
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out) = run(&["routes", "--host", "reviews", "--path", "/x"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route: canary"), "{out}");
    assert!(out.contains("95.0%"), "{out}");
    assert!(out.contains("5.0%"), "{out}");
    assert!(out.contains("10.0.0.1:9080"), "{out}");
    assert!(out.contains("unhealthy"), "{out}");
    let (_, out) = run(
        &[
            "routes",
            "--host",
            "reviews",
            "--header",
            "user-agent=Mozilla (iPhone)",
        ],
        &cfg,
    );
    assert!(out.contains("route: mobile"), "{out}");
    assert!(out.contains("100.0%"), "{out}");
    assert!(out.contains("skipped") || !out.contains("canary"), "{out}");
    let (_, out) = run(&["routes", "--host", "unknown"], &cfg);
    assert!(out.contains("no route"), "{out}");
}

#[test]
fn proxy_refuses_a_bad_mesh_config_with_exit_64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("anymesh.yaml");
    write(&cfg, "listeners:\n  outbund: 127.0.0.1:1\n");
    let (code, out) = run(&["proxy"], &cfg);
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains("unknown field `outbund`") && out.contains("line 2"),
        "{out}"
    );
}

/// A directory with `anymesh.yaml` naming `registries` and an empty routing file.
fn registry_dir(registries: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("routes.yaml"), "");
    write(
        &dir.path().join("anymesh.yaml"),
        &format!("registries: {registries}\nrouting: [routes.yaml]\n"),
    );
    dir
}

async fn run_async(args: &[&str], cfg: &Path) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cfg = cfg.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &cfg)
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn check_lists_each_etcd_registry_and_counts_what_it_holds() {
    let etcd = anymesh_testkit::EtcdServer::start().await;
    let mut client = etcd.client().await;
    for (key, addr) in [
        ("services/web/10.0.0.1:8080", "10.0.0.1:8080"),
        ("services/web/10.0.0.2:8080", "10.0.0.2:8080"),
        ("services/api/10.0.0.3:9090", "10.0.0.3:9090"),
    ] {
        let value = format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":{{}}}}"#);
        client.put(key, value, None).await.expect("put");
    }
    client
        .put("services/api/broken", "not json", None)
        .await
        .expect("put");
    let dir = registry_dir(&format!(
        "[{{name: etcd, type: etcd, endpoints: ['{}'], prefix: services/}}]",
        etcd.url()
    ));
    let (code, out) = run_async(&["check"], &dir.path().join("anymesh.yaml")).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "registry etcd (etcd {}, prefix services/): 2 services, 3 endpoints at revision",
            etcd.url()
        )),
        "{out}"
    );
    // The invalid key is reported as the running registry reports it.
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: registry etcd:"))
        .unwrap_or_else(|| panic!("no warning about the broken key: {out}"));
    assert!(warning.contains("services/api/broken"), "{out}");
    assert!(out.contains("0 errors, 1 warning"), "{out}");
}

#[tokio::test]
async fn check_names_an_unreachable_etcd_registry_and_fails_unless_offline() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = registry_dir(&format!(
        "[{{name: events, type: etcd, endpoints: ['http://127.0.0.1:{port}'], dial_timeout: 1s, request_timeout: 1s}}]"
    ));
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out) = run_async(&["check", "--timeout", "5s"], &cfg).await;
    assert_eq!(code, 69, "{out}");
    let error = out
        .lines()
        .find(|l| l.starts_with("error: registry events"))
        .unwrap_or_else(|| panic!("no error naming the registry: {out}"));
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert!(error.contains("unreachable"), "{out}");
    assert!(out.contains("1 error"), "{out}");

    let (code, out) = run_async(&["check", "--offline"], &cfg).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("settings valid; not contacted"), "{out}");
}

/// `check` against etcd with TLS and client certificates: the right CA
/// lists; a CA that did not sign etcd's certificate is named as the cause.
#[tokio::test]
async fn check_reaches_a_tls_etcd_and_names_a_wrong_ca() {
    let etcd = anymesh_testkit::EtcdServer::start_tls().await;
    let mut client = etcd.client().await;
    client
        .put(
            "services/web/10.0.0.1:8080",
            r#"{"Op":0,"Addr":"10.0.0.1:8080","Metadata":{}}"#,
            None,
        )
        .await
        .expect("put");
    let pki = etcd.tls().expect("tls").clone();
    let registries = |ca: &Path| {
        format!(
            "[{{name: secure, type: etcd, endpoints: ['{}'], tls: {{ca_file: '{}', cert_file: '{}', key_file: '{}'}}}}]",
            etcd.url(),
            ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        )
    };
    let dir = registry_dir(&registries(&pki.ca));
    let (code, out) = run_async(&["check"], &dir.path().join("anymesh.yaml")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 services, 1 endpoints"), "{out}");

    let dir = registry_dir(&registries(&pki.other_ca));
    let (code, out) = run_async(&["check"], &dir.path().join("anymesh.yaml")).await;
    assert_eq!(code, 69, "{out}");
    assert!(out.contains("error: registry secure"), "{out}");
    assert!(out.contains("UnknownIssuer"), "{out}");
}
