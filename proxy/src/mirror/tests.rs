//! Mirroring against local test upstreams (tiny HTTP/1.1 and HTTP/2
//! servers on 127.0.0.1): what the mirror receives, the percentage draw,
//! the bounds that keep the primary unaffected, and the comparison.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{
    Cluster, ClusterEndpoint, DirectResponse, HeaderOps, Mirror, MirrorCompare, RetryPolicy, Route,
    RouteAction, RouteHit, RouteTable, VirtualHost,
};
use anymesh_core::{Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol};
use anymesh_core::{Provenance, ServicePort, SourceId};
use bytes::Bytes;
use http::request::Parts;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::compare::{differences, Digest, LogSampler, LOG_EVERY};
use super::head::shadowed;
use super::tap::TappedBody;
use super::*;
use crate::metrics::{MirrorLabels, MirrorResult, MirrorSkip, MirrorSkipLabels};
use crate::upstream::pool::PoolSettings;

/// A request as a test upstream received it: head (lower-cased) and body.
#[derive(Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// How a test upstream answers.
#[derive(Clone)]
enum Answer {
    Respond {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static [u8],
    },
    /// Reads the request, never answers, keeps the connection open.
    Hang,
}

fn ok(body: &'static [u8]) -> Answer {
    Answer::Respond {
        status: 200,
        headers: vec![("etag", "\"a\"")],
        body,
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that reports every request it reads.
async fn upstream(answer: Answer) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(conn, answer.clone(), tx.clone()));
        }
    });
    (addr, rx)
}

async fn serve(mut conn: TcpStream, answer: Answer, tx: mpsc::UnboundedSender<Received>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        buf.drain(..end);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf.drain(..length).collect();
        let _ = tx.send(Received { head, body });
        match &answer {
            Answer::Hang => std::future::pending::<()>().await,
            Answer::Respond {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (n, v) in headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut out = out.into_bytes();
                out.extend_from_slice(body);
                if conn.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An address nothing listens on.
async fn down() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn endpoint(addr: SocketAddr) -> ClusterEndpoint {
    let endpoint = Endpoint {
        service: Hostname::new("mirror").unwrap(),
        address: addr.ip().to_string(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: addr.port(),
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight: 1,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("file"),
            native_id: addr.to_string(),
            raw_labels: Labels::new(),
        },
    };
    ClusterEndpoint {
        tls: None,
        key: endpoint.key(),
        authority: endpoint.authority(addr.port()),
        weight: 1,
        endpoint: Arc::new(endpoint),
    }
}

fn cluster(index: usize, protocol: Protocol, addrs: &[SocketAddr]) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: format!("outbound|80|v{index}|mirror"),
        index,
        service: Hostname::new("mirror").unwrap(),
        subset: Some(format!("v{index}")),
        selector: Labels::new(),
        port: ServicePort {
            name: "http".into(),
            number: 80,
            protocol,
        },
        lb: Default::default(),
        policy: Default::default(),
        endpoints: addrs.iter().map(|a| endpoint(*a)).collect(),
        excluded: vec![],
    })
}

/// A routing whose one route `r` mirrors to `clusters` at `percentage`.
fn mirrored(
    clusters: Vec<Arc<Cluster>>,
    percentage: f64,
    compare: Option<MirrorCompare>,
    timeout: Option<Duration>,
) -> Arc<Routing> {
    let route = Route {
        name: "r".into(),
        matches: vec![],
        action: RouteAction::DirectResponse(DirectResponse {
            status: 200,
            body: None,
        }),
        timeout,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        rewrite: None,
        retry: RetryPolicy::istio_default(),
        fault: None,
        mirrors: clusters
            .iter()
            .map(|c| Mirror {
                cluster: c.clone(),
                percentage,
            })
            .collect(),
        mirror_compare: compare,
    };
    let table = Arc::new(RouteTable {
        virtual_hosts: vec![Arc::new(VirtualHost {
            name: "vs".into(),
            domains: vec!["reviews".into()],
            routes: vec![route],
        })],
        clusters,
        ..RouteTable::default()
    });
    let router = crate::router::Router::new();
    router.install(table, true);
    router.current()
}

fn hit(routing: &Routing) -> RouteHit<'_> {
    let vhost = &routing.table.virtual_hosts[0];
    RouteHit {
        vhost,
        route: &vhost.routes[0],
        matched: None,
    }
}

