//! Routing a request head: from the routing snapshot to a [`Plan`] (route,
//! split target, picked endpoint) or the local reply the request gets; and
//! turning the downstream head into the upstream one ([`prepare`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::{
    ClusterEndpoint, LbPolicy, Redirect, RequestInfo, Route, RouteAction, RouteHit, RouteMiss,
    StringMatch, WeightedCluster,
};
use http::header::{HOST, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Response, StatusCode, Uri, Version};

use super::{fault, Outcome};
use crate::balance::{ClusterLb, PickContext};
use crate::body::response::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::hooks::Hooks;
use crate::hop;
use crate::resilience::breaker::Overflow;
use crate::resilience::outlier::AttemptOutcome;
use crate::resilience::runtime::ClusterRuntime;
use crate::router::Routing;
use crate::service::Peer;
use crate::upstream::held::Held;

/// A request the routing sends upstream: its route, split target and picked endpoint.
pub(crate) struct Plan<'r> {
    pub hit: RouteHit<'r>,
    pub target: &'r WeightedCluster,
    /// The picked endpoint (`authority` is its `host:port`).
    pub endpoint: &'r ClusterEndpoint,
    /// Its index in the cluster (for outlier reports and re-picks).
    pub index: usize,
    /// The upstream speaks HTTP/2 (prior knowledge).
    pub h2: bool,
    /// Counts the request as in flight to the endpoint (and active in its
    /// cluster's budget and limits) until dropped.
    pub guard: Held,
    /// The cluster's retry budget and connection-pool limits.
    pub runtime: &'r ClusterRuntime,
    /// Boxed: rare (cookie hashing with a ttl), and the plan stays small.
    pub set_cookie: Option<Box<HeaderValue>>,
    /// An injected delay (`fault.delay`) to wait before forwarding, in
    /// whole milliseconds (kept small: the plan is in every request's future).
    delay_ms: Option<NonZeroU32>,
    /// The cluster's balancer, for retries' re-picks.
    pub lb: &'r ClusterLb,
}

