//! The outbound request path, in phase order:
//!
//! 1. load the routing in force (once; kept for the whole request)
//! 2. find the virtual host by authority, then the first matching route
//! 3. act: direct response, redirect, or forward:
//!    weighted split → cluster → balancer pick → rewrite + headers → upstream
//! 4. record metrics with the service, route and status code
//!
//! Every local reply goes through [`reply::local`] with a [`Reason`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{
    HeaderOps, Redirect, RequestInfo, Route, RouteAction, RouteHit, RouteMiss, StringMatch,
    WeightedCluster,
};
use http::header::{HOST, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::time::Instant;

use crate::balance::{InFlight, PickContext};
use crate::body::{ProxyBody, RequestBody};
use crate::h1::bridge::{self, BridgeError};
use crate::hop;
use crate::metrics::{Metrics, RequestLabels};
use crate::pool::{Pool, PoolSettings};
use crate::reply::{self, Reason};
use crate::router::{Router, Routing};

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// Handles requests of the outbound listener.
pub struct Proxy {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    /// Upstream connections: HTTP/1.1 keep-alive, or HTTP/2 prior knowledge
    /// for ports declared http2 or grpc.
    pool: Arc<Pool>,
}

/// What a request turned into, for metrics.
pub(crate) struct Outcome {
    pub resp: Response<ProxyBody>,
    pub service: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
}

impl Outcome {
    pub fn local(reason: Reason, msg: String) -> Self {
        Self {
            resp: reply::local(reason, msg),
            service: None,
            route: None,
        }
    }
}

impl Proxy {
    /// Must be called inside a Tokio runtime (the pool starts its reaper task).
    pub fn new(router: Arc<Router>, metrics: Arc<Metrics>, settings: &UpstreamSettings) -> Self {
        let pool = Pool::new(PoolSettings {
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.pool_idle_timeout,
            max_idle_per_endpoint: settings.pool_max_idle_per_host,
        });
        Self {
            router,
            metrics,
            pool,
        }
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Serves one request from a downstream peer: an HTTP/2 stream
    /// ([`crate::h2`]), or a request on an HTTP/1.1 connection handed over
    /// to hyper by [`crate::h1`].
    pub async fn handle(&self, req: Request<RequestBody>, peer: SocketAddr) -> Response<ProxyBody> {
        let start = Instant::now();
        let routing = self.router.current();
        let out = self.dispatch(req, peer, &routing).await;
        self.record(&out, start);
        out.resp
    }

    pub(crate) fn record(&self, out: &Outcome, start: Instant) {
        self.record_status(
            out.service.clone(),
            out.route.clone(),
            out.resp.status().as_u16(),
            start,
        );
    }

    /// Records a request served by the HTTP/1.1 fast path.
    pub(crate) fn record_status(
        &self,
        service: Option<Arc<str>>,
        route: Option<Arc<str>>,
        code: u16,
        start: Instant,
    ) {
        let labels = RequestLabels {
            service: service.unwrap_or_else(|| Arc::from("-")),
            route: route.unwrap_or_else(|| Arc::from("-")),
            code,
        };
        self.metrics.record(&labels, start.elapsed());
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    async fn dispatch(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        routing: &Routing,
    ) -> Outcome {
        let (mut parts, body) = req.into_parts();
        let plan = match plan(&parts, peer, routing) {
            Ok(p) => p,
            Err(out) => return *out,
        };
        let route_name = plan.hit.route.name.clone();
        let service = plan.target.cluster.service.as_arc().clone();
        let mut out = self.forward(&mut parts, body, plan).await;
        out.service = Some(service);
        out.route = Some(route_name);
        out
    }

    async fn forward(&self, parts: &mut Parts, body: RequestBody, plan: Plan<'_>) -> Outcome {
        if let Err(out) = prepare(parts, &plan) {
            return *out;
        }
        if !plan.h2 && body.is_end_stream() {
            return self.forward_bodiless(parts, plan).await;
        }
        // Boxed: hyper's client futures are large, and moving the request's
        // future (hyper boxes it, and awaits move it) copies all of it; the
        // bodiless path above stays small.
        Box::pin(self.forward_streaming(parts, body, plan)).await
    }

    /// Forwards a request with a body, or to an HTTP/2 upstream, with hyper's client.
    async fn forward_streaming(
        &self,
        parts: &mut Parts,
        body: RequestBody,
        plan: Plan<'_>,
    ) -> Outcome {
        let route = plan.hit.route;
        let cluster = &plan.target.cluster;
        let endpoint_authority = plan.endpoint;
        let upstream_req = Request::from_parts(std::mem::replace(parts, empty_parts()), body);
        let pool = &self.pool;
        let call = async {
            if plan.h2 {
                pool.send_h2(endpoint_authority, upstream_req)
                    .await
                    .map(|r| (r, None))
            } else {
                pool.send_h1(endpoint_authority, upstream_req)
                    .await
                    .map(|(r, c)| (r, Some(c)))
            }
        };
        // The route timeout runs from here to the end of the response body.
        let deadline = route.timeout.map(|t| Instant::now() + t);
        let result = match route.timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => return Outcome::local(Reason::Timeout, plan.timeout_message()),
            },
            None => call.await,
        };
        let (resp, conn) = match result {
            Ok(r) => r,
            Err(e) => {
                let reason = if e.is_connect() {
                    Reason::UpstreamConnect
                } else {
                    Reason::UpstreamError
                };
                tracing::debug!(endpoint = %endpoint_authority, cluster = %cluster.name, error = %e, "upstream request failed");
                return Outcome::local(reason, plan.failure_message(&error_chain(&e)));
            }
        };
        let (mut parts, body) = resp.into_parts();
        let guard = plan.finish_response(&mut parts.headers);
        Outcome {
            resp: Response::from_parts(parts, ProxyBody::upstream(body, guard, conn, deadline)),
            service: None,
            route: None,
        }
    }
}

/// What a request without a body from an HTTP/2 client turned into.
pub(crate) enum Reply {
    /// A response as [`Proxy::handle`] gives it.
    Response(Response<ProxyBody>),
    /// An HTTP/1.1 upstream's answer: the response head, already encoded for
    /// the client as an HPACK header block, and the body still to be read
    /// from the upstream connection.
    Raw {
        block: bytes::BytesMut,
        body: Box<bridge::RawBody>,
    },
}

impl Proxy {
    /// Serves a request without a body from an HTTP/2 client, as
    /// [`Proxy::handle`] does; when it goes to an HTTP/1.1 upstream, the
    /// upstream's response head is encoded for the client straight from the
    /// received bytes, without a `HeaderMap`.
    pub(crate) async fn handle_bodiless(&self, mut parts: Parts, peer: SocketAddr) -> Reply {
        let start = Instant::now();
        let routing = self.router.current();
        let plan = match plan(&parts, peer, &routing) {
            Ok(p) => p,
            Err(out) => {
                self.record(&out, start);
                return Reply::Response(out.resp);
            }
        };
        if plan.h2 {
            let service = plan.service();
            let route = plan.hit.route.name.clone();
            let mut out = Box::pin(self.forward(&mut parts, RequestBody::Empty, plan)).await;
            out.service = Some(service);
            out.route = Some(route);
            self.record(&out, start);
            return Reply::Response(out.resp);
        }
        let local = |mut out: Outcome, plan: &Plan<'_>| {
            plan.label(&mut out);
            self.record(&out, start);
            Reply::Response(out.resp)
        };
        if let Err(out) = prepare(&mut parts, &plan) {
            return local(*out, &plan);
        }
        let route = plan.hit.route;
        let deadline = route.timeout.map(|t| start + t);
        let call = bridge::exchange_bodiless(self, &plan, &parts);
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, call).await {
                Ok(r) => r,
                Err(_) => {
                    let out = Outcome::local(Reason::Timeout, plan.timeout_message());
                    return local(out, &plan);
                }
            },
            None => call.await,
        };
        let (conn, rbuf, head) = match result {
            Ok(r) => r,
            Err(e) => return local(plan.bridge_failure(e), &plan),
        };
        let ops = [&plan.target.response_headers, &route.response_headers];
        let ops: &[&HeaderOps] = if ops.iter().all(|o| o.is_empty()) {
            &[]
        } else {
            &ops
        };
        let cookie = plan.set_cookie.as_ref().map(|c| (&SET_COOKIE, c));
        let block = crate::h2::encode_proxied_head(&head, ops, cookie);
        let mut body = bridge::RawBody::new(conn, rbuf, &head, self.pool.clone(), deadline);
        let (service, route_name) = (plan.service(), route.name.clone());
        body.hold(plan.guard);
        self.record_status(Some(service), Some(route_name), head.status.as_u16(), start);
        Reply::Raw {
            block,
            body: Box::new(body),
        }
    }

    /// Forwards a request without a body to an HTTP/1.1 upstream over the
    /// raw connection pool ([`crate::h1::bridge`]).
    async fn forward_bodiless(&self, parts: &Parts, plan: Plan<'_>) -> Outcome {
        let route = plan.hit.route;
        let deadline = route.timeout.map(|t| Instant::now() + t);
        let call = bridge::send_bodiless(self, &plan, parts, deadline);
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, call).await {
                Ok(r) => r,
                Err(_) => return Outcome::local(Reason::Timeout, plan.timeout_message()),
            },
            None => call.await,
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => return plan.bridge_failure(e),
        };
        let (mut parts, mut body) = resp.into_parts();
        body.hold(plan.finish_response(&mut parts.headers));
        Outcome {
            resp: Response::from_parts(
                parts,
                ProxyBody::Raw {
                    body: Box::new(body),
                },
            ),
            service: None,
            route: None,
        }
    }
}