fn head(method: &str) -> Parts {
    http::Request::builder()
        .method(method)
        .uri("/items?page=2")
        .header("host", "reviews:9080")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-keep", "yes")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

struct Fixture {
    mirroring: Mirroring,
    metrics: Arc<Metrics>,
}

fn fixture(settings: MirrorSettings) -> Fixture {
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let pool = Pool::new(PoolSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        max_idle_per_endpoint: 8,
        identity: None,
        trust_domain: Arc::from("cluster.local"),
    });
    Fixture {
        mirroring: Mirroring::new(pool, metrics.clone(), settings),
        metrics,
    }
}

impl Fixture {
    fn results(&self, cluster: &Cluster, result: MirrorResult) -> u64 {
        self.metrics
            .mirror_responses
            .get_or_create(&MirrorLabels {
                route: "r".into(),
                cluster: cluster.name.as_str().into(),
                result,
            })
            .get()
    }

    fn skipped(&self, cluster: &Cluster, reason: MirrorSkip) -> u64 {
        self.metrics
            .mirror_skipped
            .get_or_create(&MirrorSkipLabels {
                route: "r".into(),
                cluster: cluster.name.as_str().into(),
                reason,
            })
            .get()
    }

    /// Waits (with a deadline) until `cluster` has counted `n` of `result`.
    async fn wait_for(&self, cluster: &Cluster, result: MirrorResult, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.results(cluster, result) < n {
            assert!(
                Instant::now() < deadline,
                "{} {} results after 5 s, wanted {n}",
                self.results(cluster, result),
                result.as_str()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(self.results(cluster, result), n);
    }
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the mirror received nothing within 5 s")
        .expect("the test upstream stopped")
}

#[tokio::test]
async fn mirror_gets_the_original_host_and_the_body() {
    let (addr, mut rx) = upstream(ok(b"fine")).await;
    let c = cluster(0, Protocol::Http, &[addr]);
    let routing = mirrored(vec![c.clone()], 100.0, None, None);
    let f = fixture(MirrorSettings::default());
    let body = MirrorBody::Full(Bytes::from_static(b"hello"));
    let tap = f
        .mirroring
        .mirror(&routing, hit(&routing), &head("POST"), &body);
    assert!(tap.is_none(), "no tap without comparison");
    let got = recv(&mut rx).await;
    assert!(
        got.head.starts_with("post /items?page=2 http/1.1\r\n"),
        "{}",
        got.head
    );
    assert!(
        got.head.contains("\r\nhost: reviews:9080\r\n"),
        "{}",
        got.head
    );
    assert!(got.head.contains("\r\nx-keep: yes\r\n"), "{}", got.head);
    assert!(
        got.head.contains("\r\ncontent-length: 5\r\n"),
        "{}",
        got.head
    );
    assert!(
        !got.head.contains("x-hop"),
        "hop-by-hop removed: {}",
        got.head
    );
    assert!(!got.head.contains("connection"), "{}", got.head);
    assert_eq!(got.body, b"hello");
    f.wait_for(&c, MirrorResult::Ok, 1).await;
    assert_eq!(f.mirroring.in_flight(), 0);
    // The endpoint's in-flight count was held until the response was read.
    assert_eq!(routing.lb(&c).unwrap().in_flight(0), Some(0));
}

#[tokio::test]
async fn shadow_suffix_goes_on_the_host_part_when_set() {
    let (addr, mut rx) = upstream(ok(b"")).await;
    let c = cluster(0, Protocol::Http, &[addr]);
    let routing = mirrored(vec![c.clone()], 100.0, None, None);
    let f = fixture(MirrorSettings {
        shadow_suffix: true,
        ..MirrorSettings::default()
    });
    f.mirroring
        .mirror(&routing, hit(&routing), &head("GET"), &MirrorBody::Empty);
    let got = recv(&mut rx).await;
    assert!(
        got.head.contains("\r\nhost: reviews-shadow:9080\r\n"),
        "{}",
        got.head
    );
    assert!(!got.head.contains("content-length"), "{}", got.head);

    assert_eq!(shadowed("reviews"), "reviews-shadow");
    assert_eq!(shadowed("reviews.ns.svc:80"), "reviews.ns.svc-shadow:80");
    assert_eq!(shadowed("[::1]:80"), "[::1]-shadow:80");
}

#[tokio::test]
async fn every_mirror_of_a_route_gets_its_copy() {
    let (a, mut rx_a) = upstream(ok(b"")).await;
    let (b, mut rx_b) = upstream(ok(b"")).await;
    let (ca, cb) = (
        cluster(0, Protocol::Http, &[a]),
        cluster(1, Protocol::Http, &[b]),
    );
    let routing = mirrored(vec![ca.clone(), cb.clone()], 100.0, None, None);
    let f = fixture(MirrorSettings::default());
    f.mirroring
        .mirror(&routing, hit(&routing), &head("GET"), &MirrorBody::Empty);
    assert!(recv(&mut rx_a).await.head.starts_with("get /items"));
    assert!(recv(&mut rx_b).await.head.starts_with("get /items"));
    f.wait_for(&ca, MirrorResult::Ok, 1).await;
    f.wait_for(&cb, MirrorResult::Ok, 1).await;
}

#[tokio::test]
async fn percentage_draws_are_binomial() {
    // A cluster without endpoints: every drawn mirror counts as skipped
    // (no endpoint), so the count is the number of draws.
    let c = cluster(0, Protocol::Http, &[]);
    let f = fixture(MirrorSettings::default());
    let parts = head("GET");
    let draws = |percentage| {
        let routing = mirrored(vec![c.clone()], percentage, None, None);
        let before = f.skipped(&c, MirrorSkip::NoEndpoint);
        for _ in 0..2000 {
            f.mirroring
                .mirror(&routing, hit(&routing), &parts, &MirrorBody::Empty);
        }
        f.skipped(&c, MirrorSkip::NoEndpoint) - before
    };
    // 30 % of 2000: mean 600, sd 20.5; five sd either side.
    let n = draws(30.0);
    assert!((497..=703).contains(&n), "{n} of 2000 drawn at 30 %");
    assert_eq!(draws(100.0), 2000);
    // 0.1 %: mean 2, P(more than 15) is negligible.
    assert!(draws(0.1) <= 15);
    assert!(!draw(0.0));
    assert!(!draw(f64::NAN));
}

#[tokio::test]
async fn hanging_and_down_mirrors_cost_the_caller_nothing() {
    let (hang, mut rx) = upstream(Answer::Hang).await;
    let c = cluster(0, Protocol::Http, &[hang]);
    let routing = mirrored(vec![c.clone()], 100.0, None, None);
    let f = fixture(MirrorSettings {
        max_in_flight: 2,
        timeout: Duration::from_millis(300),
        ..MirrorSettings::default()
    });
    let parts = head("GET");
    let start = std::time::Instant::now();
    for _ in 0..5 {
        let tap = f
            .mirroring
            .mirror(&routing, hit(&routing), &parts, &MirrorBody::Empty);
        assert!(tap.is_none());
    }
    // No I/O on the caller's side: five calls return well before any mirror could.
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(f.mirroring.in_flight(), 2);
    assert_eq!(f.skipped(&c, MirrorSkip::InFlightLimit), 3);
    // Both reach the hanging upstream, then end at the mirror timeout.
    recv(&mut rx).await;
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Error, 2).await;
    assert_eq!(f.mirroring.in_flight(), 0);
    assert_eq!(routing.lb(&c).unwrap().in_flight(0), Some(0));
}

#[tokio::test]
async fn a_mirror_nobody_listens_on_is_counted_and_costs_nothing() {
    let c = cluster(0, Protocol::Http, &[down().await]);
    let routing = mirrored(vec![c.clone()], 100.0, None, None);
    let f = fixture(MirrorSettings::default());
    let start = std::time::Instant::now();
    f.mirroring
        .mirror(&routing, hit(&routing), &head("GET"), &MirrorBody::Empty);
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    f.wait_for(&c, MirrorResult::Error, 1).await;
    assert_eq!(f.mirroring.in_flight(), 0);
}

#[tokio::test]
async fn the_route_timeout_bounds_a_mirror_when_set() {
    let (hang, mut rx) = upstream(Answer::Hang).await;
    let c = cluster(0, Protocol::Http, &[hang]);
    let routing = mirrored(
        vec![c.clone()],
        100.0,
        None,
        Some(Duration::from_millis(100)),
    );
    // The default (an hour here) would keep the test waiting.
    let f = fixture(MirrorSettings {
        timeout: Duration::from_secs(3600),
        ..MirrorSettings::default()
    });
    f.mirroring
        .mirror(&routing, hit(&routing), &head("GET"), &MirrorBody::Empty);
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Error, 1).await;
}

