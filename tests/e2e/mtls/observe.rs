//! Access logs and distributed traces across a mutual TLS hop: both
//! proxies log the exchange with the same request id, and a real Zipkin v2
//! endpoint in the test receives the caller's client span and the callee's
//! server span as parent and child of one trace.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::pki::Root;
use super::*;

/// A Zipkin v2 collector: every span POSTed to `/api/v2/spans`, in order.
pub(super) struct Zipkin {
    pub(super) addr: SocketAddr,
    pub(super) spans: Arc<parking_lot::Mutex<Vec<Value>>>,
}

impl Zipkin {
    pub(super) async fn start() -> Zipkin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        if let (Ok(body), "/api/v2/spans") = (body, path.as_str()) {
                            if let Ok(Value::Array(batch)) = serde_json::from_slice(&body) {
                                seen.lock().extend(batch);
                            }
                        }
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::ACCEPTED;
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Zipkin { addr, spans }
    }

    /// The spans of `trace_id` once there are `n` of them.
    async fn trace(&self, trace_id: &str, n: usize) -> Vec<Value> {
        eventually("the trace's spans at the collector", || async {
            let spans: Vec<Value> = self
                .spans
                .lock()
                .iter()
                .filter(|s| s["traceId"] == trace_id)
                .cloned()
                .collect();
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}

fn telemetry_yaml(dir: &std::path::Path, zipkin: SocketAddr) -> String {
    format!(
        "telemetry:\n  access_log: {{path: {}, format: json}}\n  tracing: {{sampling: 100, zipkin: 'http://{zipkin}', batch_timeout: 50ms}}\n",
        dir.join("access.log").display()
    )
}

/// The first line (a JSON object) of the access log in `dir` whose `field`
/// is `value`, once there is one.
async fn logged_with(dir: &std::path::Path, field: &str, value: &str) -> Value {
    let file = dir.join("access.log");
    eventually("the exchange's access log line", || async {
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l[field] == value)
    })
    .await
}

/// The access log line of the request whose id is `id`.
async fn logged(dir: &std::path::Path, id: &str) -> Value {
    logged_with(dir, "request_id", id).await
}

/// The first span the collector holds with `x-request-id` `id`, once there
/// is one.
pub(super) async fn span_of(zipkin: &Zipkin, id: &str) -> Value {
    eventually("a span of the request", || async {
        zipkin
            .spans
            .lock()
            .iter()
            .find(|s| s["tags"]["guid:x-request-id"] == id)
            .cloned()
    })
    .await
}

/// The application, the callee's proxy `b` (with `b_routes` as its routing,
/// logging and tracing to `zipkin`) and the caller's proxy `a` (workload
/// `a`, logging into `a_dir` and tracing to `zipkin`), over mutual TLS.
async fn traced_pair(
    root: &Root,
    zipkin: &Zipkin,
    b_routes: &str,
    a_dir: &std::path::Path,
) -> (anymesh::upstream::Upstream, TestMesh, TestMesh) {
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side_with(root, &app, b_routes, |dir| telemetry_yaml(dir, zipkin.addr)).await;
    let a = caller(
        &app,
        &b,
        "b",
        |dir| root.write_svid(dir, "default", "a", false),
        "app: reviews",
        &format!(
            "workloads:\n  - {{name: a, namespace: default, service_account: a, ports: [{{port: 9, protocol: http}}]}}\n\
             inbound: {{listen: 127.0.0.1:0}}\n{}",
            telemetry_yaml(a_dir, zipkin.addr)
        ),
    )
    .await;
    (app, b, a)
}

fn seen_headers(resp: &Response<hyper::body::Incoming>) -> String {
    resp.headers()
        .get("x-seen-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The callee's spans carry a literal custom tag (Istio's Telemetry API).
const TAGGED_B: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: b-tags, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  tracing:
  - customTags:
      team: {literal: {value: payments}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_is_logged_on_both_sides_and_traced_as_parent_and_child() {
    let root = Root::new("cluster.local");
    let zipkin = Zipkin::start().await;
    let a_dir = tempfile::tempdir().expect("temp dir");
    let (app, b, a) = traced_pair(&root, &zipkin, TAGGED_B, a_dir.path()).await;

    // A request with no trace context: the caller starts the trace and a
    // request id, and the application sees both (and not the proxies'
    // own peer header).
    let req = Request::get(format!("http://{}/items?id=7", a.proxy()))
        .header("host", "reviews")
        .header("user-agent", "e2e-agent")
        .body(Full::new(Bytes::from_static(b"")))
        .expect("request");
    let resp = a.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = seen_headers(&resp);
    for h in ["traceparent", "x-b3-traceid", "x-b3-spanid", "x-request-id"] {
        assert!(seen.split(',').any(|s| s == h), "{h} missing: {seen}");
    }
    assert!(!seen.contains("x-anymesh-peer"), "{seen}");
    let body = resp.into_body().collect().await.expect("body").to_bytes();

    // The callee's line: its request id is the one the caller made.
    let a_line = logged_with(a_dir.path(), "path", "/items?id=7").await;
    let id = a_line["request_id"]
        .as_str()
        .expect("a request id")
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {a_line}");
    assert_eq!(a_line["response_code"], 200, "{a_line}");
    assert_eq!(a_line["method"], "GET");
    assert_eq!(a_line["user_agent"], "e2e-agent");
    assert_eq!(a_line["authority"], "reviews");
    assert_eq!(a_line["protocol"], "HTTP/1.1");
    assert_eq!(a_line["response_flags"], "-");
    assert_eq!(
        a_line["upstream_cluster"], "outbound|80||reviews",
        "{a_line}"
    );
    let inbound = b.mesh.inbound.expect("inbound");
    assert_eq!(a_line["upstream_host"], inbound.to_string(), "{a_line}");
    assert_eq!(a_line["bytes_sent"], body.len() as u64, "{a_line}");

    let b_dir = b.dir.path();
    let b_line = logged(b_dir, &id).await;
    assert_eq!(b_line["response_code"], 200, "{b_line}");
    assert_eq!(
        b_line["upstream_cluster"],
        format!("inbound|{}||", app.addr.port()),
        "{b_line}"
    );
    assert_eq!(b_line["downstream_local_address"], inbound.to_string());
    assert_eq!(b_line["bytes_sent"], body.len() as u64, "{b_line}");

    // One trace: the caller's client span is the parent of the callee's
    // server span.
    let trace_id = span_of(&zipkin, &id).await["traceId"].clone();
    let spans = zipkin.trace(trace_id.as_str().expect("hex"), 2).await;
    let client = spans
        .iter()
        .find(|s| s["kind"] == "CLIENT")
        .expect("client span");
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("server span");
    assert_eq!(server["parentId"], client["id"], "{spans:?}");
    assert_eq!(client["tags"]["http.status_code"], "200");
    assert_eq!(client["tags"]["upstream_cluster"], "outbound|80||reviews");
    assert_eq!(client["tags"]["istio.canonical_service"], "a");
    assert_eq!(server["tags"]["istio.canonical_service"], "b");
    assert_eq!(client["name"], "reviews:80/*");
    assert_eq!(client["localEndpoint"]["serviceName"], "a.default");
    assert_eq!(
        server["tags"]["team"], "payments",
        "the Telemetry's custom tag"
    );
    assert!(client["tags"].get("team").is_none());

    // An incoming decision not to sample is honoured: no span, though the
    // request id still flows. A later sampled request's spans arrive after
    // where this one's would have been (one queue, in order).
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let (status, _, _) = a
        .get(
            "reviews",
            "/quiet",
            &[("traceparent", unsampled), ("x-request-id", "quiet-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let quiet = logged(b_dir, "quiet-1").await;
    assert_eq!(quiet["path"], "/quiet");
    // A hostile traceparent is replaced: a new trace, valid ids.
    let (status, _, _) = a
        .get(
            "reviews",
            "/loud",
            &[("traceparent", "00-ZZZZ-x-01"), ("x-request-id", "loud-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let loud_trace = span_of(&zipkin, "loud-1").await["traceId"].clone();
    let loud_trace = loud_trace.as_str().expect("hex");
    let loud = zipkin.trace(loud_trace, 2).await;
    assert_eq!(loud_trace.len(), 32, "{loud:?}");
    assert!(loud_trace.bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(
        !zipkin
            .spans
            .lock()
            .iter()
            .any(|s| s["traceId"] == "0af7651916cd43dd8448eb211c80319c"
                || s["tags"]["guid:x-request-id"] == "quiet-1"),
        "an unsampled request made spans"
    );

    // A request id with quotes and backslashes is kept, escaped in the
    // JSON line; an absurd one (too long) is replaced by a UUID.
    let odd = r#"odd"id\1"#;
    let (status, _, _) = a.get("reviews", "/odd", &[("x-request-id", odd)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(logged(b_dir, odd).await["path"], "/odd");
    let long = "x".repeat(300);
    let (status, _, _) = a.get("reviews", "/long", &[("x-request-id", &long)]).await;
    assert_eq!(status, StatusCode::OK);
    let replaced = logged_with(a_dir.path(), "path", "/long").await;
    assert_eq!(
        replaced["request_id"].as_str().map(str::len),
        Some(36),
        "{replaced}"
    );

    // The counters say what became of lines and spans.
    let (_, metrics) = b.admin("/metrics").await;
    for line in [
        "anymesh_access_log_lines_total{result=\"dropped\"} 0",
        "anymesh_trace_spans_total{result=\"dropped\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let exported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("anymesh_trace_spans_total{result=\"exported\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("exported spans counted");
    assert!(exported >= 2, "{metrics}");
}

/// The callee's workload Telemetry turns its access log off and keeps its
/// spans from being reported; the caller's go on.
const QUIET_B: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: b-quiet, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  accessLogging:
  - disabled: true
  tracing:
  - disableSpanReporting: true
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_api_turns_access_logs_and_span_reporting_off_per_workload() {
    let root = Root::new("cluster.local");
    let zipkin = Zipkin::start().await;
    let a_dir = tempfile::tempdir().expect("temp dir");
    let (_app, b, a) = traced_pair(&root, &zipkin, QUIET_B, a_dir.path()).await;
    let (status, _, _) = a.get("reviews", "/", &[("x-request-id", "pol-1")]).await;
    assert_eq!(status, StatusCode::OK);
    // The caller logs and reports; by then the callee's exchange is over
    // (it answered before the caller's ended), and its span, had it been
    // reported, was queued before the caller's.
    logged(a_dir.path(), "pol-1").await;
    assert_eq!(span_of(&zipkin, "pol-1").await["kind"], "CLIENT");
    let (_, metrics) = b.admin("/metrics").await;
    assert!(
        metrics.contains("anymesh_trace_spans_total{result=\"exported\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("anymesh_access_log_lines_total{result=\"written\"} 0"),
        "{metrics}"
    );
    assert!(!zipkin.spans.lock().iter().any(|s| s["kind"] == "SERVER"));
    let b_log = std::fs::read_to_string(b.dir.path().join("access.log")).unwrap_or_default();
    assert!(b_log.is_empty(), "{b_log}");
}
