//! Istio's standard metrics, with Istio's names, labels, fallbacks and
//! Envoy's histogram buckets, so that Istio's dashboards, Kiali and alerts
//! read anymesh unchanged (docs/telemetry.md).
//!
//! Every exchange is reported by the proxy that saw it: `reporter="source"`
//! on the outbound side, `reporter="destination"` on the inbound side.
//!
//! A series' labels come in three parts, each built once and shared:
//!
//! - the local workload ([`PeerLabels`], from anymesh.yaml's `workloads`):
//!   the source of outbound exchanges, the destination of inbound ones;
//! - the other end: on the outbound side the endpoint picked, whose labels
//!   come from its registry ([`PeerLabels::of_endpoint`], cached per
//!   endpoint); on the inbound side the peer, from its verified
//!   certificate ([`PeerLabels::of_peer`], built once per connection);
//! - what varies per request: protocol, response code, gRPC status,
//!   response flags, connection security policy.
//!
//! A recording looks its counter and histograms up in a per-thread cache
//! keyed by the addresses of those shared parts, so the label set is built
//! and hashed only the first time a thread sees it. Every value comes from
//! configuration, the registries or a verified certificate, never from
//! request headers: cardinality stays bounded by the mesh's size.
//!
//! The local workload's Telemetry policy ([`LocalTelemetry`], in
//! [`IstioMetrics::policy`]) decides which metrics each side records and
//! their tag overrides; the cache key includes its generation, so a new
//! policy applies from the next recording (series already counted keep
//! their labels).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anymesh_core::model::Endpoint;
use anymesh_core::telemetry::{Side, StandardMetric, TelemetryPolicy};
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub mod policy;

use policy::{LocalTelemetry, PolicyCell, SeriesLabels};

/// Envoy's default histogram boundaries, in milliseconds (Istio's duration
/// histogram) and in bytes (the size histograms use them too), so mixed
/// fleets aggregate in one query.
pub const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's value for a label nobody knows.
const UNKNOWN: &str = "unknown";

/// One end of an exchange: a workload as Istio's labels name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerLabels {
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
    /// The SPIFFE ID, `spiffe://<trust domain>/ns/<namespace>/sa/<account>`
    /// as Istio's metrics carry it (its dashboards select
    /// `destination_principal=~"spiffe.*"`), or `unknown`.
    pub principal: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub cluster: Arc<str>,
}

fn label<'a>(
    labels: &'a std::collections::BTreeMap<String, String>,
    keys: &[&str],
) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

impl PeerLabels {
    /// Nobody known (a plaintext peer on the inbound side, a proxy with no
    /// workload declared).
    pub fn unknown() -> Self {
        let u: Arc<str> = Arc::from(UNKNOWN);
        Self {
            workload: u.clone(),
            namespace: u.clone(),
            principal: u.clone(),
            app: u.clone(),
            version: u.clone(),
            canonical_service: u.clone(),
            canonical_revision: Arc::from("latest"),
            cluster: u,
        }
    }

    /// A workload named `name` in `namespace` with `labels`, proving
    /// `principal` when it has an identity. Istio's fallbacks: `app` is
    /// `app` or `app.kubernetes.io/name`; `version` is `version` or
    /// `app.kubernetes.io/version`; the canonical service is
    /// `service.istio.io/canonical-name`, else the app, else the workload;
    /// the canonical revision is `service.istio.io/canonical-revision`,
    /// else the version, else `latest`; the cluster is
    /// `topology.istio.io/cluster`.
    pub fn workload(
        name: &str,
        namespace: &str,
        principal: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let app = label(labels, &["app", "app.kubernetes.io/name"]);
        let version = label(labels, &["version", "app.kubernetes.io/version"]);
        let canonical = label(labels, &["service.istio.io/canonical-name"])
            .or(app)
            .unwrap_or(name);
        let revision = label(labels, &["service.istio.io/canonical-revision"])
            .or(version)
            .unwrap_or("latest");
        let or_unknown =
            |v: Option<&str>| Arc::from(v.filter(|v| !v.is_empty()).unwrap_or(UNKNOWN));
        Self {
            workload: or_unknown(Some(name)),
            namespace: or_unknown(Some(namespace)),
            principal: or_unknown(principal),
            app: or_unknown(app),
            version: or_unknown(version),
            canonical_service: Arc::from(canonical),
            canonical_revision: Arc::from(revision),
            cluster: or_unknown(label(labels, &["topology.istio.io/cluster"])),
        }
    }