#[tokio::test]
async fn streaming_and_large_bodies_are_skipped_and_counted() {
    let (addr, mut rx) = upstream(ok(b"")).await;
    let c = cluster(0, Protocol::Http, &[addr]);
    let routing = mirrored(vec![c.clone()], 100.0, None, None);
    let f = fixture(MirrorSettings {
        max_body: 8,
        ..MirrorSettings::default()
    });
    let parts = head("PUT");
    let mirror = |body: MirrorBody| {
        f.mirroring.mirror(&routing, hit(&routing), &parts, &body);
    };
    mirror(MirrorBody::Full(Bytes::from_static(b"123456789")));
    mirror(MirrorBody::Streaming(Some(100)));
    mirror(MirrorBody::Streaming(None));
    mirror(MirrorBody::Streaming(Some(3)));
    assert_eq!(f.skipped(&c, MirrorSkip::BodyTooLarge), 2);
    assert_eq!(f.skipped(&c, MirrorSkip::BodyStreaming), 2);
    assert_eq!(f.mirroring.in_flight(), 0);
    // At the bound, it goes.
    mirror(MirrorBody::Full(Bytes::from_static(b"12345678")));
    let got = recv(&mut rx).await;
    assert_eq!(got.body, b"12345678");
    f.wait_for(&c, MirrorResult::Ok, 1).await;
    assert!(
        rx.try_recv().is_err(),
        "only the request within the bound was mirrored"
    );
}