impl Plan<'_> {
    /// The injected delay to wait before forwarding, if one was drawn.
    pub(crate) fn delay(&self) -> Option<Duration> {
        self.delay_ms
            .map(|ms| Duration::from_millis(u64::from(ms.get())))
    }

    /// Picks the endpoint of a retry: with `avoid_previous`, one other than
    /// the last one tried when the cluster has another available. The
    /// previous pick's in-flight count ends here.
    /// With `remote`, away from the localities tried too
    /// (`retryRemoteLocalities`).
    pub(crate) fn repick(&mut self, ctx: &PickContext<'_>, tried: &[usize], remote: bool) {
        let picked = if remote {
            self.lb.pick_remote(ctx, tried)
        } else {
            self.lb.pick_excluding(ctx, tried)
        };
        if let Some(p) = picked {
            self.endpoint = p.endpoint;
            self.index = p.index;
            self.guard.in_flight = p.guard;
        }
    }

    /// Admits the request under the cluster's connection-pool limits
    /// (circuit breakers): at once when none apply, else perhaps after
    /// waiting for a connection; an overflow is the request's answer.
    pub(crate) async fn admit(&mut self) -> Result<(), ProxyError> {
        if self.runtime.limits.is_unlimited() {
            return Ok(());
        }
        // Decided at once unless the request waits for a connection (the
        // admission future is small; it allocates only to wait).
        match self.runtime.limits.admit().await {
            Ok(admitted) => {
                self.guard.admitted = Some(admitted);
                Ok(())
            }
            Err(limit) => Err(self.overflow(limit)),
        }
    }

    /// The error of a request or retry a connection-pool limit refused.
    pub(crate) fn overflow(&self, limit: Overflow) -> ProxyError {
        ProxyError::new(
            ErrorKind::Overflow,
            format!(
                "upstream {} overflow: {limit} (cluster {}; limits are per cluster per proxy)",
                self.target.cluster.service, self.target.cluster.name
            ),
        )
    }

    /// Reports how an attempt to the current endpoint ended, to outlier
    /// detection and the latency EWMA.
    pub(crate) fn report(&self, outcome: AttemptOutcome) {
        self.lb.report(self.index, outcome);
    }

    /// Whether the balancer wants attempts' latencies (peak EWMA).
    pub(crate) fn wants_latency(&self) -> bool {
        self.target.cluster.lb == LbPolicy::PeakEwma
    }

    /// When the route timeout ends an exchange that started at `start`.
    pub(crate) fn deadline(&self, start: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.hit.route.timeout.map(|t| start + t)
    }

    pub(crate) fn timeout_message(&self) -> String {
        format!(
            "upstream {} ({}) did not answer within the route timeout of {:?} (route {})",
            self.target.cluster.service,
            self.endpoint.authority,
            self.hit.route.timeout.unwrap_or_default(),
            self.hit.route.name
        )
    }

    pub(crate) fn failure_message(&self, error: &str) -> String {
        format!(
            "upstream {} ({}) failed: {error}",
            self.target.cluster.service, self.endpoint.authority
        )
    }

    /// The local reply for an upstream exchange that failed before the
    /// response head, labelled with the route and service.
    pub(crate) fn failed(&self, e: &ProxyError) -> Outcome {
        let msg = match e.kind() {
            ErrorKind::Timeout if e.detail().is_empty() => self.timeout_message(),
            ErrorKind::Timeout => self.failure_message(e.detail()),
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamClosed
            | ErrorKind::UpstreamProtocol => self.failure_message(e.detail()),
            // Already names the service and the limit.
            ErrorKind::Overflow => e.detail().to_string(),
            _ => e.detail().to_string(),
        };
        tracing::debug!(endpoint = %self.endpoint.authority, cluster = %self.target.cluster.name, error = %e, kind = ?e.kind(), source = ?e.source(), "upstream request failed");
        let mut out = Outcome::local(e.kind(), msg);
        self.label(&mut out);
        out
    }

    /// Labels a finished exchange for metrics.
    pub(crate) fn label(&self, out: &mut Outcome) {
        out.cluster = Some(self.target.cluster.clone());
        out.route = Some(self.hit.route.name.clone());
        out.dest = Some(self.dest());
    }

    /// The endpoint picked, and whether it is reached with mutual TLS.
    pub(crate) fn dest(&self) -> (Arc<anymesh_core::model::Endpoint>, bool) {
        (
            self.endpoint.endpoint.clone(),
            self.endpoint.mesh().is_some(),
        )
    }

    /// Applies the route's response header operations (and the session
    /// cookie) to an upstream response; returns the in-flight guard, which
    /// the response body keeps until it ends.
    pub(crate) fn finish_response(self, headers: &mut http::HeaderMap) -> Held {
        finish_response_headers(
            headers,
            self.hit.route,
            self.target,
            self.set_cookie.map(|c| *c),
        );
        self.guard
    }
}