    /// The endpoint a caller picked, from what its registry says: the
    /// workload is the `anymesh.io/workload` label, else the app, else the
    /// service's first name; the namespace is the mesh proxy's (the
    /// registries' `mesh` metadata), else the service hostname's second
    /// name when it has Kubernetes' `<name>.<namespace>.svc.` form;
    /// `principal` is the identity mutual TLS will check, if any.
    pub fn of_endpoint(endpoint: &Endpoint, principal: Option<&str>) -> Self {
        let host = endpoint.service.as_str();
        let labels = &endpoint.labels;
        let workload = label(
            labels,
            &["anymesh.io/workload", "app", "app.kubernetes.io/name"],
        )
        .unwrap_or_else(|| host.split('.').next().unwrap_or(host));
        let namespace = endpoint
            .mesh
            .as_ref()
            .and_then(|m| m.namespace.as_deref())
            .or_else(|| service_namespace(host))
            .unwrap_or(UNKNOWN);
        Self::workload(workload, namespace, principal, labels)
    }

    /// The peer of an inbound connection, from its verified SPIFFE ID (no
    /// ID: a plaintext peer, all `unknown`). The ID names the namespace
    /// and the principal; the workload and its labels are not in it.
    pub fn of_peer(id: Option<&anymesh_identity::SpiffeId>) -> Self {
        let mut p = Self::unknown();
        if let Some(id) = id {
            p.principal = Arc::from(id.as_str());
            if let Some(ns) = id.namespace() {
                p.namespace = Arc::from(ns);
            }
        }
        p
    }
}

/// The header in which a proxy tells the mesh proxy it calls its
/// workload's labels (Istio exchanges the same in `x-envoy-peer-metadata`):
/// `w=<workload>;a=<app>;v=<version>;cs=<canonical service>;cr=<canonical
/// revision>;c=<cluster>`, `unknown` values left out. The receiving proxy
/// removes it before the application; it believes it only over mutual TLS,
/// and takes the namespace and principal from the certificate, never from
/// the header.
pub const PEER_HEADER: http::HeaderName = http::HeaderName::from_static("x-anymesh-peer");

/// A header value longer than this is ignored.
const PEER_HEADER_MAX: usize = 512;

impl PeerLabels {
    /// This workload's `x-anymesh-peer` value ([`PEER_HEADER`]).
    pub fn metadata(&self) -> String {
        let mut out = String::new();
        for (key, value) in [
            ("w", &self.workload),
            ("a", &self.app),
            ("v", &self.version),
            ("cs", &self.canonical_service),
            ("cr", &self.canonical_revision),
            ("c", &self.cluster),
        ] {
            if &**value != UNKNOWN && valid_value(value) {
                if !out.is_empty() {
                    out.push(';');
                }
                let _ = write!(out, "{key}={value}");
            }
        }
        out
    }

