//! `anymesh explain` (the real binary) and the admin listener's `/explain`,
//! offline (configuration only) and live (health verdicts and counters of
//! the running proxy), and the resilience metrics beside them.

use std::path::Path;
use std::process::Command;

use anymesh_testkit::chaos::Behaviour;
use anymesh_testkit::ChaosUpstream;
use http::StatusCode;
use serde_json::Value;

use crate::harness::*;

mod mtls;

const BIN: &str = env!("CARGO_BIN_EXE_anymesh");

/// Runs `anymesh <args> -c <cfg>`; returns the exit code, stdout and stderr.
fn run(args: &[&str], cfg: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .expect("run anymesh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SERVICES: &str = "services:\n  - name: reviews\n    aliases: [reviews.default]\n    ports: [{name: http, port: 9080}]\n    endpoints:\n      - {id: r1, address: 10.0.0.1, port: 9080, labels: {version: v1}, locality: {region: eu, zone: a}}\n      - {id: r2, address: 10.0.0.2, port: 9080, labels: {version: v2}, weight: 3}\n      - {id: r3, address: 10.0.0.3, port: 9080, labels: {version: v2}, health: unhealthy}\n      - {id: r4, address: 10.0.0.4, port: 9080, labels: {version: v2}, health: draining}\n";

fn routes() -> String {
    format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 90\n    - destination: {{host: reviews, subset: v2}}\n      weight: 10\n",
        subsets_dr("reviews", &["v1", "v2"], "")
    )
}

fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("services.yaml"), SERVICES);
    write(&dir.path().join("routes.yaml"), &routes());
    write(&dir.path().join("anymesh.yaml"), "routing: [routes.yaml]\n");
    dir
}

/// The lines of `text` from the one starting with `start` (trimmed) up to the next endpoint.
fn endpoint_block<'t>(text: &'t str, start: &str) -> Vec<&'t str> {
    let mut lines = text.lines().skip_while(|l| !l.trim().starts_with(start));
    let first = lines.next().into_iter();
    first
        .chain(lines.take_while(|l| l.starts_with("    ")))
        .collect()
}

#[test]
fn cli_explains_each_endpoint_in_each_cluster() {
    let dir = config_dir();
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out, err) = run(&["explain", "--host", "reviews"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("service reviews\n"), "{out}");
    assert!(out.contains("  aliases: reviews.default\n"), "{out}");
    assert!(
        out.contains("outbound|9080|v2|reviews  subset v2 {version=v2}  port http 9080 (http)  lb round robin  1 eligible, 3 excluded"),
        "{out}"
    );
    let r1 = endpoint_block(&out, "10.0.0.1 port 9080");
    assert_eq!(r1[0].trim(), "10.0.0.1 port 9080  from file id r1", "{out}");
    assert!(
        r1[1].contains("labels: version=v1 (as the registry gave them"),
        "{r1:?}"
    );
    assert_eq!(
        r1[2].trim(),
        "registry health healthy, weight 1, locality eu/a",
        "{r1:?}"
    );
    assert!(r1
        .iter()
        .any(|l| l.trim() == "outbound|9080|v1|reviews  eligible -> 10.0.0.1:9080"));
    assert!(r1.iter().any(|l| l.trim()
        == "outbound|9080|v2|reviews  excluded: labels do not match subset: version=v2"));
    let r3 = endpoint_block(&out, "10.0.0.3 port 9080");
    assert!(
        r3.iter()
            .any(|l| l.trim() == "outbound|9080|v2|reviews  excluded: unhealthy"),
        "{r3:?}"
    );
    let r4 = endpoint_block(&out, "10.0.0.4 port 9080");
    assert!(
        r4.iter().any(|l| l.trim()
            == "outbound|9080|v2|reviews  excluded: draining (healthy endpoints exist)"),
        "{r4:?}"
    );
    assert!(
        out.contains("  file  synced; connected; last full sync "),
        "{out}"
    );
    // Offline: policies only, and it says so.
    assert!(
        out.contains("  offline: the policies as configured; health verdicts and counters come only from the running proxy"),
        "{out}"
    );
    assert!(
        out.contains("    retry budget: retries at most 20% of requests over 10s plus 10/s (the proxy default, anymesh.yaml retry_budget: the DestinationRule sets none)\n"),
        "{out}"
    );
    assert!(
        out.contains("    outlier detection: not configured\n"),
        "{out}"
    );
    assert!(!out.contains("active check"), "{out}");
}

