//! Exporting spans off the request path.
//!
//! [`Tracer::record`] puts a finished span in a bounded queue with
//! `try_send`: it never waits, and when the queue is full the span is
//! dropped and counted ([`Tracer::dropped`]). One background task takes
//! spans in batches (up to `batch_size`, or whatever came within
//! `batch_timeout` of the batch's first span) and sends each batch to every
//! configured exporter at once, each bounded by `export_timeout`. A
//! collector that is down or slow only holds that task: the queue fills and
//! spans are dropped, the request path never waits.
//!
//! ```text
//!  request path                     background task
//!  record(span) ─try_send─► [queue: `queue` spans] ─► batch ─┬─► OTLP/gRPC
//!        └─ full: dropped += 1                               ├─► OTLP/HTTP
//!                                                            └─► Zipkin v2
//! ```

pub mod otlp;
pub mod zipkin;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::config::TracingConfig;
use super::propagation::TraceContext;
use super::sampling::Sampler;
use super::span::{HttpExchange, LocalInfo, Span};

/// Why a tracer could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("the tracer must start inside a tokio runtime")]
    NoRuntime,
    #[error("building the HTTP client of the trace exporters failed")]
    HttpClient(#[source] reqwest::Error),
    /// A setting is out of its range.
    #[error("invalid tracing configuration: {0}")]
    InvalidConfig(String),
}

/// Why one export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP/gRPC export failed: {0:?}: {1}")]
    Grpc(tonic::Code, String),
    #[error("POST failed")]
    Post(#[source] reqwest::Error),
    #[error("the collector answered {0}")]
    Status(u16),
    #[error("the export took longer than {0:?}")]
    Timeout(Duration),
}

/// Counters of the export path, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracerStats {
    /// Spans dropped because the queue was full (or the task had ended).
    pub dropped: u64,
    /// Spans in batches that some exporter accepted.
    pub exported: u64,
    /// Exports (one batch to one exporter) that failed or timed out.
    pub export_failures: u64,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    exported: AtomicU64,
    export_failures: AtomicU64,
}