    /// `verified` (the peer as its certificate says) with the workload
    /// labels of an `x-anymesh-peer` value; `None` when the value is not
    /// well formed (too long, an unknown key, a value outside
    /// `[A-Za-z0-9._-]`, 1 to 63 characters).
    pub fn with_metadata(verified: &PeerLabels, value: &[u8]) -> Option<PeerLabels> {
        if value.len() > PEER_HEADER_MAX {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        let mut p = verified.clone();
        for item in text.split(';').filter(|i| !i.is_empty()) {
            let (key, v) = item.split_once('=')?;
            if !valid_value(v) {
                return None;
            }
            let slot = match key {
                "w" => &mut p.workload,
                "a" => &mut p.app,
                "v" => &mut p.version,
                "cs" => &mut p.canonical_service,
                "cr" => &mut p.canonical_revision,
                "c" => &mut p.cluster,
                _ => return None,
            };
            *slot = Arc::from(v);
        }
        Some(p)
    }
}

fn valid_value(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `verified` with the workload labels of an `x-anymesh-peer` value
/// ([`PeerLabels::with_metadata`]), shared by every connection with the
/// same identity and value; `None` when the value is not well formed.
pub(crate) fn peer_with_metadata(verified: &PeerLabels, value: &[u8]) -> Option<Arc<PeerLabels>> {
    let key = format!("{}|{}", verified.principal, String::from_utf8_lossy(value));
    let mut interned = PEERS.lock();
    if let Some(l) = interned.get(&key) {
        return Some(l.clone());
    }
    let p = Arc::new(PeerLabels::with_metadata(verified, value)?);
    if interned.len() >= CACHE_LIMIT {
        interned.clear();
    }
    interned.insert(key, p.clone());
    Some(p)
}

/// Peer labels with metadata, by principal and header value.
static PEERS: std::sync::LazyLock<parking_lot::Mutex<HashMap<String, Arc<PeerLabels>>>> =
    std::sync::LazyLock::new(Default::default);

/// The namespace of a Kubernetes-style service hostname
/// (`<name>.<namespace>.svc.<domain>`).
fn service_namespace(host: &str) -> Option<&str> {
    let mut parts = host.split('.');
    let (_, ns, svc) = (parts.next()?, parts.next()?, parts.next()?);
    (svc == "svc").then_some(ns)
}

/// The service an exchange went to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    /// The hostname (`destination_service`).
    pub host: Arc<str>,
    /// Its first name (`destination_service_name`).
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl ServiceLabels {
    pub fn new(host: &str, namespace: Option<&str>) -> Self {
        let namespace = service_namespace(host).or(namespace).unwrap_or(UNKNOWN);
        Self {
            host: Arc::from(host),
            name: Arc::from(host.split('.').next().unwrap_or(host)),
            namespace: Arc::from(namespace),
        }
    }

    pub fn unknown() -> Self {
        let u: Arc<str> = Arc::from(UNKNOWN);
        Self {
            host: u.clone(),
            name: u.clone(),
            namespace: u,
        }
    }
}

/// This proxy's side of Istio's labels.
#[derive(Debug, Clone)]
pub struct LocalLabels {
    /// The local workload: the source of outbound exchanges, the
    /// destination of inbound ones.
    pub workload: Arc<PeerLabels>,
    /// The service inbound exchanges are reported for.
    pub service: Arc<ServiceLabels>,
    /// The mesh's trust domain, for the principals of mesh endpoints.
    pub trust_domain: Arc<str>,
    /// Shared `unknown` values: a series without a destination or a
    /// service (a local reply) keeps one cache entry.
    pub unknown_peer: Arc<PeerLabels>,
    pub unknown_service: Arc<ServiceLabels>,
    /// `x-anymesh-peer` for mesh peers: the local workload's labels
    /// ([`PeerLabels::metadata`]); `None` without a workload.
    pub peer_header: Option<http::HeaderValue>,
}

impl LocalLabels {
    /// No workload declared.
    pub fn unknown() -> Self {
        let unknown_peer = Arc::new(PeerLabels::unknown());
        let unknown_service = Arc::new(ServiceLabels::unknown());
        Self {
            workload: unknown_peer.clone(),
            service: unknown_service.clone(),
            trust_domain: Arc::from("cluster.local"),
            unknown_peer,
            unknown_service,
            peer_header: None,
        }
    }

    /// The local workload `name` in `namespace` with `labels`, proving
    /// `principal` (a whole SPIFFE ID) when it has an identity. Its
    /// service is `<canonical service>.<namespace>.svc.cluster.local`, as
    /// Kubernetes would name it, unless `service` names it.
    pub fn workload(
        name: &str,
        namespace: &str,
        principal: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
        service: Option<&str>,
        trust_domain: &str,
    ) -> Self {
        let workload = PeerLabels::workload(name, namespace, principal, labels);
        let host = match service {
            Some(s) => s.to_string(),
            None => format!(
                "{}.{namespace}.svc.cluster.local",
                workload.canonical_service
            ),
        };
        Self {
            service: Arc::new(ServiceLabels::new(&host, Some(namespace))),
            peer_header: http::HeaderValue::from_str(&workload.metadata()).ok(),
            workload: Arc::new(workload),
            trust_domain: Arc::from(trust_domain),
            unknown_peer: Arc::new(PeerLabels::unknown()),
            unknown_service: Arc::new(ServiceLabels::unknown()),
        }
    }

    /// The labels of `endpoint`, reached with mutual TLS (`mtls`) or not;
    /// built once per endpoint and thread.
    pub fn destination(&self, endpoint: &Arc<Endpoint>, mtls: bool) -> Arc<PeerLabels> {
        let key = (
            Arc::as_ptr(endpoint) as usize,
            mtls,
            Arc::as_ptr(&self.trust_domain) as *const u8 as usize,
        );
        DESTINATIONS.with_borrow_mut(|cache| {
            if let Some((_, _, labels)) = cache.get(&key) {
                return labels.clone();
            }
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            let principal = if mtls {
                endpoint
                    .mesh
                    .as_ref()
                    .map(|m| m.identity(&self.trust_domain))
            } else {
                None
            };
            let labels = Arc::new(PeerLabels::of_endpoint(endpoint, principal.as_deref()));
            cache.insert(
                key,
                (endpoint.clone(), self.trust_domain.clone(), labels.clone()),
            );
            labels
        })
    }
}

/// The labels of the service `host` (a route table's shared name), built
/// once per name and thread.
pub fn service_labels(host: &Arc<str>) -> Arc<ServiceLabels> {
    let key = Arc::as_ptr(host) as *const u8 as usize;
    SERVICES.with_borrow_mut(|cache| {
        if let Some((_, labels)) = cache.get(&key) {
            return labels.clone();
        }
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let labels = Arc::new(ServiceLabels::new(host, None));
        cache.insert(key, (host.clone(), labels.clone()));
        labels
    })
}

/// Which proxy reports: the caller's (`source`) or the callee's
/// (`destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    Http,
    Grpc,
}

/// `connection_security_policy`: what the server side saw; the client side
/// says `unknown`, as Istio's dashboards expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    MutualTls,
    None,
    Unknown,
}