/// The primary's side, fed as the forwarding layer will.
fn primary(tap: &mut PrimaryTap, status: u16, etag: &'static str, body: &[&[u8]]) {
    tap.head(status, |name| (name == "etag").then_some(etag.as_bytes()));
    for chunk in body {
        tap.body(chunk);
    }
}

fn compare_all() -> Option<MirrorCompare> {
    Some(MirrorCompare {
        headers: vec!["etag".into(), "x-absent".into()],
        body: true,
    })
}

#[tokio::test]
async fn comparison_counts_match_and_mismatch() {
    let (addr, mut rx) = upstream(ok(b"hello")).await;
    let c = cluster(0, Protocol::Http, &[addr]);
    let routing = mirrored(vec![c.clone()], 100.0, compare_all(), None);
    let f = fixture(MirrorSettings::default());
    let parts = head("GET");
    let mirror = || {
        f.mirroring
            .mirror(&routing, hit(&routing), &parts, &MirrorBody::Empty)
            .expect("a tap when comparing")
    };

    // The primary ends first (the mirror's task has not even run yet),
    // chunked differently from the mirror's body.
    let mut tap = mirror();
    primary(&mut tap, 200, "\"a\"", &[b"hel", b"lo"]);
    tap.end();
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Match, 1).await;

    // The mirror ends first: its endpoint is released once it read the response.
    let mut tap = mirror();
    recv(&mut rx).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while routing.lb(&c).unwrap().in_flight(0) != Some(0) {
        assert!(Instant::now() < deadline, "the mirror did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    primary(&mut tap, 200, "\"a\"", &[b"hello"]);
    tap.end();
    f.wait_for(&c, MirrorResult::Match, 2).await;

    // A different status, header value or body each count as a mismatch.
    let cases: [(u16, &'static str, &[u8]); 3] = [
        (500, "\"a\"", b"hello"),
        (200, "\"b\"", b"hello"),
        (200, "\"a\"", b"hellO"),
    ];
    for (i, (status, etag, body)) in cases.into_iter().enumerate() {
        let mut tap = mirror();
        primary(&mut tap, status, etag, &[body]);
        tap.end();
        recv(&mut rx).await;
        f.wait_for(&c, MirrorResult::Mismatch, i as u64 + 1).await;
    }

    // The primary failed (the tap dropped without end): not compared.
    let tap = mirror();
    drop(tap);
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Uncompared, 1).await;
    assert_eq!(f.results(&c, MirrorResult::Match), 2);
    assert_eq!(f.results(&c, MirrorResult::Ok), 0);
    assert_eq!(f.mirroring.in_flight(), 0);
}

