//! A static Istio exposition: what three Envoy sidecars of Istio's Bookinfo
//! sample (productpage → reviews → ratings) report, with Istio's names, full
//! label set and meanings, and Envoy's histogram buckets, served at
//! `/stats/prometheus` by [`StaticSidecar`] with every counter and histogram
//! grown at each scrape.
//!
//! It proves the Prometheus harness and the dashboards' queries before the
//! proxy exports these metrics: the proxy's exposition must make the same
//! queries answer.
//!
//! Besides the Bookinfo calls (mutual TLS between sidecars), a client outside
//! the mesh calls reviews in plain text (its source labels are `unknown`, its
//! policy `none`), reviews calls details, which has no sidecar, in plain text
//! (reported by reviews' proxy only), and HTTP and TCP traffic both flow on each hop, so every
//! panel has data on each side of its mutual-TLS split where Istio gives it
//! some. As Istio, the client side reports `connection_security_policy`
//! `unknown` and canonical revisions default to `latest`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Envoy's default histogram bucket boundaries, which Istio's histograms use.
pub(crate) const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Response codes per HTTP call and scrape: `(code, requests)`. The share of
/// non-5xx responses is 9 in 10.
pub(crate) const CODES: [(u16, u64); 3] = [(200, 8), (404, 1), (503, 1)];

/// A workload, with the labels Istio derives from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) namespace: &'static str,
    pub(crate) app: &'static str,
    pub(crate) version: &'static str,
    pub(crate) principal: &'static str,
    pub(crate) cluster: &'static str,
}

/// A client outside the mesh: Istio's fallbacks.
pub(crate) const UNKNOWN: Workload = Workload {
    name: "unknown",
    namespace: "unknown",
    app: "unknown",
    version: "unknown",
    principal: "unknown",
    cluster: "unknown",
};

const fn bookinfo(name: &'static str, app: &'static str, sa: &'static str) -> Workload {
    Workload {
        name,
        namespace: "default",
        app,
        version: "v1",
        principal: sa,
        cluster: "Kubernetes",
    }
}

pub(crate) const PRODUCTPAGE: Workload = bookinfo(
    "productpage-v1",
    "productpage",
    "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
);
pub(crate) const REVIEWS: Workload = bookinfo(
    "reviews-v1",
    "reviews",
    "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
);
/// Runs without a sidecar (on a VM, say): only its clients report calls to it.
pub(crate) const DETAILS: Workload = bookinfo(
    "details-v1",
    "details",
    "spiffe://cluster.local/ns/default/sa/bookinfo-details",
);
pub(crate) const RATINGS: Workload = bookinfo(
    "ratings-v1",
    "ratings",
    "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
);

/// Which proxy reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// The client's proxy (outbound).
    Source,
    /// The server's proxy (inbound).
    Destination,
}

/// The protocol a call is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Tcp,
}

/// One call as one proxy reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    pub(crate) reporter: Reporter,
    pub(crate) source: Workload,
    pub(crate) destination: Workload,
    /// The service's short name; its FQDN is `name.namespace.svc.cluster.local`.
    pub(crate) service: &'static str,
    pub(crate) protocol: Protocol,
    /// Whether the hop is mutual TLS (known to the server's proxy only).
    pub(crate) mtls: bool,
}

/// What one sidecar reports.
#[derive(Debug, Clone)]
pub(crate) struct Exposition {
    pub(crate) reports: Vec<Report>,
    /// `istio_build`'s `tag`.
    pub(crate) tag: &'static str,
}

/// The Bookinfo mesh's three sidecars' expositions, productpage's first.
pub(crate) fn bookinfo_mesh() -> Vec<Exposition> {
    let call = |reporter, source, destination: Workload, protocol, mtls| Report {
        reporter,
        source,
        destination,
        service: destination.app,
        protocol,
        mtls,
    };
    use Protocol::{Http, Tcp};
    use Reporter::{Destination, Source};
    let mut productpage = Vec::new();
    let mut reviews = Vec::new();
    let mut ratings = Vec::new();
    for p in [Http, Tcp] {
        // productpage → reviews, over mutual TLS: both ends report.
        productpage.push(call(Source, PRODUCTPAGE, REVIEWS, p, true));
        reviews.push(call(Destination, PRODUCTPAGE, REVIEWS, p, true));
        // A client outside the mesh → reviews, in plain text: only the server's
        // proxy sees it.
        reviews.push(call(Destination, UNKNOWN, REVIEWS, p, false));
        // reviews → ratings, over mutual TLS.
        reviews.push(call(Source, REVIEWS, RATINGS, p, true));
        ratings.push(call(Destination, REVIEWS, RATINGS, p, true));
        // reviews → details, which has no sidecar: plain text, reported by
        // the client's proxy only.
        reviews.push(call(Source, REVIEWS, DETAILS, p, false));
    }
    [productpage, reviews, ratings]
        .into_iter()
        .map(|reports| Exposition {
            reports,
            tag: "1.0.0-static",
        })
        .collect()
}

/// The values one HTTP request of `code` adds to each histogram, per scrape:
/// as many as [`CODES`] counts for it.
fn observations(metric: &str, code: u16) -> &'static [f64] {
    match (metric, code) {
        ("istio_request_duration_milliseconds", 200) => {
            &[2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 700.0]
        }
        ("istio_request_duration_milliseconds", 404) => &[1.5],
        ("istio_request_duration_milliseconds", _) => &[2600.0],
        ("istio_request_bytes", 200) => &[180.0; 8],
        ("istio_request_bytes", _) => &[240.0],
        ("istio_response_bytes", 200) => {
            &[90.0, 300.0, 300.0, 1200.0, 1200.0, 4500.0, 4500.0, 20000.0]
        }
        ("istio_response_bytes", _) => &[95.0],
        _ => &[],
    }
}

