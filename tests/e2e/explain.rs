//! `anymesh explain` (the real binary) and the admin listener's `/explain`.

use std::path::Path;
use std::process::Command;

use http::StatusCode;
use serde_json::Value;

use crate::harness::*;

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
        "health healthy, weight 1, locality eu/a",
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