/// A request the routing sends upstream: its route, split target and picked endpoint.
pub(crate) struct Plan<'r> {
    pub hit: RouteHit<'r>,
    pub target: &'r WeightedCluster,
    /// The endpoint's `host:port`.
    pub endpoint: &'r str,
    /// The upstream speaks HTTP/2 (prior knowledge).
    pub h2: bool,
    /// Counts the request as in flight to the endpoint until dropped.
    pub guard: InFlight,
    pub set_cookie: Option<HeaderValue>,
}

impl Plan<'_> {
    pub fn timeout_message(&self) -> String {
        format!(
            "upstream {} ({}) did not answer within the route timeout of {:?} (route {})",
            self.target.cluster.service,
            self.endpoint,
            self.hit.route.timeout.unwrap_or_default(),
            self.hit.route.name
        )
    }

    pub fn failure_message(&self, error: &str) -> String {
        format!(
            "upstream {} ({}) failed: {error}",
            self.target.cluster.service, self.endpoint
        )
    }

    /// The local reply for an exchange on the raw pool that failed before
    /// the response head.
    fn bridge_failure(&self, e: BridgeError) -> Outcome {
        let (reason, msg) = match e {
            BridgeError::Connect(m) => (Reason::UpstreamConnect, m),
            BridgeError::Upstream(m) => (Reason::UpstreamError, m),
        };
        tracing::debug!(endpoint = %self.endpoint, cluster = %self.target.cluster.name, error = %msg, "upstream request failed");
        Outcome::local(reason, self.failure_message(&msg))
    }

    /// Labels a finished exchange for metrics.
    pub fn label(&self, out: &mut Outcome) {
        out.service = Some(self.service());
        out.route = Some(self.hit.route.name.clone());
    }

    pub fn service(&self) -> Arc<str> {
        self.target.cluster.service.as_arc().clone()
    }

    /// Applies the route's response header operations (and the session
    /// cookie) to an upstream response; returns the in-flight guard, which
    /// the response body keeps until it ends.
    fn finish_response(self, headers: &mut http::HeaderMap) -> InFlight {
        finish_response_headers(headers, self.hit.route, self.target, self.set_cookie);
        self.guard
    }
}

