//! Spans exported to real receivers in this process: an OTLP collector (the
//! generated `TraceService` gRPC server of opentelemetry-proto), an OTLP/HTTP
//! endpoint and a Zipkin v2 endpoint (hyper). A chain of three services
//! through two proxies each side (four spans) must arrive as one trace with
//! each span's parent the span before it; a collector that never answers
//! must cost `record` nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anymesh_telemetry::trace::{
    inject, operation_name, Decision, HttpExchange, LocalInfo, RoutePath, Span, SpanKind,
    TraceContext, TraceError, Tracer, TracingConfig,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);

/// The OTLP/gRPC collector: every request it gets goes to the channel.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn otlp_grpc_collector() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind the collector");
    let addr = incoming.local_addr().expect("collector address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(incoming),
    );
    (addr, rx)
}

/// An HTTP receiver for OTLP/HTTP and Zipkin: every POST's path,
/// content type and body go to the channel; it answers 202 as Zipkin does.
async fn http_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(String, String, Bytes)>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let ct = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        let _ = tx.send((path, ct, body));
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::ACCEPTED;
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// A collector that accepts connections and never reads or answers.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the black hole");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, accepted)
}

fn local(service: &str) -> LocalInfo {
    LocalInfo {
        service_name: format!("{service}.default"),
        canonical_service: service.to_string(),
        canonical_revision: "v1".to_string(),
        mesh_id: "mesh1".to_string(),
        namespace: "default".to_string(),
        node_id: format!("sidecar~10.0.0.1~{service}-0.default~default.svc.cluster.local"),
    }
}

/// One proxy: its tracer, and one side of a hop: extract from what came
/// in, decide, start, inject into what goes out, record at the end.
struct Proxy {
    tracer: Tracer,
    rng: SmallRng,
}

impl Proxy {
    fn hop(&mut self, incoming: &HeaderMap, kind: SpanKind, dest: &str, status: u16) -> HeaderMap {
        let ex = TraceContext::extract(incoming);
        let decision = self.tracer.sampler().decide(&ex, self.rng.next_u32());
        let ctx = ex.start(decision.sampled(), &mut self.rng);
        let mut out = incoming.clone();
        inject(&ctx, &mut out);
        let host = format!("{dest}.default.svc.cluster.local");
        let url = format!("http://{host}:9080/reviews/1");
        let cluster = format!("outbound|9080||{host}");
        let cluster = match kind {
            SpanKind::Client => cluster,
            SpanKind::Server => "inbound|9080||".to_string(),
        };
        self.tracer.record_http(
            &ctx,
            &HttpExchange {
                kind,
                name: operation_name(&host, 9080, RoutePath::Any),
                start: SystemTime::now(),
                duration: Duration::from_millis(3),
                url: &url,
                method: "GET",
                protocol: "HTTP/1.1",
                status: Some(status),
                upstream_cluster: Some(&cluster),
                upstream_cluster_name: None,
                response_flags: "-",
                request_size: 0,
                response_size: 120,
                peer_address: Some("10.0.0.2:9080"),
                user_agent: Some("curl/8.5.0\r\nx-injected: 1"),
                downstream_cluster: None,
            },
        );
        out
    }
}

fn config(f: impl FnOnce(&mut TracingConfig)) -> TracingConfig {
    let mut c = TracingConfig {
        sampling: 100.0,
        batch_size: 2,
        batch_timeout: Duration::from_millis(20),
        queue: 64,
        export_timeout: Duration::from_secs(5),
        ..TracingConfig::default()
    };
    f(&mut c);
    c
}

/// A span as any receiver saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    trace: String,
    id: String,
    parent: Option<String>,
    name: String,
    kind: String,
    tags: HashMap<String, String>,
    service: String,
}

