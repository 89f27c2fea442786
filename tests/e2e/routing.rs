//! Routing decisions observed through real requests.

use std::collections::HashSet;

use http::StatusCode;

use crate::harness::*;

const SPLIT_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
    - name: iphone
      match:
        - headers:
            user-agent: {regex: ".*iPhone.*"}
      route:
        - destination: {host: reviews, subset: v2}
    - name: admin-api
      match:
        - uri: {prefix: /admin}
          method: {exact: DELETE}
      route:
        - destination: {host: reviews, subset: v3}
    - name: canary
      route:
        - destination: {host: reviews, subset: v1}
          weight: 95
        - destination: {host: reviews, subset: v2}
          weight: 5
---
"#;

async fn split_mesh() -> (TestMesh, Vec<anymesh::upstream::Upstream>) {
    let ups = upstreams(&["v1", "v2", "v3"]).await;
    let eps: Vec<String> = ups
        .iter()
        .map(|u| endpoint(u, &format!("version: {}", u.name)))
        .collect();
    let routes = format!(
        "{SPLIT_VS}{}",
        subsets_dr("reviews", &["v1", "v2", "v3"], "")
    );
    (
        TestMesh::start(&services("reviews", "http", &eps), &routes).await,
        ups,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_95_5_within_five_sigma() {
    let (mesh, _ups) = split_mesh().await;
    let n = 2000;
    let counts = mesh.count("reviews", n, &[]).await;
    let v2 = counts.get("v2").copied().unwrap_or(0);
    let v1 = counts.get("v1").copied().unwrap_or(0);
    assert_eq!(
        v1 + v2,
        n,
        "only v1 and v2 serve the canary route: {counts:?}"
    );
    // Binomial(n = 2000, p = 0.05): mean 100, sigma 9.75; 5 sigma is 49 (false failure ~1e-6).
    assert!((51..=149).contains(&v2), "v2 got {v2} of {n}: {counts:?}");
}

#[tokio::test]
async fn header_regex_route_sends_iphones_to_v2() {
    let (mesh, _ups) = split_mesh().await;
    let ua = [("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")];
    let counts = mesh.count("reviews", 100, &ua).await;
    assert_eq!(counts.get("v2"), Some(&100), "{counts:?}");
    // A non-matching agent takes the canary route; the regex is a full match.
    let (status, who, _) = mesh
        .get("reviews", "/", &[("user-agent", "curl/8 iPhon")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(who == "v1" || who == "v2", "{who}");
}

#[tokio::test]
async fn path_prefix_and_method_must_both_match() {
    let (mesh, _ups) = split_mesh().await;
    let req = |method: &str, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", mesh.proxy()))
            .header("host", "reviews")
            .body(http_body_util::Full::default())
            .expect("request")
    };
    let who = |r: &http::Response<hyper::body::Incoming>| {
        r.headers()
            .get("x-upstream")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let r = mesh.send(req("DELETE", "/admin/users/1")).await;
    assert_eq!(who(&r), "v3");
    for (method, path, why) in [
        ("GET", "/admin/users/1", "method does not match"),
        ("DELETE", "/public", "path does not match"),
    ] {
        let r = mesh.send(req(method, path)).await;
        assert_eq!(r.status(), StatusCode::OK, "{why}");
        let w = who(&r);
        assert!(w == "v1" || w == "v2", "{why}: served by {w}");
    }
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_endpoint() {
    let ups = upstreams(&["a", "b", "c"]).await;
    let eps: Vec<String> = ups.iter().map(|u| endpoint(u, "version: v1")).collect();
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: shop}\nspec:\n  host: shop\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n";
    let mesh = TestMesh::start(&services("shop", "http", &eps), dr).await;
    let mut owners = HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let counts = mesh.count("shop", 10, &[("x-user", &user)]).await;
        assert_eq!(
            counts.len(),
            1,
            "{user} moved between endpoints: {counts:?}"
        );
        owners.extend(counts.into_keys());
    }
    assert!(
        owners.len() >= 2,
        "30 keys all landed on one endpoint: {owners:?}"
    );
}

#[tokio::test]
async fn local_replies_say_why() {
    let ups = upstreams(&["v1"]).await;
    let eps = vec![endpoint(&ups[0], "version: v1")];
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web]\n  http:\n  - name: only-v9\n    route:\n    - destination: {{host: web, subset: v9}}\n---\n{}",
        subsets_dr("web", &["v1", "v9"], "")
    );
    let mesh = TestMesh::start(&services("web", "http", &eps), &routes).await;

    let (status, _, body) = mesh.get("nowhere.example", "/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no route for host \"nowhere.example\""),
        "{body}"
    );

    let (status, _, body) = mesh.get("web", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no healthy endpoint for web"), "{body}");
    assert!(body.contains("subset v9"), "{body}");
    assert!(body.contains("only-v9"), "{body}");
}

#[tokio::test]
async fn route_timeout_answers_504() {
    // An upstream that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let services = format!(
        "services:\n  - name: slow\n    endpoints:\n      - {{address: 127.0.0.1, port: {port}}}\n"
    );
    let routes = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: slow}\nspec:\n  hosts: [slow]\n  http:\n  - timeout: 200ms\n    route:\n    - destination: {host: slow}\n";
    let mesh = TestMesh::start(&services, routes).await;
    let (status, _, body) = mesh.get("slow", "/", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("route timeout"), "{body}");
    hold.abort();
}