fn empty_parts() -> Parts {
    Request::new(()).into_parts().0
}

/// Routes a request head: a plan to forward it, or the local reply it gets
/// (no route, direct response, redirect, no endpoint, bad request).
pub(crate) fn plan<'r>(
    parts: &Parts,
    peer: SocketAddr,
    routing: &'r Routing,
) -> Result<Plan<'r>, Box<Outcome>> {
    let local = |reason, msg: String| Box::new(Outcome::local(reason, msg));
    let authority = request_authority(&parts.uri, &parts.headers)
        .map_err(|why| local(Reason::BadRequest, why.into()))?;
    if let Some(why) = unsupported(&parts.method, &parts.headers) {
        return Err(local(Reason::Unsupported, why.into()));
    }
    let info = RequestInfo {
        method: parts.method.as_str(),
        authority,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let hit = match routing.table.route(&info) {
        Ok(hit) => hit,
        Err(RouteMiss::NoVirtualHost) if !routing.synced => {
            return Err(local(
                Reason::NotReady,
                format!(
                    "not ready: registries have not all answered yet, so host {authority:?} is not known"
                ),
            ))
        }
        Err(RouteMiss::NoVirtualHost) => {
            return Err(local(
                Reason::NoRoute,
                format!("no route for host {authority:?}: no service or VirtualService has this host"),
            ))
        }
        Err(RouteMiss::NoRoute) => {
            let vh = routing
                .table
                .virtual_host(authority)
                .map(|v| v.name.as_str())
                .unwrap_or("?");
            return Err(local(
                Reason::NoRouteMatch,
                format!(
                    "no route of {vh} matches {} {} on host {authority:?}",
                    parts.method,
                    parts.uri.path()
                ),
            ));
        }
    };
    let routed = |mut out: Outcome| {
        out.route = Some(hit.route.name.clone());
        Box::new(out)
    };
    let split = match &hit.route.action {
        RouteAction::DirectResponse(d) => {
            let mut resp = Response::new(ProxyBody::local(d.body.clone().unwrap_or_default()));
            *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
            return Err(routed(Outcome {
                resp,
                service: None,
                route: None,
            }));
        }
        RouteAction::Redirect(r) => {
            return Err(routed(Outcome {
                resp: redirect(r, authority, &parts.uri),
                service: None,
                route: None,
            }))
        }
        RouteAction::Forward(split) => split,
    };
    let target = if split.targets.len() == 1 || split.total_weight == 0 {
        split.targets.first()
    } else {
        // The thread's fast RNG: a route's split needs no cryptographic draw.
        let point = crate::balance::random_below(u64::from(split.total_weight));
        split.pick(u32::try_from(point).unwrap_or_default())
    };
    let Some(target) = target else {
        return Err(routed(Outcome::local(
            Reason::NoHealthyEndpoint,
            format!("route {} has no destination", hit.route.name),
        )));
    };
    let cluster = &target.cluster;
    let ctx = PickContext {
        headers: &parts.headers,
        query: parts.uri.query(),
        source_ip: Some(peer.ip()),
    };
    let Some(picked) = routing.lb(cluster).and_then(|lb| lb.pick(&ctx)) else {
        let mut out = Outcome::local(
            Reason::NoHealthyEndpoint,
            no_endpoint_message(hit.route, cluster),
        );
        out.service = Some(cluster.service.as_arc().clone());
        return Err(routed(out));
    };
    Ok(Plan {
        hit,
        target,
        endpoint: picked.endpoint.authority.as_str(),
        h2: cluster.port.protocol.is_h2(),
        guard: picked.guard,
        set_cookie: picked.set_cookie,
    })
}