#[tokio::test]
async fn a_failed_mirror_is_an_error_not_a_mismatch() {
    let c = cluster(0, Protocol::Http, &[down().await]);
    let routing = mirrored(vec![c.clone()], 100.0, compare_all(), None);
    let f = fixture(MirrorSettings::default());
    let mut tap = f
        .mirroring
        .mirror(&routing, hit(&routing), &head("GET"), &MirrorBody::Empty)
        .unwrap();
    primary(&mut tap, 200, "\"a\"", &[b"hello"]);
    tap.end();
    f.wait_for(&c, MirrorResult::Error, 1).await;
    assert_eq!(f.results(&c, MirrorResult::Mismatch), 0);
}

#[test]
fn differences_name_what_differs() {
    let compare = MirrorCompare {
        headers: vec!["etag".into(), "x-v".into()],
        body: true,
    };
    let digest = |status, etag: &'static str, body| Digest {
        status,
        headers: vec![Some(Bytes::from_static(etag.as_bytes())), None],
        body: Some(body),
    };
    let a = digest(200, "a", 1);
    assert_eq!(differences(&compare, &a, &a), "");
    let b = digest(500, "b", 2);
    assert_eq!(
        differences(&compare, &a, &b),
        "status 200 vs 500; header etag \"a\" vs \"b\"; \
         body hash 0x0000000000000001 vs 0x0000000000000002"
    );
    let mut c = a.clone();
    c.headers[1] = Some(Bytes::from_static(b"2"));
    assert_eq!(differences(&compare, &a, &c), "header x-v absent vs \"2\"");
}

#[test]
fn mismatches_are_logged_once_per_route_per_second() {
    let mut sampler = LogSampler::default();
    let (r, s): (Arc<str>, Arc<str>) = ("r".into(), "s".into());
    let t = Instant::now();
    assert!(sampler.admit(&r, t));
    assert!(!sampler.admit(&r, t + LOG_EVERY / 2));
    assert!(
        sampler.admit(&s, t + LOG_EVERY / 2),
        "routes are sampled apart"
    );
    assert!(sampler.admit(&r, t + LOG_EVERY));
    assert!(!sampler.admit(&r, t + LOG_EVERY + LOG_EVERY / 2));
}

#[tokio::test]
async fn http2_mirrors_get_the_authority_and_the_body() {
    use http_body_util::BodyExt as _;
    use hyper::server::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let head = format!(
                    "{} {} {:?} te={:?}",
                    parts.method,
                    parts.uri,
                    parts.headers.get("x-keep"),
                    parts.headers.get("x-hop")
                );
                let _ = tx.send(Received {
                    head,
                    body: body.to_vec(),
                });
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"hello"),
                )))
            }
        });
        let _ = http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(conn), svc)
            .await;
    });
    let c = cluster(0, Protocol::Grpc, &[addr]);
    let routing = mirrored(vec![c.clone()], 100.0, compare_all(), None);
    let f = fixture(MirrorSettings {
        shadow_suffix: true,
        ..MirrorSettings::default()
    });
    let body = MirrorBody::Full(Bytes::from_static(b"ping"));
    let mut tap = f
        .mirroring
        .mirror(&routing, hit(&routing), &head("POST"), &body)
        .unwrap();
    let got = recv(&mut rx).await;
    assert_eq!(
        got.head,
        "POST http://reviews-shadow:9080/items?page=2 Some(\"yes\") te=None"
    );
    assert_eq!(got.body, b"ping");
    tap.head(200, |_| None);
    tap.body(b"hello");
    tap.end();
    f.wait_for(&c, MirrorResult::Match, 1).await;
}