/// The full label set of a request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IstioLabels {
    pub reporter: Reporter,
    pub source: Arc<PeerLabels>,
    pub destination: Arc<PeerLabels>,
    pub service: Arc<ServiceLabels>,
    pub protocol: RequestProtocol,
    pub code: u16,
    /// The gRPC status, for gRPC requests that have one.
    pub grpc_status: Option<u16>,
    /// Envoy's response flags (`-` when none).
    pub flags: &'static str,
    pub security: SecurityPolicy,
}

impl IstioLabels {
    /// Calls `f` with each label's name and value, in Istio's order (the
    /// one encoding and tag overrides see).
    pub(crate) fn visit<E>(
        &self,
        f: &mut impl FnMut(&'static str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        f(
            "reporter",
            match self.reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
        )?;
        let s = &self.source;
        f("source_workload", &s.workload)?;
        f("source_canonical_service", &s.canonical_service)?;
        f("source_canonical_revision", &s.canonical_revision)?;
        f("source_workload_namespace", &s.namespace)?;
        f("source_principal", &s.principal)?;
        f("source_app", &s.app)?;
        f("source_version", &s.version)?;
        f("source_cluster", &s.cluster)?;
        let d = &self.destination;
        f("destination_workload", &d.workload)?;
        f("destination_workload_namespace", &d.namespace)?;
        f("destination_principal", &d.principal)?;
        f("destination_app", &d.app)?;
        f("destination_version", &d.version)?;
        f("destination_service", &self.service.host)?;
        f("destination_canonical_service", &d.canonical_service)?;
        f("destination_canonical_revision", &d.canonical_revision)?;
        f("destination_service_name", &self.service.name)?;
        f("destination_service_namespace", &self.service.namespace)?;
        f("destination_cluster", &d.cluster)?;
        f(
            "request_protocol",
            match self.protocol {
                RequestProtocol::Http => "http",
                RequestProtocol::Grpc => "grpc",
            },
        )?;
        let mut code = itoa::Buffer::new();
        f("response_code", code.format(self.code))?;
        let mut grpc = itoa::Buffer::new();
        f(
            "grpc_response_status",
            self.grpc_status.map_or("", |g| grpc.format(g)),
        )?;
        f("response_flags", self.flags)?;
        f(
            "connection_security_policy",
            match self.security {
                SecurityPolicy::MutualTls => "mutual_tls",
                SecurityPolicy::None => "none",
                SecurityPolicy::Unknown => "unknown",
            },
        )
    }
}

/// Writes one label of a label set.
fn encode_pair(encoder: &mut LabelSetEncoder<'_>, k: &str, v: &str) -> Result<(), std::fmt::Error> {
    let mut l = encoder.encode_label();
    let mut key = l.encode_label_key()?;
    key.write_str(k)?;
    let mut value = key.encode_label_value()?;
    value.write_str(v)?;
    value.finish()
}

impl EncodeLabelSet for IstioLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.visit(&mut |k, v| encode_pair(encoder, k, v))
    }
}

/// A request series by reference: what a recording passes (the owned
/// [`IstioLabels`] are built only when a thread first sees the series).
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub reporter: Reporter,
    pub source: &'a Arc<PeerLabels>,
    pub destination: &'a Arc<PeerLabels>,
    pub service: &'a Arc<ServiceLabels>,
    pub protocol: RequestProtocol,
    pub code: u16,
    pub grpc_status: Option<u16>,
    pub flags: &'static str,
    pub security: SecurityPolicy,
}