#[tokio::test]
async fn route_timeout_also_bounds_a_slow_response_body() {
    let ups = upstreams(&["dribble"]).await;
    let routes = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http:\n  - timeout: 300ms\n    route:\n    - destination: {host: web}\n";
    let mesh = TestMesh::start(
        &services("web", "http", &[endpoint(&ups[0], "version: v1")]),
        routes,
    )
    .await;
    let req = http::Request::get(format!("http://{}/", mesh.proxy()))
        .header("host", "web")
        .header("x-body-delay-ms", "5000")
        .body(http_body_util::Full::default())
        .expect("request");
    let started = std::time::Instant::now();
    let resp = mesh.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK, "headers arrive in time");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "the body is cut off at the route timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "cut at the deadline, not when the upstream finished"
    );
    // Fast bodies on the same route are unaffected.
    assert_eq!(mesh.get("web", "/", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn more_local_replies() {
    // A port nobody listens on: bind, learn the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let services = format!(
        "services:\n  - name: gone\n    endpoints: [{{address: 127.0.0.1, port: {dead}}}]\n"
    );
    let routes = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: gone}\nspec:\n  hosts: [gone]\n  http:\n  - match: [{uri: {prefix: /only}}]\n    route:\n    - destination: {host: gone}\n";
    let mesh = TestMesh::start(&services, routes).await;

    let resp = mesh
        .send(
            http::Request::get(format!("http://{}/only", mesh.proxy()))
                .header("host", "gone")
                .body(http_body_util::Full::default())
                .expect("req"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-anymesh-reason"], "upstream_connect_error");

    let (status, _, body) = mesh.get("gone", "/elsewhere", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no route of") && body.contains("/elsewhere"),
        "{body}"
    );

    // CONNECT is refused with a reason instead of hanging the client.
    let mut s = tokio::net::TcpStream::connect(mesh.proxy())
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"CONNECT gone:443 HTTP/1.1\r\nhost: gone:443\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0; 512];
    let n = s.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");
    assert!(head.contains("CONNECT is not supported"), "{head}");
}

#[tokio::test]
async fn rewrite_headers_redirect_and_direct_response() {
    let ups = upstreams(&["api"]).await;
    let eps = vec![endpoint(&ups[0], "version: v1")];
    let routes = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
    - match: [{uri: {exact: /old}}]
      redirect: {uri: /new, redirectCode: 308}
    - match: [{uri: {exact: /health}}]
      directResponse: {status: 418, body: {string: "short and stout"}}
    - match: [{uri: {prefix: /v1/}}]
      rewrite: {uri: /, authority: api.internal}
      headers:
        request:
          set: {x-env: prod}
          remove: [x-secret]
        response:
          add: {x-served-by: anymesh}
      route:
        - destination: {host: api}
"#;
    let mesh = TestMesh::start(&services("api", "http", &eps), routes).await;
    let resp = mesh
        .send(
            http::Request::get(format!("http://{}/old", mesh.proxy()))
                .header("host", "api")
                .body(http_body_util::Full::default())
                .expect("req"),
        )
        .await;
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "http://api/new");

    let (status, _, body) = mesh.get("api", "/health", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (418, "short and stout"));

    let resp = mesh
        .send(
            http::Request::get(format!("http://{}/v1/items?q=1", mesh.proxy()))
                .header("host", "api")
                .header("x-secret", "s")
                .header("connection", "x-hop")
                .header("x-hop", "1")
                .body(http_body_util::Full::default())
                .expect("req"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-seen-path"], "/items?q=1");
    assert_eq!(h["x-seen-host"], "api.internal");
    assert_eq!(h["x-served-by"], "anymesh");
    let seen = h["x-seen-headers"].to_str().expect("ascii");
    assert!(seen.contains("x-env"), "{seen}");
    assert!(
        !seen.contains("x-secret"),
        "removed header reached upstream: {seen}"
    );
    assert!(
        !seen.contains("x-hop"),
        "hop-by-hop header named in Connection reached upstream: {seen}"
    );
}

#[tokio::test]
async fn admin_reports_metrics_config_and_readiness() {
    let (mesh, _ups) = split_mesh().await;
    let ua = [("user-agent", "iPhone")];
    mesh.count("reviews", 7, &ua).await;
    let (status, _, _) = mesh.get("nowhere", "/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An exchange is counted as it ends on its listener thread, which may be
    // just after the client has read the whole response.
    let metrics = eventually("the 8 requests counted in /metrics", || async {
        let (status, m) = mesh.admin("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        (m.contains(r#"anymesh_requests_total{service="reviews",route="iphone",code="200"} 7"#)
            && m.contains(r#"anymesh_requests_total{service="-",route="-",code="404"} 1"#))
        .then_some(m)
    })
    .await;
    assert!(
        metrics.contains(r#"anymesh_request_duration_seconds_count{service="reviews",route="iphone",code="200"} 7"#),
        "{metrics}"
    );

    let (status, config) = mesh.admin("/config").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&config).expect("config is JSON");
    let eps = &v["catalog"]["services"]["reviews"]["endpoints"];
    assert_eq!(eps.as_array().map(Vec::len), Some(3), "{config}");
    assert_eq!(eps[0]["provenance"]["source"], "file");
    assert!(eps[0]["provenance"]["native_id"].is_string());
    assert_eq!(v["catalog"]["sources"][0]["synced"], true);
    assert!(v["routes"]["virtual_hosts"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));

    assert_eq!(mesh.admin("/ready").await.0, StatusCode::OK);
    assert_eq!(mesh.admin("/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registry_mapping_turns_native_metadata_into_routable_labels() {
    let ups = upstreams(&["old", "new"]).await;
    // The registry says `ver`, and tags the new one with a bare `canary`.
    let eps = vec![
        endpoint(&ups[0], "ver: v1"),
        endpoint(&ups[1], "ver: v2, canary: ''"),
    ];
    let mapping = "mapping: {hostname: {suffix: .prod}, labels: {rename: {ver: version}, tags: [{match: '^canary$', key: track}]}}";
    let routes = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web.prod]\n  http:\n  - route:\n    - destination: {{host: web.prod, subset: v2}}\n---\n{}",
        subsets_dr("web.prod", &["v1", "v2"], "")
    );
    let mesh =
        TestMesh::start_file_registry(&services("web", "http", &eps), mapping, &routes).await;
    let counts = mesh.count("web.prod", 10, &[]).await;
    assert_eq!(counts.get("new"), Some(&10), "{counts:?}");
    let (_, cfg) = mesh.admin("/config").await;
    let v: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    let eps = &v["catalog"]["services"]["web.prod"]["endpoints"];
    let new = eps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["labels"]["version"] == "v2")
        .expect("mapped endpoint");
    assert_eq!(new["labels"]["track"], "canary");
    assert_eq!(
        new["provenance"]["raw_labels"]["ver"], "v2",
        "raw labels kept for explain"
    );
}