/// Turns the downstream request head into the upstream one: hop-by-hop
/// fields removed, route header operations applied, URI rewritten, and the
/// authority carried as `Host` (HTTP/1.1) or `:authority` (HTTP/2).
pub(crate) fn prepare(parts: &mut Parts, plan: &Plan<'_>) -> Result<(), Box<Outcome>> {
    let route = plan.hit.route;
    let h2 = plan.h2;
    hop::strip(&mut parts.headers, h2);
    if !h2 && parts.version == Version::HTTP_2 {
        hop::join_cookies(&mut parts.headers);
    }
    route.request_headers.apply(&mut parts.headers);
    plan.target.request_headers.apply(&mut parts.headers);

    let bad = |msg: String| Box::new(Outcome::local(Reason::BadRequest, msg));
    let path_and_query = rewritten_path(route, plan.hit.matched, &parts.uri).map_err(bad)?;
    let rewrite = route.rewrite.as_ref().and_then(|r| r.authority.as_deref());
    if h2 {
        // :authority carries the service (or rewritten) name; the pool
        // connects to the endpoint's address.
        let authority = match rewrite {
            Some(a) => Authority::try_from(a).map_err(|e| format!("rewrite authority {a:?}: {e}")),
            None => match parts.uri.authority() {
                Some(a) => Ok(a.clone()),
                None => parts
                    .headers
                    .get(HOST)
                    .ok_or_else(|| "no authority".to_string())
                    .and_then(|h| {
                        Authority::try_from(h.as_bytes()).map_err(|e| format!("Host header: {e}"))
                    }),
            },
        };
        let uri = authority.and_then(|a| {
            Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(a)
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| e.to_string())
        });
        parts.uri = uri.map_err(|e| bad(format!("invalid authority: {e}")))?;
        parts.version = Version::HTTP_2;
        parts.headers.remove(HOST);
    } else {
        // Host: the rewrite, else the request URI's authority (absolute
        // form, HTTP/2); otherwise the request's own Host header stays.
        let host = rewrite.or_else(|| parts.uri.authority().map(|a| a.as_str()));
        if let Some(host) = host {
            let v = HeaderValue::from_str(host)
                .map_err(|_| bad(format!("invalid authority {host:?}")))?;
            parts.headers.insert(HOST, v);
        }
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
    }
    Ok(())
}

