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
    Redirect, RequestInfo, Route, RouteAction, RouteHit, RouteMiss, StringMatch, WeightedCluster,
};
use http::header::{HOST, LOCATION, SET_COOKIE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use rand::Rng;
use tokio::time::Instant;

use crate::balance::PickContext;
use crate::body::ProxyBody;
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
struct Outcome {
    resp: Response<ProxyBody>,
    service: Option<Arc<str>>,
    route: Option<Arc<str>>,
}

impl Outcome {
    fn local(reason: Reason, msg: String) -> Self {
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

    /// Serves one request from a downstream peer.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let start = Instant::now();
        let routing = self.router.current();
        let out = self.dispatch(req, peer, &routing).await;
        let labels = RequestLabels {
            service: out.service.unwrap_or_else(|| Arc::from("-")),
            route: out.route.unwrap_or_else(|| Arc::from("-")),
            code: out.resp.status().as_u16(),
        };
        self.metrics.record(&labels, start.elapsed());
        out.resp
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        routing: &Routing,
    ) -> Outcome {
        let authority = match request_authority(&req) {
            Ok(a) => a,
            Err(why) => return Outcome::local(Reason::BadRequest, why.into()),
        };
        if let Some(why) = unsupported(&req) {
            return Outcome::local(Reason::Unsupported, why.into());
        }
        let info = RequestInfo {
            method: req.method().as_str(),
            authority,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
        };
        let hit = match routing.table.route(&info) {
            Ok(hit) => hit,
            Err(RouteMiss::NoVirtualHost) if !routing.synced => {
                return Outcome::local(
                    Reason::NotReady,
                    format!(
                        "not ready: registries have not all answered yet, so host {authority:?} is not known"
                    ),
                )
            }
            Err(RouteMiss::NoVirtualHost) => {
                return Outcome::local(
                    Reason::NoRoute,
                    format!(
                    "no route for host {authority:?}: no service or VirtualService has this host"
                ),
                )
            }
            Err(RouteMiss::NoRoute) => {
                let vh = routing
                    .table
                    .virtual_host(authority)
                    .map(|v| v.name.as_str())
                    .unwrap_or("?");
                return Outcome::local(
                    Reason::NoRouteMatch,
                    format!(
                        "no route of {vh} matches {} {} on host {authority:?}",
                        req.method(),
                        req.uri().path()
                    ),
                );
            }
        };
        let route_name = hit.route.name.clone();
        let mut out = match &hit.route.action {
            RouteAction::DirectResponse(d) => {
                let mut resp = Response::new(ProxyBody::local(d.body.clone().unwrap_or_default()));
                *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
                Outcome {
                    resp,
                    service: None,
                    route: None,
                }
            }
            RouteAction::Redirect(r) => Outcome {
                resp: redirect(r, authority, req.uri()),
                service: None,
                route: None,
            },
            RouteAction::Forward(split) => {
                let target = if split.targets.len() == 1 || split.total_weight == 0 {
                    split.targets.first()
                } else {
                    split.pick(rand::rng().random_range(0..split.total_weight))
                };
                match target {
                    Some(target) => {
                        let service = target.cluster.service.as_arc().clone();
                        let mut out = self.forward(req, peer, routing, hit, target).await;
                        out.service = Some(service);
                        out
                    }
                    None => Outcome::local(
                        Reason::NoHealthyEndpoint,
                        format!("route {} has no destination", hit.route.name),
                    ),
                }
            }
        };
        out.route = Some(route_name);
        out
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        routing: &Routing,
        hit: RouteHit<'_>,
        target: &WeightedCluster,
    ) -> Outcome {
        let route = hit.route;
        let cluster = &target.cluster;
        let ctx = PickContext {
            headers: req.headers(),
            query: req.uri().query(),
            source_ip: Some(peer.ip()),
        };
        let picked = routing.lb(cluster).and_then(|lb| lb.pick(&ctx));
        let Some(picked) = picked else {
            return Outcome::local(
                Reason::NoHealthyEndpoint,
                no_endpoint_message(route, cluster),
            );
        };
        let endpoint_authority = picked.endpoint.authority.as_str();
        let set_cookie = picked.set_cookie;
        let guard = picked.guard;

        let (mut parts, body) = req.into_parts();
        let h2 = cluster.port.protocol.is_h2();
        hop::strip(&mut parts.headers, h2);
        if !h2 && parts.version == Version::HTTP_2 {
            hop::join_cookies(&mut parts.headers);
        }
        route.request_headers.apply(&mut parts.headers);
        target.request_headers.apply(&mut parts.headers);

        let path_and_query = match rewritten_path(route, hit.matched, &parts.uri) {
            Ok(pq) => pq,
            Err(msg) => return Outcome::local(Reason::BadRequest, msg),
        };
        let rewrite = route.rewrite.as_ref().and_then(|r| r.authority.as_deref());
        if h2 {
            // :authority carries the service (or rewritten) name; the pool
            // connects to the endpoint's address.
            let authority = match rewrite {
                Some(a) => {
                    Authority::try_from(a).map_err(|e| format!("rewrite authority {a:?}: {e}"))
                }
                None => match parts.uri.authority() {
                    Some(a) => Ok(a.clone()),
                    None => parts
                        .headers
                        .get(HOST)
                        .ok_or_else(|| "no authority".to_string())
                        .and_then(|h| {
                            Authority::try_from(h.as_bytes())
                                .map_err(|e| format!("Host header: {e}"))
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
            match uri {
                Ok(u) => parts.uri = u,
                Err(e) => {
                    return Outcome::local(Reason::BadRequest, format!("invalid authority: {e}"))
                }
            }
            parts.version = Version::HTTP_2;
            parts.headers.remove(HOST);
        } else {
            // Host: the rewrite, else the request URI's authority (absolute
            // form, HTTP/2); otherwise the request's own Host header stays.
            let host = rewrite.or_else(|| parts.uri.authority().map(|a| a.as_str()));
            if let Some(host) = host {
                match HeaderValue::from_str(host) {
                    Ok(v) => {
                        parts.headers.insert(HOST, v);
                    }
                    Err(_) => {
                        return Outcome::local(
                            Reason::BadRequest,
                            format!("invalid authority {host:?}"),
                        )
                    }
                }
            }
            parts.uri = Uri::from(path_and_query);
            parts.version = Version::HTTP_11;
        }
        let upstream_req = Request::from_parts(parts, body);
        let pool = &self.pool;
        let call = async {
            if h2 {
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
                Err(_) => {
                    return Outcome::local(
                        Reason::Timeout,
                        format!(
                            "upstream {} ({endpoint_authority}) did not answer within the route timeout of {:?} (route {})",
                            cluster.service, t, route.name
                        ),
                    )
                }
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
                return Outcome::local(
                    reason,
                    format!(
                        "upstream {} ({endpoint_authority}) failed: {}",
                        cluster.service,
                        error_chain(&e)
                    ),
                );
            }
        };
        let (mut parts, body) = resp.into_parts();
        hop::strip(&mut parts.headers, false);
        target.response_headers.apply(&mut parts.headers);
        route.response_headers.apply(&mut parts.headers);
        if let Some(cookie) = set_cookie {
            parts.headers.append(SET_COOKIE, cookie);
        }
        Outcome {
            resp: Response::from_parts(parts, ProxyBody::upstream(body, guard, conn, deadline)),
            service: None,
            route: None,
        }
    }
}

/// The authority a request is for: the absolute URI's (proxy-style or HTTP/2
/// `:authority`), else the `Host` header (exactly one, RFC 9112 §3.2).
fn request_authority<B>(req: &Request<B>) -> Result<&str, &'static str> {
    if let Some(a) = req.uri().authority() {
        if a.as_str().contains('@') {
            // Never echo credentials back in a local reply.
            return Err("credentials in the request URI are not accepted");
        }
        return Ok(a.as_str());
    }
    let mut hosts = req.headers().get_all(HOST).iter();
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
fn unsupported<B>(req: &Request<B>) -> Option<&'static str> {
    if req.method() == http::Method::CONNECT {
        return Some(
            "CONNECT is not supported: send plain HTTP requests for http://<service>/ to this listener",
        );
    }
    let upgrade = req.headers().get(http::header::UPGRADE)?;
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