impl Series<'_> {
    fn owned(&self) -> IstioLabels {
        IstioLabels {
            reporter: self.reporter,
            source: self.source.clone(),
            destination: self.destination.clone(),
            service: self.service.clone(),
            protocol: self.protocol,
            code: self.code,
            grpc_status: self.grpc_status,
            flags: self.flags,
            security: self.security,
        }
    }
}

impl IstioLabels {
    /// This label set as a [`Series`].
    pub fn series(&self) -> Series<'_> {
        Series {
            reporter: self.reporter,
            source: &self.source,
            destination: &self.destination,
            service: &self.service,
            protocol: self.protocol,
            code: self.code,
            grpc_status: self.grpc_status,
            flags: self.flags,
            security: self.security,
        }
    }
}

/// The standard metrics' families, and the Telemetry policy they follow.
pub struct IstioMetrics {
    pub requests: Family<SeriesLabels, Counter>,
    pub duration: Family<SeriesLabels, Histogram>,
    pub request_bytes: Family<SeriesLabels, Histogram>,
    pub response_bytes: Family<SeriesLabels, Histogram>,
    /// gRPC messages the client sent and the server answered, for gRPC
    /// exchanges only.
    pub request_messages: Family<SeriesLabels, Counter>,
    pub response_messages: Family<SeriesLabels, Counter>,
    /// The local workload's Telemetry policy in force (shared with
    /// `Metrics::policy`); every metric on until one is set.
    pub policy: Arc<PolicyCell>,
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn envoy_histogram() -> Histogram {
    Histogram::new(ENVOY_BUCKETS)
}

/// `istio_build{component="proxy", tag=<version>}`: always 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabels {
    component: &'static str,
    tag: &'static str,
}

impl IstioMetrics {
    /// The families, registered in `registry` under Istio's names (no
    /// prefix), with `istio_build`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(envoy_histogram),
            request_bytes: Family::new_with_constructor(envoy_histogram),
            response_bytes: Family::new_with_constructor(envoy_histogram),
            request_messages: Family::default(),
            response_messages: Family::default(),
            policy: Arc::new(PolicyCell::default()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        };
        registry.register(
            "istio_requests",
            "Requests, reported by the source and the destination proxy",
            m.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from the request's arrival to the response's end, in milliseconds",
            m.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes, in bytes",
            m.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes, in bytes",
            m.response_bytes.clone(),
        );
        registry.register(
            "istio_request_messages",
            "gRPC messages sent by the client",
            m.request_messages.clone(),
        );
        registry.register(
            "istio_response_messages",
            "gRPC messages sent by the server",
            m.response_messages.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                component: "proxy",
                tag: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("istio_build", "The proxy's build", build);
        m
    }

    /// Puts `policy` in force for the recordings that follow; returns
    /// whether it differs from the one in force (an equal policy keeps the
    /// handles cached under it).
    pub fn set_policy(&self, policy: Arc<TelemetryPolicy>) -> bool {
        self.policy.set(policy)
    }

    /// Records one exchange: `millis` from arrival to end, the sizes when
    /// known; only the metrics the policy in force has on for the
    /// reporter's side, with their tag overrides.
    pub fn record(&self, labels: &Series<'_>, millis: f64, sizes: Option<(u64, u64)>) {
        self.record_with(labels, millis, sizes, None);
    }

    /// [`IstioMetrics::record`] for a gRPC exchange, with the messages
    /// each side sent (`istio_request_messages_total`,
    /// `istio_response_messages_total`; `labels.protocol` must be gRPC).
    pub fn record_grpc(
        &self,
        labels: &Series<'_>,
        millis: f64,
        sizes: Option<(u64, u64)>,
        messages: (u64, u64),
    ) {
        self.record_with(labels, millis, sizes, Some(messages));
    }