fn from_otlp(req: &ExportTraceServiceRequest) -> Vec<Seen> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let attr_str = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| match kv
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("non-string attribute {other:?}"),
        };
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(attr_str)
            .expect("service.name");
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(Seen {
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name.clone(),
                    kind: match s.kind {
                        2 => "SERVER".to_string(),
                        3 => "CLIENT".to_string(),
                        k => format!("{k}"),
                    },
                    tags: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), attr_str(kv)))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn from_zipkin(body: &[u8]) -> Vec<Seen> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("Zipkin JSON");
    v.as_array()
        .expect("an array of spans")
        .iter()
        .map(|s| Seen {
            trace: s["traceId"].as_str().expect("traceId").to_string(),
            id: s["id"].as_str().expect("id").to_string(),
            parent: s["parentId"].as_str().map(str::to_string),
            name: s["name"].as_str().expect("name").to_string(),
            kind: s["kind"].as_str().expect("kind").to_string(),
            tags: s["tags"]
                .as_object()
                .expect("tags")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string tag").to_string()))
                .collect(),
            service: s["localEndpoint"]["serviceName"]
                .as_str()
                .expect("serviceName")
                .to_string(),
        })
        .collect()
}

async fn collect<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    want: usize,
    f: impl Fn(&T) -> Vec<Seen>,
) -> Vec<Seen> {
    let until = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while seen.len() < want {
        let left = until.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} spans arrived: {seen:?}", seen.len()))
            .expect("receiver open");
        seen.extend(f(&item));
    }
    seen
}

fn check_chain(spans: &[Seen], from: &str) {
    assert_eq!(spans.len(), 4, "{from}: {spans:?}");
    let find = |service: &str, kind: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.kind == kind)
            .unwrap_or_else(|| panic!("{from}: no {kind} span of {service}: {spans:?}"))
    };
    let a_client = find("a.default", "CLIENT");
    let b_server = find("b.default", "SERVER");
    let b_client = find("b.default", "CLIENT");
    let c_server = find("c.default", "SERVER");
    assert_eq!(a_client.parent, None, "{from}: A's client span is the root");
    assert_eq!(b_server.parent.as_ref(), Some(&a_client.id), "{from}");
    assert_eq!(b_client.parent.as_ref(), Some(&b_server.id), "{from}");
    assert_eq!(c_server.parent.as_ref(), Some(&b_client.id), "{from}");
    for s in spans {
        assert_eq!(s.trace, a_client.trace, "{from}: one trace");
        assert_eq!(s.trace.len(), 32);
        assert_eq!(s.id.len(), 16);
        assert_eq!(s.tags["component"], "proxy");
        assert_eq!(s.tags["istio.mesh_id"], "mesh1");
        assert_eq!(s.tags["istio.namespace"], "default");
        assert_eq!(s.tags["istio.canonical_revision"], "v1");
        assert_eq!(s.tags["http.method"], "GET");
        assert_eq!(s.tags["http.protocol"], "HTTP/1.1");
        assert_eq!(s.tags["response_flags"], "-");
        assert_eq!(s.tags["peer.address"], "10.0.0.2:9080");
        assert_eq!(
            s.tags["user_agent"], "curl/8.5.0??x-injected: 1",
            "controls replaced"
        );
        assert_eq!(
            s.tags["guid:x-request-id"],
            a_client.tags["guid:x-request-id"]
        );
        assert_eq!(
            s.tags["guid:x-request-id"].len(),
            36,
            "generated at the first hop"
        );
    }
    assert_eq!(a_client.tags["istio.canonical_service"], "a");
    assert_eq!(c_server.tags["istio.canonical_service"], "c");
    assert!(c_server.tags["node_id"].starts_with("sidecar~10.0.0.1~c-0"));
    assert_eq!(a_client.name, "b.default.svc.cluster.local:9080/*");
    assert_eq!(b_server.name, "b.default.svc.cluster.local:9080/*");
    assert_eq!(c_server.name, "c.default.svc.cluster.local:9080/*");
    assert_eq!(
        a_client.tags["upstream_cluster"],
        "outbound|9080||b.default.svc.cluster.local"
    );
    assert_eq!(
        a_client.tags["upstream_cluster.name"],
        "outbound|9080||b.default.svc.cluster.local"
    );
    assert_eq!(
        a_client.tags["http.url"],
        "http://b.default.svc.cluster.local:9080/reviews/1"
    );
    assert_eq!(a_client.tags["http.status_code"], "200");
    assert!(!a_client.tags.contains_key("error"));
    assert_eq!(c_server.tags["http.status_code"], "503");
    assert_eq!(c_server.tags["error"], "true");
}