#[tokio::test]
async fn tapped_bodies_feed_the_comparison() {
    use http_body_util::{BodyExt as _, Full, StreamBody};

    let (addr, mut rx) = upstream(ok(b"hello")).await;
    let c = cluster(0, Protocol::Http, &[addr]);
    let routing = mirrored(vec![c.clone()], 100.0, compare_all(), None);
    let f = fixture(MirrorSettings::default());
    let parts = head("GET");
    let mirror = || {
        f.mirroring
            .mirror(&routing, hit(&routing), &parts, &MirrorBody::Empty)
            .unwrap()
    };
    let mut etag = http::HeaderMap::new();
    etag.insert("etag", http::HeaderValue::from_static("\"a\""));

    // A body that knows it ended with its last frame (HTTP/2 upstreams).
    let mut tap = mirror();
    tap.head_map(http::StatusCode::OK, &etag);
    let body = TappedBody::new(Full::new(Bytes::from_static(b"hello")), tap);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Match, 1).await;

    // An HTTP/1.1 head as received, and a body ended by a final poll.
    let mut tap = mirror();
    let mut raw =
        bytes::BytesMut::from(&b"HTTP/1.1 200 OK\r\nETag: \"a\"\r\ncontent-length: 5\r\n\r\n"[..]);
    let rhead = crate::h1::codec::parse_response(&mut raw, false)
        .unwrap()
        .unwrap();
    tap.head_h1(&rhead);
    let chunks = [&b"hel"[..], b"lo"]
        .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(c))));
    let body = TappedBody::new(StreamBody::new(futures_util::stream::iter(chunks)), tap);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Match, 2).await;

    // Dropped before its end (the client went away): not compared.
    let mut tap = mirror();
    tap.head_map(http::StatusCode::OK, &etag);
    let chunks = [Ok::<_, std::convert::Infallible>(http_body::Frame::data(
        Bytes::from_static(b"hel"),
    ))];
    let mut body = TappedBody::new(StreamBody::new(futures_util::stream::iter(chunks)), tap);
    body.frame().await.unwrap().unwrap();
    drop(body);
    recv(&mut rx).await;
    f.wait_for(&c, MirrorResult::Uncompared, 1).await;
    assert_eq!(f.results(&c, MirrorResult::Mismatch), 0);
}

#[tokio::test]
async fn the_route_rewrite_and_header_operations_apply_to_the_copy() {
    use anymesh_core::routes::{RequestMatch, Rewrite, StringMatch};

    let (addr, mut rx) = upstream(ok(b"")).await;
    let c = cluster(0, Protocol::Http, &[addr]);
    let table = mirrored(vec![c.clone()], 100.0, None, None).table.clone();
    let mut route = Route {
        name: "r".into(),
        matches: vec![RequestMatch {
            uri: Some(StringMatch::Prefix("/items".into())),
            ..RequestMatch::default()
        }],
        action: RouteAction::DirectResponse(DirectResponse {
            status: 200,
            body: None,
        }),
        timeout: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        rewrite: Some(Rewrite {
            uri: Some("/v2/list".into()),
            authority: Some("ratings:8080".into()),
        }),
        retry: RetryPolicy::istio_default(),
        fault: None,
        mirrors: vec![Mirror {
            cluster: c.clone(),
            percentage: 100.0,
        }],
        mirror_compare: None,
    };
    route.request_headers.set.push((
        http::HeaderName::from_static("x-set"),
        http::HeaderValue::from_static("1"),
    ));
    route
        .request_headers
        .remove
        .push(http::HeaderName::from_static("x-keep"));
    let vhost = Arc::new(VirtualHost {
        name: "vs".into(),
        domains: vec!["reviews".into()],
        routes: vec![route],
    });
    let router = crate::router::Router::new();
    router.install(
        Arc::new(RouteTable {
            virtual_hosts: vec![vhost],
            clusters: table.clusters.clone(),
            ..RouteTable::default()
        }),
        true,
    );
    let routing = router.current();
    let hit = RouteHit {
        matched: Some(0),
        ..hit(&routing)
    };
    let f = fixture(MirrorSettings::default());
    f.mirroring
        .mirror(&routing, hit, &head("GET"), &MirrorBody::Empty);
    let got = recv(&mut rx).await;
    // `/items?page=2` with the prefix `/items` replaced, the query kept.
    assert!(
        got.head.starts_with("get /v2/list?page=2 http/1.1\r\n"),
        "{}",
        got.head
    );
    assert!(
        got.head.contains("\r\nhost: ratings:8080\r\n"),
        "{}",
        got.head
    );
    assert!(got.head.contains("\r\nx-set: 1\r\n"), "{}", got.head);
    assert!(!got.head.contains("x-keep"), "{}", got.head);
}
