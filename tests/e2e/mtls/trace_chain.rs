//! One trace across three services and two proxies, seen by two real
//! collectors: the caller's proxy exports Zipkin v2 JSON, the middle
//! service's proxy OTLP over gRPC (opentelemetry-proto's generated
//! TraceService server).
//!
//! ```text
//!  test client ─► proxy A ══mTLS══► proxy B ─► S2 (the test's app) ─► proxy B ─► S3
//!                 client span       server span                       client span
//! ```
//!
//! S2 does what an instrumented application does: it copies the trace
//! headers it received onto its own outgoing call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::observe::{span_of, Zipkin};
use super::pki::Root;
use super::*;

/// One span as both collectors show it.
#[derive(Debug, Clone)]
struct Seen {
    trace: String,
    id: String,
    parent: Option<String>,
    kind: String,
    service: String,
}

/// The OTLP/gRPC collector: every span it receives.
#[derive(Clone, Default)]
struct Otlp(Arc<parking_lot::Mutex<Vec<Seen>>>);

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let req = request.into_inner();
        let mut seen = self.0.lock();
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                seen.push(Seen {
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    kind: match s.kind {
                        2 => "SERVER".into(),
                        3 => "CLIENT".into(),
                        k => k.to_string(),
                    },
                    service: service.clone(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn otlp_collector() -> (SocketAddr, Otlp) {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind the collector");
    let addr = incoming.local_addr().expect("collector address");
    let otlp = Otlp::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(otlp.clone()))
            .serve_with_incoming(incoming),
    );
    (addr, otlp)
}

/// S2: answers with what S3 answered, calling it through `outbound` (B's
/// outbound listener) with the trace headers it received.
async fn middle_service(outbound: Arc<parking_lot::Mutex<Option<SocketAddr>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (client, outbound) = (client.clone(), outbound.clone());
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (client, outbound) = (client.clone(), outbound.clone());
                async move {
                    let via = outbound.lock().expect("B's outbound listener is known");
                    let mut call = Request::get(format!("http://{via}/next")).header("host", "s3");
                    for name in [
                        "traceparent",
                        "tracestate",
                        "x-b3-traceid",
                        "x-b3-spanid",
                        "x-b3-parentspanid",
                        "x-b3-sampled",
                        "x-request-id",
                    ] {
                        if let Some(v) = req.headers().get(name) {
                            call = call.header(name, v);
                        }
                    }
                    let status = match client
                        .request(call.body(Full::default()).expect("call"))
                        .await
                    {
                        Ok(r) => {
                            let s = r.status();
                            let _ = r.into_body().collect().await;
                            s
                        }
                        Err(_) => StatusCode::BAD_GATEWAY,
                    };
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"s2\n")));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_through_two_proxies_make_one_trace_in_two_collectors() {
    let root = Root::new("cluster.local");
    let zipkin = Zipkin::start().await;
    let (otlp_addr, otlp) = otlp_collector().await;
    let s3 = anymesh::upstream::spawn("s3").await.expect("s3");
    let b_outbound = Arc::new(parking_lot::Mutex::new(None));
    let s2 = middle_service(b_outbound.clone()).await;

    // B fronts S2 (workload `s2`), and routes S2's calls to S3.
    let dir = tempfile::tempdir().expect("temp dir");
    root.write_svid(&dir.path().join("id"), "default", "s2", false);
    write(
        &dir.path().join("services.yaml"),
        &format!(
            "services:\n  - name: s3\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: s3}}\n",
            s3.addr.port()
        ),
    );
    write(&dir.path().join("routes.yaml"), "");
    let b_yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\n{}\
         workloads:\n  - {{name: s2, namespace: default, service_account: s2, labels: {{app: s2}}, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0}}\n\
         telemetry:\n  tracing: {{sampling: 100, otlp_grpc: 'http://{otlp_addr}', batch_timeout: 50ms}}\n",
        identity_files(&dir.path().join("id")),
        s2.port()
    );
    let b = launch(dir, &b_yaml).await;
    *b_outbound.lock() = Some(b.mesh.outbound);
    let b_inbound = b.mesh.inbound.expect("inbound");

    // A, the test client's proxy, reaches S2 behind B with mutual TLS.
    let dir = tempfile::tempdir().expect("temp dir");
    root.write_svid(&dir.path().join("id"), "default", "s1", false);
    write(
        &dir.path().join("services.yaml"),
        &format!(
            "services:\n  - name: s2\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: s2, mesh: {{port: {}, service_account: s2}}}}\n",
            s2.port(),
            b_inbound.port()
        ),
    );
    write(&dir.path().join("routes.yaml"), "");
    let a_yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\n{}\
         workloads:\n  - {{name: s1, namespace: default, service_account: s1, labels: {{app: s1}}, ports: [{{port: 9, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0}}\n\
         telemetry:\n  tracing: {{sampling: 100, zipkin: 'http://{}', batch_timeout: 50ms}}\n",
        identity_files(&dir.path().join("id")),
        zipkin.addr
    );
    let a = launch(dir, &a_yaml).await;

    let (status, _, body) = a.get("s2", "/start", &[("x-request-id", "chain-1")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "s2\n");

    // A's client span (Zipkin) is the parent of B's server span (OTLP),
    // which is the parent of B's client span toward S3 (OTLP).
    let client_a = span_of(&zipkin, "chain-1").await;
    let trace = client_a["traceId"].as_str().expect("trace id").to_string();
    let id_a = client_a["id"].as_str().expect("span id").to_string();
    assert_eq!(client_a["kind"], "CLIENT");
    assert_eq!(client_a["localEndpoint"]["serviceName"], "s1.default");
    let b_spans = eventually("B's two spans at the OTLP collector", || async {
        let spans: Vec<Seen> = otlp
            .0
            .lock()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    let server_b = b_spans
        .iter()
        .find(|s| s.kind == "SERVER")
        .unwrap_or_else(|| panic!("B's server span: {b_spans:?}"));
    let client_b = b_spans
        .iter()
        .find(|s| s.kind == "CLIENT")
        .unwrap_or_else(|| panic!("B's client span: {b_spans:?}"));
    assert_eq!(
        server_b.parent.as_deref(),
        Some(id_a.as_str()),
        "{b_spans:?}"
    );
    assert_eq!(
        client_b.parent.as_deref(),
        Some(server_b.id.as_str()),
        "{b_spans:?}"
    );
    assert_eq!(server_b.service, "s2.default");
    assert_eq!(b_spans.len(), 2, "{b_spans:?}");
}