/// The upstream's response fields as the client gets them.
pub(crate) fn finish_response_headers(
    headers: &mut http::HeaderMap,
    route: &Route,
    target: &WeightedCluster,
    set_cookie: Option<HeaderValue>,
) {
    hop::strip(headers, false);
    target.response_headers.apply(headers);
    route.response_headers.apply(headers);
    if let Some(cookie) = set_cookie {
        headers.append(SET_COOKIE, cookie);
    }
}

/// The authority a request is for: the absolute URI's (proxy-style or HTTP/2
/// `:authority`), else the `Host` header (exactly one, RFC 9112 §3.2).
pub(crate) fn request_authority<'a>(
    uri: &'a Uri,
    headers: &'a http::HeaderMap,
) -> Result<&'a str, &'static str> {
    if let Some(a) = uri.authority() {
        if a.as_str().contains('@') {
            // Never echo credentials back in a local reply.
            return Err("credentials in the request URI are not accepted");
        }
        return Ok(a.as_str());
    }
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts
        .next()
        .ok_or("request has no Host header or authority")?;
    if hosts.next().is_some() {
        return Err("request has more than one Host header");
    }
    match host.to_str() {
        Ok(h) if !h.is_empty() && !h.contains('@') => Ok(h),
        _ => Err("request has an invalid Host header"),
    }
}

/// Requests the outbound listener cannot serve, and why.
fn unsupported(method: &http::Method, headers: &http::HeaderMap) -> Option<&'static str> {
    if method == http::Method::CONNECT {
        return Some(
            "CONNECT is not supported: send plain HTTP requests for http://<service>/ to this listener",
        );
    }
    let upgrade = headers.get(http::header::UPGRADE)?;
    // An h2c upgrade offer may be ignored (RFC 9110 §7.8); anything else would break.
    if upgrade.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    Some("protocol upgrades (e.g. WebSocket) are not supported yet")
}

/// Applies the route's URI rewrite: a prefix match has its prefix replaced,
/// any other match the whole path. The query string is kept.
fn rewritten_path(
    route: &Route,
    matched: Option<usize>,
    uri: &Uri,
) -> Result<PathAndQuery, String> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Some(new) = route.rewrite.as_ref().and_then(|r| r.uri.as_deref()) else {
        return Ok(original);
    };
    let path = uri.path();
    let m = matched.and_then(|i| route.matches.get(i));
    // Istio treats a route without a uri match as `prefix: /`.
    let rest = match m.and_then(|m| m.uri.as_ref()) {
        Some(StringMatch::Prefix(p)) => path.get(p.len()..).unwrap_or(""),
        Some(_) => "",
        None => path.get(1..).unwrap_or(""),
    };
    let mut s = String::with_capacity(new.len() + rest.len() + 16);
    s.push_str(new);
    // "/v1" + "/x" or "/" + "x": avoid a doubled or missing slash at the seam.
    if s.ends_with('/') && rest.starts_with('/') {
        s.pop();
    }
    s.push_str(rest);
    if s.is_empty() {
        s.push('/');
    }
    if let Some(q) = uri.query() {
        s.push('?');
        s.push_str(q);
    }
    PathAndQuery::try_from(s).map_err(|e| format!("rewritten URI is invalid: {e}"))
}