#[test]
fn cli_json_by_alias_and_port() {
    let dir = config_dir();
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out, err) = run(
        &["explain", "--host", "reviews.default:9080", "--json"],
        &cfg,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["service"]["hostname"], "reviews");
    assert_eq!(v["service"]["requested_port"], 9080);
    assert_eq!(v["clusters"].as_array().map(Vec::len), Some(2));
    let r2 = &v["endpoints"][1];
    assert_eq!(r2["native_id"], "r2");
    assert_eq!(r2["weight"], 3);
    assert_eq!(r2["raw_labels"]["version"], "v2");
    assert_eq!(r2["labels"]["version"], "v2");
    assert_eq!(r2["clusters"][0]["verdict"], "excluded");
    assert_eq!(r2["clusters"][0]["reason"], "label_mismatch");
    assert_eq!(r2["clusters"][1]["verdict"], "eligible");
    assert_eq!(r2["clusters"][1]["authority"], "10.0.0.2:9080");
}

#[test]
fn cli_unknown_host_suggests_and_fails() {
    let dir = config_dir();
    let cfg = dir.path().join("anymesh.yaml");
    let (code, out, err) = run(&["explain", "--host", "reveiws"], &cfg);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err.trim(),
        "anymesh: no service named 'reveiws'; did you mean reviews?"
    );
    let (code, _, err) = run(&["explain", "--host", "reviews:http"], &cfg);
    assert_eq!(code, 64, "{err}");
}

#[tokio::test]
async fn admin_explain_serves_the_live_view() {
    let ups = upstreams(&["v1", "v2"]).await;
    let mut eps: Vec<String> = ups
        .iter()
        .map(|u| endpoint(u, &format!("version: {}", u.name)))
        .collect();
    eps.push(
        "      - {address: 127.0.0.1, port: 1, id: sick, health: unhealthy, labels: {version: v2}}\n"
            .into(),
    );
    let mesh = TestMesh::start(
        &services("web", "http", &eps),
        &subsets_dr("web", &["v1", "v2"], ""),
    )
    .await;

    let (status, body) = mesh.admin("/explain?host=web").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["service"]["hostname"], "web");
    assert_eq!(v["sources"][0]["source"], "file");
    assert_eq!(v["sources"][0]["synced"], true);
    let sick = v["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["native_id"] == "sick"))
        .expect("the unhealthy endpoint is listed");
    assert_eq!(sick["health"], "unhealthy");
    assert_eq!(sick["clusters"][0]["cluster"], "outbound|80||web");
    assert_eq!(sick["clusters"][0]["verdict"], "excluded");
    assert_eq!(sick["clusters"][0]["reason"], "unhealthy");

    let (status, body) = mesh.admin("/explain").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("?host="), "{body}");
    let (status, body) = mesh.admin("/explain?host=wbe").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body, "no service named 'wbe'; did you mean web?\n");

    // A broken registry file: the source goes stale, its endpoints stay explained.
    write(&mesh.path("services.yaml"), "services: [\n");
    let v = eventually("/explain shows the source stale", || async {
        let (_, body) = mesh.admin("/explain?host=web%3A80").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["sources"][0]["stale_since"].is_number().then_some(v)
    })
    .await;
    assert_eq!(v["sources"][0]["connected"], false);
    assert!(v["sources"][0]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("services.yaml")));
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(3));
}

/// Istio's outlier-detection shape with a fast sweep and a long ejection.
const CHAOS_ROUTES: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: chaos}\nspec:\n  hosts: [chaos]\n  http:\n  - route:\n    - destination: {host: chaos}\n    retries: {attempts: 2, retryOn: 5xx}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: chaos}\nspec:\n  host: chaos\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";

const CHAOS_CLUSTER: &str = "outbound|80||chaos";

/// The verdicts of the endpoint `id` in the chaos cluster.
fn chaos_health<'v>(v: &'v Value, id: &str) -> &'v Value {
    let e = v["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["native_id"] == id))
        .expect("the endpoint is listed");
    assert_eq!(e["clusters"][0]["cluster"], CHAOS_CLUSTER);
    &e["clusters"][0]["health"]
}