/// App A calls B, B calls C: A's outbound proxy, B's inbound, B's outbound,
/// C's inbound. The apps forward the trace headers they got, as Istio asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_services_is_one_trace_in_every_exporter() {
    let (grpc, mut grpc_rx) = otlp_grpc_collector().await;
    let (web, mut web_rx) = http_receiver().await;
    let cfg = config(|c| {
        c.otlp_grpc = Some(format!("http://{grpc}").parse().expect("uri"));
        c.otlp_http = Some(format!("http://{web}").parse().expect("uri"));
        c.zipkin = Some(format!("http://{web}/").parse().expect("uri"));
    });
    let proxy = |s: &str, seed| Proxy {
        tracer: Tracer::start(&cfg, local(s)).expect("tracer"),
        rng: SmallRng::seed_from_u64(seed),
    };
    let (mut a, mut b, mut c) = (proxy("a", 1), proxy("b", 2), proxy("c", 3));

    let from_app_a = HeaderMap::new();
    let to_b = a.hop(&from_app_a, SpanKind::Client, "b", 200);
    let to_app_b = b.hop(&to_b, SpanKind::Server, "b", 200);
    // App B forwards the trace headers of its request on its own call.
    let mut from_app_b = HeaderMap::new();
    for k in [
        "traceparent",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-request-id",
    ] {
        if let Some(v) = to_app_b.get(k) {
            from_app_b.insert(k, v.clone());
        }
    }
    let to_c = b.hop(&from_app_b, SpanKind::Client, "c", 200);
    let _to_app_c = c.hop(&to_c, SpanKind::Server, "c", 503);

    let otlp = collect(&mut grpc_rx, 4, from_otlp).await;
    check_chain(&otlp, "OTLP/gRPC");

    // OTLP/HTTP and Zipkin share the receiver: sort by path.
    let until = Instant::now() + DEADLINE;
    let (mut http_spans, mut zipkin_spans) = (Vec::new(), Vec::new());
    while http_spans.len() < 4 || zipkin_spans.len() < 4 {
        let left = until.saturating_duration_since(Instant::now());
        let (path, ct, body) = tokio::time::timeout(left, web_rx.recv())
            .await
            .expect("the HTTP exports arrive")
            .expect("receiver open");
        match path.as_str() {
            "/v1/traces" => {
                assert_eq!(ct, "application/x-protobuf");
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                http_spans.extend(from_otlp(&req));
            }
            "/api/v2/spans" => {
                assert_eq!(ct, "application/json");
                zipkin_spans.extend(from_zipkin(&body));
            }
            other => panic!("POST to {other}"),
        }
    }
    check_chain(&http_spans, "OTLP/HTTP");
    check_chain(&zipkin_spans, "Zipkin");
    // The same spans everywhere.
    let ids = |v: &[Seen]| {
        let mut ids: Vec<_> = v.iter().map(|s| (s.id.clone(), s.parent.clone())).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&otlp), ids(&zipkin_spans));
    assert_eq!(ids(&otlp), ids(&http_spans));
    for p in [&a, &b, &c] {
        assert_eq!(p.tracer.dropped(), 0);
    }
    let until = Instant::now() + DEADLINE;
    while b.tracer.stats().exported < 2 {
        assert!(
            Instant::now() < until,
            "exported counter: {:?}",
            b.tracer.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An unsampled request records nothing, and its headers still carry the
/// decision so the next hop does not sample on its own.
#[tokio::test]
async fn unsampled_requests_record_nothing_and_propagate_the_decision() {
    let (web, mut web_rx) = http_receiver().await;
    let cfg = config(|c| {
        c.sampling = 0.0;
        c.zipkin = Some(format!("http://{web}").parse().expect("uri"));
    });
    let mut a = Proxy {
        tracer: Tracer::start(&cfg, local("a")).expect("tracer"),
        rng: SmallRng::seed_from_u64(9),
    };
    let out = a.hop(&HeaderMap::new(), SpanKind::Client, "b", 200);
    assert_eq!(
        out.get("x-b3-sampled"),
        Some(&HeaderValue::from_static("0"))
    );
    assert!(out
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("written")
        .ends_with("-00"));
    // A 100 % sampler downstream still honours the "no".
    let downstream = Tracer::start(&config(|_| {}), local("b")).expect("tracer");
    assert_eq!(
        downstream.sampler().decide(&TraceContext::extract(&out), 0),
        Decision::Inherited { sampled: false }
    );
    // A forced request still goes through, as a control that the path works.
    let mut forced = HeaderMap::new();
    forced.insert("x-envoy-force-trace", HeaderValue::from_static("true"));
    a.hop(&forced, SpanKind::Client, "b", 200);
    let spans = collect(&mut web_rx, 1, |(_, _, body)| from_zipkin(body)).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].service, "a.default");
    assert_eq!(a.tracer.stats().dropped, 0);
}