/// Routes a request head: a plan to forward it, or the local reply it gets
/// (no route, direct response, redirect, no endpoint, bad request).
pub(crate) fn plan<'r>(
    parts: &mut Parts,
    peer: &Peer,
    routing: &'r Routing,
    hooks: &Hooks,
) -> Result<Plan<'r>, Box<Outcome>> {
    let local = |reason, msg: String| Box::new(Outcome::local(reason, msg));
    if let Some(conn) = &peer.inbound {
        take_peer_metadata(&mut parts.headers, conn);
        if let Err(refused) = super::authorize::check(parts, peer, conn) {
            return Err(local(refused.kind, refused.body));
        }
    }
    let authority = request_authority(&parts.uri, &parts.headers)
        .map_err(|why| local(ErrorKind::BadRequest, why.into()))?;
    if let Some(why) = unsupported(&parts.method, &parts.headers) {
        return Err(local(ErrorKind::Unsupported, why.into()));
    }
    // On the inbound listener, the connection says which local workload
    // port (virtual host) the request is for; the Host stays as sent.
    let route_authority = match &peer.inbound {
        Some(conn) => &*conn.route_key,
        None => authority,
    };
    let info = RequestInfo {
        method: parts.method.as_str(),
        authority: route_authority,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let hit = match routing.table.route(&info) {
        Ok(hit) => hit,
        Err(RouteMiss::NoVirtualHost) if !routing.synced => {
            return Err(local(
                ErrorKind::NotReady,
                format!(
                    "not ready: registries have not all answered yet, so host {authority:?} is not known"
                ),
            ))
        }
        Err(RouteMiss::NoVirtualHost) => {
            return Err(local(
                ErrorKind::NoRoute,
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
                ErrorKind::NoRouteMatch,
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
            return Err(routed(Outcome::response(resp)));
        }
        RouteAction::Redirect(r) => {
            return Err(routed(Outcome::response(redirect(
                r, authority, &parts.uri,
            ))))
        }
        RouteAction::Forward(split) => split,
    };
    if let Err(e) = hooks.before_pick(parts, hit.route) {
        return Err(routed(Outcome::local(e.kind(), e.detail().to_string())));
    }
    let injected = hit
        .route
        .fault
        .as_ref()
        .map(fault::draw)
        .unwrap_or_default();
    if let Some(status) = injected.abort {
        let mut out = fault::abort_reply(status);
        out.delay = injected.delay;
        if let Some(t) = split.targets.first() {
            out.cluster = Some(t.cluster.clone());
        }
        return Err(routed(out));
    }
    let target = if split.targets.len() == 1 || split.total_weight == 0 {
        split.targets.first()
    } else {
        // The thread's fast RNG: a route's split needs no cryptographic draw.
        let point = crate::balance::random_below(u64::from(split.total_weight));
        split.pick(u32::try_from(point).unwrap_or_default())
    };
    let Some(target) = target else {
        return Err(routed(Outcome::local(
            ErrorKind::NoHealthyEndpoint,
            format!("route {} has no destination", hit.route.name),
        )));
    };
    let cluster = &target.cluster;
    let ctx = PickContext {
        headers: &parts.headers,
        query: parts.uri.query(),
        source_ip: Some(peer.addr.ip()),
    };
    let chosen = routing.lb(cluster).zip(routing.runtime(cluster));
    let Some((lb, runtime, picked)) = chosen.and_then(|(lb, rt)| Some((lb, rt, lb.pick(&ctx)?)))
    else {
        let mut out = Outcome::local(
            ErrorKind::NoHealthyEndpoint,
            no_endpoint_message(hit.route, cluster),
        );
        out.cluster = Some(cluster.clone());
        return Err(routed(out));
    };
    Ok(Plan {
        hit,
        target,
        endpoint: picked.endpoint,
        index: picked.index,
        h2: cluster.port.protocol.is_h2(),
        guard: Held::new(picked.guard, runtime.budget.request()),
        runtime,
        set_cookie: picked.set_cookie.map(Box::new),
        delay_ms: injected
            .delay
            .and_then(|d| NonZeroU32::new(u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1))),
        lb,
    })
}

/// Turns the downstream request head into the upstream one: hop-by-hop
/// fields removed, route header operations applied, URI rewritten, and the
/// authority carried as `Host` (HTTP/1.1) or `:authority` (HTTP/2).
pub(crate) fn prepare(
    parts: &mut Parts,
    plan: &Plan<'_>,
    hooks: &Hooks,
    capture: Option<&crate::telemetry::Capture>,
) -> Result<(), Box<Outcome>> {
    let route = plan.hit.route;
    let h2 = plan.h2;
    hop::strip(&mut parts.headers, h2);
    if plan.endpoint.mesh().is_some() {
        // The peer proxy reads (and removes) this proxy's workload labels.
        hooks.add_peer_metadata(&mut parts.headers);
    }
    hooks.propagate(capture, &mut parts.headers);
    if !h2 && parts.version == Version::HTTP_2 {
        hop::join_cookies(&mut parts.headers);
    }
    route.request_headers.apply(&mut parts.headers);
    plan.target.request_headers.apply(&mut parts.headers);

    let bad = |msg: String| Box::new(Outcome::local(ErrorKind::BadRequest, msg));
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
pub(crate) fn rewritten_path(
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

#[cfg(test)]
mod tests;

/// Removes `x-anymesh-peer` from an inbound request; over mutual TLS, the
/// connection's first well-formed value gives its peer's workload labels
/// for Istio's metrics.
fn take_peer_metadata(headers: &mut http::HeaderMap, conn: &crate::service::InboundConn) {
    let Some(value) = headers.remove(crate::metrics::istio::PEER_HEADER) else {
        return;
    };
    if conn.peer_id.is_none() || conn.peer_labels.get().is_some() {
        return;
    }
    if let Some(l) = crate::metrics::istio::peer_with_metadata(&conn.source, value.as_bytes()) {
        let _ = conn.peer_labels.set(l);
    }
}