/// The value of the series `series` (name and labels, exactly) in a scrape.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_is_explained_and_counted() {
    let ups = ChaosUpstream::start_many(&["c1", "c2"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| chaos_endpoint(u, "version: v1"))
        .collect();
    let mesh = TestMesh::start(&services("chaos", "http", &eps), CHAOS_ROUTES).await;
    eventually("every endpoint routed", || async {
        let _ = mesh.get("chaos", "/", &[]).await;
        ups.iter().all(|u| u.requests() > 0).then_some(())
    })
    .await;

    // Before: both routable, nothing ejected.
    let (status, body) = mesh.admin("/explain?host=chaos").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["live"], true);
    let c1 = chaos_health(&v, "c1");
    assert_eq!(c1["outlier"]["state"], "healthy", "{c1}");
    assert_eq!(c1["active"]["verdict"], "unchecked");
    assert_eq!(c1["fused"]["verdict"], "routable");

    // c1 answers 503: retried on c2 (the client sees 200), ejected after two.
    ups[0].set(Behaviour::Status(503));
    let v = eventually("/explain shows c1 ejected", || async {
        let (status, _, _) = mesh.get("chaos", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "a 503 was not retried");
        let (_, body) = mesh.admin("/explain?host=chaos").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (chaos_health(&v, "c1")["outlier"]["state"] == "ejected").then_some(v)
    })
    .await;
    let c1 = chaos_health(&v, "c1");
    assert_eq!(c1["outlier"]["cause"], "consecutive_5xx", "{c1}");
    assert_eq!(c1["outlier"]["failures"], 2);
    assert_eq!(c1["outlier"]["nth"], 1);
    let left = c1["outlier"]["remaining_ms"]
        .as_u64()
        .expect("remaining_ms");
    assert!(
        left > 20_000 && left <= 30_000,
        "{left} ms left of a 30 s ejection"
    );
    assert_eq!(c1["fused"]["verdict"], "out");
    assert_eq!(c1["fused"]["out"], serde_json::json!(["ejected"]));
    assert_eq!(chaos_health(&v, "c2")["fused"]["verdict"], "routable");
    let cluster = &v["clusters"][0];
    assert_eq!(cluster["name"], CHAOS_CLUSTER);
    assert_eq!(cluster["retry_budget"]["from"], "proxy_default");
    assert_eq!(cluster["live"]["health"]["routable"], 1);
    assert_eq!(cluster["live"]["health"]["mode"], "normal");
    let retries = cluster["live"]["counters"]["retries"]
        .as_u64()
        .expect("retries");
    assert!(retries >= 2, "{cluster}");

    // The text form names the ejection with its wall-clock end and reason.
    let (status, text) = mesh.admin("/explain?host=chaos&format=text").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let outlier = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("outlier detection: ejected until "))
        .unwrap_or_else(|| panic!("no ejection line in\n{text}"));
    let clock = &outlier["outlier detection: ejected until ".len()..][..8];
    assert!(
        clock.len() == 8
            && clock.bytes().enumerate().all(|(i, b)| if i == 2 || i == 5 {
                b == b':'
            } else {
                b.is_ascii_digit()
            }),
        "{outlier}"
    );
    assert!(
        outlier.contains(" after 2 consecutive 5xx, 1st ejection ("),
        "{outlier}"
    );
    assert!(
        text.contains("      => not routable: ejected by outlier detection\n"),
        "{text}"
    );
    assert!(!text.contains("offline:"), "{text}");

    // Metrics: the ejection, the endpoint's outlier health and the retries.
    let (status, metrics) = mesh.admin("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let c1_addr = format!("127.0.0.1:{}", ups[0].port());
    let c2_addr = format!("127.0.0.1:{}", ups[1].port());
    let cl = format!("cluster=\"{CHAOS_CLUSTER}\"");
    assert_eq!(
        sample(
            &metrics,
            &format!("anymesh_outlier_ejected_endpoints{{{cl}}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("anymesh_outlier_ejections_total{{{cl},endpoint=\"{c1_addr}\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    for (addr, up) in [(&c1_addr, 0.0), (&c2_addr, 1.0)] {
        assert_eq!(
            sample(
                &metrics,
                &format!("anymesh_endpoint_health{{{cl},endpoint=\"{addr}\",source=\"outlier\"}}")
            ),
            Some(up),
            "{metrics}"
        );
    }
    let retried = sample(&metrics, &format!("anymesh_upstream_retries_total{{{cl}}}"));
    assert!(retried.is_some_and(|n| n >= 2.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            &format!("anymesh_retry_budget_exhausted_total{{{cl}}}")
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // `anymesh explain --live` asks the running proxy.
    let config = std::fs::read_to_string(mesh.path("anymesh.yaml")).expect("anymesh.yaml");
    let live = mesh.path("live.yaml");
    write(
        &live,
        &config.replace("admin: 127.0.0.1:0", &format!("admin: {}", mesh.mesh.admin)),
    );
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run(&["explain", "--host", "chaos", "--live"], &live))
            .await
            .expect("anymesh ran");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(" after 2 consecutive 5xx, 1st ejection (")
            && out.contains("    health: 1 of 2 endpoints routable"),
        "{out}"
    );
    assert!(!out.contains("offline:"), "{out}");
}

#[test]
fn cli_live_without_a_running_proxy_fails_clearly() {
    let dir = config_dir();
    let cfg = dir.path().join("anymesh.yaml");
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    write(
        &cfg,
        &format!("listeners: {{admin: 127.0.0.1:{port}}}\nrouting: [routes.yaml]\n"),
    );
    let (code, out, err) = run(&["explain", "--host", "reviews", "--live"], &cfg);
    assert_eq!(code, 69, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!(
            "cannot reach the running proxy's admin listener at 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_active_check_is_explained_and_measured() {
    let ups = ChaosUpstream::start_many(&["c1", "c2"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| chaos_endpoint(u, "version: v1"))
        .collect();
    let mesh = TestMesh::start_with_services_and_settings(
        &services("chaos", "http", &eps),
        "",
        "health_checks:\n\
         \x20 - service: chaos\n\
         \x20   http: {path: /healthz}\n\
         \x20   interval: 200ms\n\
         \x20   timeout: 150ms\n\
         \x20   unhealthy_threshold: 2\n\
         \x20   healthy_threshold: 2\n",
    )
    .await;
    ups[0].set_healthy(false);
    let v = eventually(
        "/explain shows c1 failing its check and c2 passing",
        || async {
            let (_, body) = mesh.admin("/explain?host=chaos").await;
            let v: Value = serde_json::from_str(&body).ok()?;
            let failing = chaos_health(&v, "c1")["active"]["verdict"] == "failing";
            let passing = chaos_health(&v, "c2")["active"]["verdict"] == "passing";
            (failing && passing).then_some(v)
        },
    )
    .await;
    let c1 = chaos_health(&v, "c1");
    assert_eq!(c1["active"]["check"], "http chaos", "{c1}");
    assert!(
        c1["active"]["consecutive_failures"].as_u64() >= Some(2),
        "{c1}"
    );
    assert!(c1["active"]["last_probe"].is_number(), "{c1}");
    assert!(
        c1["active"]["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("503")),
        "{c1}"
    );
    assert_eq!(c1["outlier"]["state"], "not_configured");
    assert_eq!(c1["fused"]["verdict"], "out");
    assert_eq!(
        c1["fused"]["out"],
        serde_json::json!(["active_check_failing"])
    );
    assert_eq!(chaos_health(&v, "c2")["fused"]["verdict"], "routable");

    let (_, text) = mesh.admin("/explain?host=chaos&format=text").await;
    assert!(
        text.contains("      active check: failing (http chaos, last probe "),
        "{text}"
    );
    assert!(
        text.contains("      => not routable: failing its active health check\n"),
        "{text}"
    );

    let (_, metrics) = mesh.admin("/metrics").await;
    let cl = format!("cluster=\"{CHAOS_CLUSTER}\"");
    for (up, value) in [(&ups[0], 0.0), (&ups[1], 1.0)] {
        let series = format!(
            "anymesh_endpoint_health{{{cl},endpoint=\"127.0.0.1:{}\",source=\"active\"}}",
            up.port()
        );
        assert_eq!(sample(&metrics, &series), Some(value), "{metrics}");
    }
    // No outlier detection: no outlier series.
    assert!(!metrics.contains("source=\"outlier\""), "{metrics}");
    assert!(
        !metrics.contains("anymesh_outlier_ejected_endpoints"),
        "{metrics}"
    );
}