    fn record_with(
        &self,
        labels: &Series<'_>,
        millis: f64,
        sizes: Option<(u64, u64)>,
        messages: Option<(u64, u64)>,
    ) {
        let word = self.policy.word();
        let side = policy::side(labels.reporter);
        if !PolicyCell::records(word, side) {
            return;
        }
        let key = HandleKey {
            metrics: self.id,
            policy: word,
            source: Arc::as_ptr(labels.source) as usize,
            destination: Arc::as_ptr(labels.destination) as usize,
            service: Arc::as_ptr(labels.service) as usize,
            flags: labels.flags.as_ptr() as usize,
            code: labels.code,
            grpc: labels.grpc_status.map_or(u32::MAX, u32::from),
            small: (labels.reporter as u8)
                | ((labels.protocol as u8) << 2)
                | ((labels.security as u8) << 4),
        };
        HANDLES.with_borrow_mut(|cache| {
            // One hash on a hit; a miss hashes again to insert.
            if let Some(h) = cache.get(&key) {
                return h.record(millis, sizes, messages);
            }
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            let h = self.handles(labels.owned(), &self.policy.load(), side);
            h.record(millis, sizes, messages);
            cache.insert(key, h);
        });
    }

    /// The handles of `labels`' series under `policy`: none for a metric
    /// it turns off on `side`.
    fn handles(&self, labels: IstioLabels, policy: &LocalTelemetry, side: Side) -> Handles {
        let of = |metric| policy.labels(side, metric, &labels);
        let grpc = labels.protocol == RequestProtocol::Grpc;
        let messages = |metric, family: &Family<SeriesLabels, Counter>| {
            grpc.then(|| of(metric))
                .flatten()
                .map(|l| family.get_or_create(&l).clone())
        };
        Handles {
            request_messages: messages(StandardMetric::GrpcRequestMessages, &self.request_messages),
            response_messages: messages(
                StandardMetric::GrpcResponseMessages,
                &self.response_messages,
            ),
            requests: of(StandardMetric::RequestCount)
                .map(|l| self.requests.get_or_create(&l).clone()),
            duration: of(StandardMetric::RequestDuration)
                .map(|l| self.duration.get_or_create(&l).clone()),
            request_bytes: of(StandardMetric::RequestSize)
                .map(|l| self.request_bytes.get_or_create(&l).clone()),
            response_bytes: of(StandardMetric::ResponseSize)
                .map(|l| self.response_bytes.get_or_create(&l).clone()),
            _labels: labels,
        }
    }
}

/// A label set by the addresses of its shared parts, under one policy
/// (its [`PolicyCell`] word: generation and switches). Sound because the cached [`Handles`] keep those `Arc`s
/// alive (no address reuse); the flags are `&'static str`.
#[derive(PartialEq, Eq, Hash)]
struct HandleKey {
    metrics: u64,
    policy: u64,
    source: usize,
    destination: usize,
    service: usize,
    flags: usize,
    code: u16,
    grpc: u32,
    small: u8,
}

/// A series' handles; `None` for a metric the policy turns off.
struct Handles {
    _labels: IstioLabels,
    requests: Option<Counter>,
    duration: Option<Histogram>,
    request_bytes: Option<Histogram>,
    response_bytes: Option<Histogram>,
    /// gRPC series only.
    request_messages: Option<Counter>,
    response_messages: Option<Counter>,
}

impl Handles {
    fn record(&self, millis: f64, sizes: Option<(u64, u64)>, messages: Option<(u64, u64)>) {
        if let Some((req, resp)) = messages {
            if let Some(c) = &self.request_messages {
                c.inc_by(req);
            }
            if let Some(c) = &self.response_messages {
                c.inc_by(resp);
            }
        }
        if let Some(c) = &self.requests {
            c.inc();
        }
        if let Some(d) = &self.duration {
            d.observe(millis);
        }
        if let Some((req, resp)) = sizes {
            if let Some(b) = &self.request_bytes {
                b.observe(req as f64);
            }
            if let Some(b) = &self.response_bytes {
                b.observe(resp as f64);
            }
        }
    }
}

/// Entries beyond this are dropped wholesale (route tables come and go).
const CACHE_LIMIT: usize = 4096;

type DestinationCache = HashMap<
    (usize, bool, usize),
    (Arc<Endpoint>, Arc<str>, Arc<PeerLabels>),
    foldhash::fast::RandomState,
>;
type ServiceCache = HashMap<usize, (Arc<str>, Arc<ServiceLabels>), foldhash::fast::RandomState>;

thread_local! {
    // The cached values keep the keys' `Arc`s alive: no address reuse.
    static DESTINATIONS: RefCell<DestinationCache> = RefCell::new(HashMap::default());
    static SERVICES: RefCell<ServiceCache> = RefCell::new(HashMap::default());
    static HANDLES: RefCell<HashMap<HandleKey, Handles, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

#[cfg(test)]
mod tests;