fn redirect(r: &Redirect, authority: &str, uri: &Uri) -> Response<ProxyBody> {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let mut host = r.authority.clone().unwrap_or_else(|| authority.to_string());
    if let Some(port) = r.port {
        host = format!("{}:{port}", host_without_port(&host));
    }
    let path = match (&r.uri, uri.query()) {
        // A query in the redirect URI replaces the request's; otherwise the request's is kept.
        (Some(u), Some(q)) if !u.contains('?') => format!("{u}?{q}"),
        (Some(u), _) => u.clone(),
        (None, _) => uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
    };
    let location = format!("{scheme}://{host}{path}");
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// `host` of `host:port` or `[v6]:port` (brackets kept).
fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn no_endpoint_message(route: &Route, cluster: &anymesh_core::routes::Cluster) -> String {
    let mut msg = format!(
        "no healthy endpoint for {} port {}{} (route {})",
        cluster.service,
        cluster.port.number,
        cluster
            .subset
            .as_deref()
            .map(|s| format!(" subset {s}"))
            .unwrap_or_default(),
        route.name
    );
    if cluster.excluded.is_empty() {
        msg.push_str(": the service has no endpoints");
    } else {
        msg.push_str(&format!(": {} excluded", cluster.excluded.len()));
        for e in cluster.excluded.iter().take(3) {
            msg.push_str(&format!("; {} {}", e.address, e.reason));
        }
    }
    msg
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod future_sizes {
    //! Every request's future is boxed (hyper boxes the service future; the
    //! HTTP/1.1 path boxes each exchange) and moved while awaited, so its
    //! size is copied per request. Rare paths (connecting, streaming bodies,
    //! local replies, hyper's client) are boxed separately to keep it small.
    #![allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    use super::*;
    use crate::h1;
    use bytes::BytesMut;
    use tokio::net::TcpStream;
    use tokio::sync::watch;

    /// The size of the future a closure would return; the closure never runs.
    fn size<Fut>(_: impl FnOnce() -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn hot_path_futures_stay_small() {
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let exchange = size(|| {
            let (c, b): (&mut TcpStream, &mut BytesMut) = unreachable!();
            let (sh, st): (&h1::Shared, &watch::Receiver<bool>) = unreachable!();
            h1::exchange(c, b, peer, sh, true, st)
        });
        let handle = size(|| {
            let (p, r): (&Proxy, Request<RequestBody>) = unreachable!();
            p.handle(r, peer)
        });
        let bodiless = size(|| {
            let (p, parts): (&Proxy, Parts) = unreachable!();
            p.handle_bodiless(parts, peer)
        });
        let raw = size(|| {
            let p: &Pool = unreachable!();
            p.raw("x")
        });
        let connection = size(|| {
            let (c, sh, st): (TcpStream, Arc<h1::Shared>, watch::Receiver<bool>) = unreachable!();
            h1::serve_connection(c, peer, sh, st)
        });
        eprintln!("future sizes: exchange {exchange}, handle {handle}, HTTP/2 bodiless {bodiless}, pool.raw {raw}, connection {connection}");
        // Measured 2200, 1968 and 88 bytes (3104, 3456 and 432 before the rare paths were boxed).
        assert!(
            exchange <= 2560,
            "HTTP/1.1 exchange future: {exchange} bytes"
        );
        assert!(
            handle <= 2304,
            "hyper-served request future: {handle} bytes"
        );
        // Boxed once per HTTP/2 stream: measured 1,080 bytes.
        assert!(
            bodiless <= 1280,
            "HTTP/2 bodiless request future: {bodiless} bytes"
        );
        assert!(raw <= 128, "pool checkout future: {raw} bytes");
        // Every connection's task holds this for the connection's life, idle
        // or not: measured 664 bytes (2,256 with hyper's hand-over inline).
        assert!(
            connection <= 768,
            "HTTP/1.1 connection future: {connection} bytes"
        );
    }
}