/// The handle the proxy keeps: the sampler, and the queue to the exporter
/// task. Cheap to clone; the task ends (after a last export) when every
/// clone is dropped.
#[derive(Clone)]
pub struct Tracer {
    tx: mpsc::Sender<Span>,
    counters: Arc<Counters>,
    sampler: Sampler,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sampler", &self.sampler)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Tracer {
    /// Starts the exporter task on the current tokio runtime. Nothing
    /// connects yet: collectors are reached at the first batch.
    pub fn start(config: &TracingConfig, local: LocalInfo) -> Result<Tracer, TraceError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
        let exporters = Exporters::new(config, local)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let batch = Batching {
            size: config.batch_size.max(1),
            timeout: config.batch_timeout,
            export_timeout: config.export_timeout,
        };
        handle.spawn(run(rx, exporters, batch, counters.clone()));
        Ok(Tracer {
            tx,
            counters,
            sampler: Sampler::new(config.sampling),
        })
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Queues a finished span; never waits. A full queue drops it.
    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Builds and queues the span of an exchange when `ctx` is sampled;
    /// nothing at all when it is not. A full queue is seen before the span
    /// is built.
    pub fn record_http(&self, ctx: &TraceContext, exchange: &HttpExchange<'_>) {
        if !ctx.sampled {
            return;
        }
        if self.tx.capacity() == 0 {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.record(Span::http(ctx, exchange));
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> TracerStats {
        TracerStats {
            dropped: self.dropped(),
            exported: self.counters.exported.load(Ordering::Relaxed),
            export_failures: self.counters.export_failures.load(Ordering::Relaxed),
        }
    }
}

struct Batching {
    size: usize,
    timeout: Duration,
    export_timeout: Duration,
}

async fn run(
    mut rx: mpsc::Receiver<Span>,
    mut exporters: Exporters,
    b: Batching,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(b.size.min(4096));
    loop {
        if rx.recv_many(&mut batch, b.size).await == 0 {
            return;
        }
        let deadline = Instant::now() + b.timeout;
        while batch.len() < b.size {
            let room = b.size - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let (ok, failed) = exporters.export(&batch, b.export_timeout).await;
        if ok {
            counters
                .exported
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        counters
            .export_failures
            .fetch_add(failed, Ordering::Relaxed);
        batch.clear();
    }
}

/// The configured exporters.
struct Exporters {
    local: LocalInfo,
    grpc: Option<otlp::GrpcExporter>,
    http: Option<reqwest::Client>,
    otlp_http: Option<String>,
    zipkin: Option<String>,
    /// Whether the last export of each failed (gRPC, HTTP, Zipkin), so a
    /// collector that stays down is logged once, not per batch.
    failing: [bool; 3],
}

/// `uri`, with `path` when it has none.
fn endpoint(uri: &Uri, path: &str) -> String {
    let s = uri.to_string();
    match uri.path() {
        "" | "/" => format!("{}{path}", s.trim_end_matches('/')),
        _ => s,
    }
}

impl Exporters {
    fn new(config: &TracingConfig, local: LocalInfo) -> Result<Self, TraceError> {
        let posts = config.otlp_http.is_some() || config.zipkin.is_some();
        let http = posts
            .then(|| {
                reqwest::Client::builder()
                    .timeout(config.export_timeout)
                    .connect_timeout(config.export_timeout)
                    .build()
                    .map_err(TraceError::HttpClient)
            })
            .transpose()?;
        Ok(Self {
            local,
            grpc: config
                .otlp_grpc
                .clone()
                .map(|u| otlp::GrpcExporter::new(u, config.export_timeout)),
            http,
            otlp_http: config.otlp_http.as_ref().map(|u| endpoint(u, "/v1/traces")),
            zipkin: config.zipkin.as_ref().map(|u| endpoint(u, "/api/v2/spans")),
            failing: [false; 3],
        })
    }

    /// Sends one batch to every exporter at once. Returns whether any
    /// accepted it and how many failed.
    async fn export(&mut self, batch: &[Span], limit: Duration) -> (bool, u64) {
        let needs_otlp = self.grpc.is_some() || self.otlp_http.is_some();
        let request = needs_otlp.then(|| otlp::to_request(batch, &self.local));
        let http = self.http.clone();
        let grpc = async {
            let (Some(e), Some(req)) = (self.grpc.as_mut(), request.clone()) else {
                return None;
            };
            Some(flatten(timeout(limit, e.export(req)).await, limit))
        };
        let otlp_http = async {
            let (Some(url), Some(req), Some(client)) = (&self.otlp_http, &request, &http) else {
                return None;
            };
            let body = otlp::http_body(req);
            Some(post(client, url, "application/x-protobuf", body, limit).await)
        };
        let zipkin = async {
            let (Some(url), Some(client)) = (&self.zipkin, &http) else {
                return None;
            };
            let body = zipkin::to_json(batch, &self.local);
            Some(post(client, url, "application/json", body, limit).await)
        };
        let results = tokio::join!(grpc, otlp_http, zipkin);
        let mut any_ok = false;
        let mut failed = 0;
        let names = ["otlp_grpc", "otlp_http", "zipkin"];
        for (i, r) in [results.0, results.1, results.2].into_iter().enumerate() {
            match r {
                None => {}
                Some(Ok(())) => {
                    any_ok = true;
                    if std::mem::take(&mut self.failing[i]) {
                        tracing::info!(exporter = names[i], "trace export recovered");
                    }
                }
                Some(Err(e)) => {
                    failed += 1;
                    if !std::mem::replace(&mut self.failing[i], true) {
                        tracing::warn!(exporter = names[i], error = %e, spans = batch.len(), "trace export failed");
                    } else {
                        tracing::debug!(exporter = names[i], error = %e, "trace export failed");
                    }
                }
            }
        }
        (any_ok, failed)
    }
}

fn flatten<T>(
    r: Result<Result<T, ExportError>, tokio::time::error::Elapsed>,
    limit: Duration,
) -> Result<T, ExportError> {
    r.unwrap_or(Err(ExportError::Timeout(limit)))
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &'static str,
    body: Vec<u8>,
    limit: Duration,
) -> Result<(), ExportError> {
    let send = client
        .post(url)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .send();
    let resp = flatten(
        timeout(limit, async { send.await.map_err(ExportError::Post) }).await,
        limit,
    )?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(ExportError::Status(resp.status().as_u16()))
    }
}