/// The label set of `r`, with Istio's names, order and meanings; HTTP ones end
/// with `request_protocol`, `response_code`, `grpc_response_status`,
/// `response_flags`, `connection_security_policy`.
fn labels(r: &Report, code: Option<u16>) -> String {
    let s = &r.source;
    let d = &r.destination;
    let reporter = match r.reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    let policy = match (r.reporter, r.mtls) {
        (Reporter::Source, _) => "unknown",
        (Reporter::Destination, true) => "mutual_tls",
        (Reporter::Destination, false) => "none",
    };
    let (src_principal, dst_principal) = if r.mtls {
        (s.principal, d.principal)
    } else {
        ("unknown", "unknown")
    };
    let canonical_revision = |w: &Workload| {
        if w.name == "unknown" {
            "latest"
        } else {
            w.version
        }
    };
    let mut out = format!(
        "reporter=\"{reporter}\",source_workload=\"{}\",source_canonical_service=\"{}\",\
         source_canonical_revision=\"{}\",source_workload_namespace=\"{}\",\
         source_principal=\"{src_principal}\",source_app=\"{}\",source_version=\"{}\",\
         source_cluster=\"{}\",destination_workload=\"{}\",destination_workload_namespace=\"{}\",\
         destination_principal=\"{dst_principal}\",destination_app=\"{}\",destination_version=\"{}\",\
         destination_service=\"{svc}.{ns}.svc.cluster.local\",destination_canonical_service=\"{}\",\
         destination_canonical_revision=\"{}\",destination_service_name=\"{svc}\",\
         destination_service_namespace=\"{ns}\",destination_cluster=\"{}\",",
        s.name,
        s.app,
        canonical_revision(s),
        s.namespace,
        s.app,
        s.version,
        s.cluster,
        d.name,
        d.namespace,
        d.app,
        d.version,
        d.app,
        canonical_revision(d),
        d.cluster,
        svc = r.service,
        ns = d.namespace,
    );
    match code {
        Some(code) => {
            let _ = write!(
                out,
                "request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",\
                 response_flags=\"-\",connection_security_policy=\"{policy}\""
            );
        }
        None => {
            let _ = write!(
                out,
                "request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"{policy}\""
            );
        }
    }
    out
}

/// The text exposition of `e` after `n` scrapes' worth of traffic (`n` ≥ 1):
/// every value grows with `n`.
pub(crate) fn render(e: &Exposition, n: u64) -> String {
    let http: Vec<&Report> = e
        .reports
        .iter()
        .filter(|r| r.protocol == Protocol::Http)
        .collect();
    let tcp: Vec<&Report> = e
        .reports
        .iter()
        .filter(|r| r.protocol == Protocol::Tcp)
        .collect();
    let mut out = String::new();
    out.push_str("# TYPE istio_requests_total counter\n");
    for r in &http {
        for (code, count) in CODES {
            let _ = writeln!(
                out,
                "istio_requests_total{{{}}} {}",
                labels(r, Some(code)),
                count * n
            );
        }
    }
    for metric in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let _ = writeln!(out, "# TYPE {metric} histogram");
        for r in &http {
            for (code, _) in CODES {
                histogram(
                    &mut out,
                    metric,
                    &labels(r, Some(code)),
                    observations(metric, code),
                    n,
                );
            }
        }
    }
    // Per scrape and TCP hop: one connection opened (and the previous one
    // closed), 512 bytes received from the client, 4096 sent back.
    for (metric, per_scrape) in [
        ("istio_tcp_connections_opened_total", n),
        ("istio_tcp_connections_closed_total", n - 1),
        ("istio_tcp_received_bytes_total", 512 * n),
        ("istio_tcp_sent_bytes_total", 4096 * n),
    ] {
        let _ = writeln!(out, "# TYPE {metric} counter");
        for r in &tcp {
            let _ = writeln!(out, "{metric}{{{}}} {per_scrape}", labels(r, None));
        }
    }
    out.push_str("# TYPE istio_build gauge\n");
    let _ = writeln!(
        out,
        "istio_build{{component=\"proxy\",tag=\"{}\"}} 1",
        e.tag
    );
    out
}

/// One histogram series: `n` times the observations `per_scrape`.
fn histogram(out: &mut String, metric: &str, labels: &str, per_scrape: &[f64], n: u64) {
    for le in ENVOY_BUCKETS {
        let below = per_scrape.iter().filter(|v| **v <= le).count() as u64;
        let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {}", below * n);
    }
    let count = per_scrape.len() as u64 * n;
    let sum: f64 = per_scrape.iter().sum::<f64>() * n as f64;
    let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{metric}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{metric}_count{{{labels}}} {count}");
}

/// An HTTP server answering `/stats/prometheus` with [`render`] of its
/// exposition, one scrape's more traffic at each request; stops on drop.
pub(crate) struct StaticSidecar {
    addr: SocketAddr,
    scrapes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl StaticSidecar {
    pub(crate) async fn start(exposition: Exposition) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the exposition");
        let addr = listener.local_addr().expect("the exposition's address");
        let scrapes = Arc::new(AtomicU64::new(0));
        let exposition = Arc::new(exposition);
        let counter = scrapes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let exposition = exposition.clone();
                let counter = counter.clone();
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let exposition = exposition.clone();
                    let counter = counter.clone();
                    async move {
                        let resp = if req.uri().path() == "/stats/prometheus" {
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(Bytes::from(render(&exposition, n))))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                        resp
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            scrapes,
            task,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many times it has been scraped.
    pub(crate) fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

impl Drop for StaticSidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}