fn span(i: u64) -> Span {
    let mut rng = SmallRng::seed_from_u64(i);
    let ctx = TraceContext::extract(&HeaderMap::new()).start(true, &mut rng);
    Span::http(
        &ctx,
        &HttpExchange {
            kind: SpanKind::Client,
            name: "x:80/*".to_string(),
            start: SystemTime::now(),
            duration: Duration::from_millis(1),
            url: "http://x/",
            method: "GET",
            protocol: "HTTP/1.1",
            status: Some(200),
            upstream_cluster: None,
            upstream_cluster_name: None,
            response_flags: "-",
            request_size: 0,
            response_size: 0,
            peer_address: None,
            user_agent: None,
            downstream_cluster: None,
        },
    )
}

/// Every exporter points at a collector that accepts and never answers:
/// the batch in flight hangs, the queue fills, the rest is dropped and
/// counted, and `record` never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_the_request_path_nothing() {
    let (hole, accepted) = black_hole().await;
    let url = format!("http://{hole}");
    let cfg = config(|c| {
        c.otlp_grpc = Some(url.parse().expect("uri"));
        c.otlp_http = Some(url.parse().expect("uri"));
        c.zipkin = Some(url.parse().expect("uri"));
        c.queue = 4;
        c.batch_size = 2;
        c.export_timeout = Duration::from_secs(60);
    });
    let tracer = Tracer::start(&cfg, local("a")).expect("tracer");
    tracer.record(span(0));
    tracer.record(span(1));
    // The first batch is on its way: the collector has a connection.
    let until = Instant::now() + DEADLINE;
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "the exporter never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the worker take that batch out of the queue (it did, to export
    // it), then flood.
    let spans: Vec<Span> = (2..1002).map(span).collect();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for s in spans {
        let t = Instant::now();
        tracer.record(s);
        slowest = slowest.max(t.elapsed());
    }
    let total = started.elapsed();
    assert!(
        total < Duration::from_secs(1),
        "1000 records took {total:?}"
    );
    assert!(
        slowest < Duration::from_millis(50),
        "one record took {slowest:?}"
    );
    let stats = tracer.stats();
    assert_eq!(
        stats.dropped,
        1000 - 4,
        "the queue holds 4, the rest is dropped: {stats:?}"
    );
    assert_eq!(stats.exported, 0);
    // A sampled exchange with the queue full is dropped before its span is built.
    let ctx = TraceContext::extract(&HeaderMap::new()).start(true, &mut SmallRng::seed_from_u64(5));
    tracer.record_http(
        &ctx,
        &HttpExchange {
            kind: SpanKind::Server,
            name: "x".to_string(),
            start: SystemTime::now(),
            duration: Duration::ZERO,
            url: "",
            method: "GET",
            protocol: "HTTP/2",
            status: None,
            upstream_cluster: None,
            upstream_cluster_name: None,
            response_flags: "UT",
            request_size: 0,
            response_size: 0,
            peer_address: None,
            user_agent: None,
            downstream_cluster: None,
        },
    );
    assert_eq!(tracer.dropped(), 1000 - 4 + 1);
}

#[test]
fn a_tracer_needs_a_runtime() {
    assert!(matches!(
        Tracer::start(&TracingConfig::default(), LocalInfo::default()),
        Err(TraceError::NoRuntime)
    ));
}

#[test]
fn the_config_reads_from_yaml() {
    let c: TracingConfig = serde_yaml_ng::from_str(
        "sampling: 2.5\notlp_http: http://127.0.0.1:4318\nbatch_size: 10\nbatch_timeout: 1s\nqueue: 100\n",
    )
    .expect("valid");
    assert_eq!(c.sampling, 2.5);
    assert_eq!(c.batch_timeout, Duration::from_secs(1));
    assert!(serde_yaml_ng::from_str::<TracingConfig>("queue: 1\nextra: 2\n").is_err());
}
