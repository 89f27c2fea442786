//! Routes: a VirtualService's `http[]` entries (or a service's default route)
//! in the table's form.

use http::{HeaderName, HeaderValue};

use super::policy::{fault_policy, retry_policy, share};
use super::Compiler;
use crate::catalog::MergedService;
use crate::config::{
    self, annotations, HeaderOperations, HttpMatchRequest, HttpRoute, MatchKind, Percent, Resource,
    Severity, VirtualService,
};
use crate::model::ServicePort;
use crate::routes::policy::Mirror;
use crate::routes::table::{
    DirectResponse, HeaderOps, LbPolicy, Redirect, RequestMatch, Rewrite, Route, RouteAction,
    Split, StringMatch, WeightedCluster,
};

/// What the proxy does with an `http[]` rule the compiler leaves out.
const SKIPPED: &str = "rule skipped: its requests go to the next rule that matches, else get 404";

impl Compiler<'_> {
    /// The one route of a service no VirtualService claims.
    pub(super) fn default_route(&mut self, svc: &MergedService, port: &ServicePort) -> Route {
        let cluster = self.default_cluster(svc, port);
        Route {
            name: "default".into(),
            matches: Vec::new(),
            action: RouteAction::Forward(Split::new(vec![WeightedCluster {
                weight: 100,
                cluster,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }])),
            timeout: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            rewrite: None,
            // Istio builds a service's default route with its default retry
            // policy whatever the balancer (previous hosts avoided).
            retry: retry_policy(None, false),
            fault: None,
            mirrors: Vec::new(),
            mirror_compare: None,
        }
    }

    /// A VirtualService's routes for requests on `request_port` (`None`: the
    /// request's port is not known to be a service port).
    pub(super) fn routes(
        &mut self,
        vs: &Resource<VirtualService>,
        request_port: Option<u16>,
    ) -> Vec<Route> {
        vs.spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(vs, i, r, request_port))
            .collect()
    }

    fn route(
        &mut self,
        vs: &Resource<VirtualService>,
        i: usize,
        r: &HttpRoute,
        request_port: Option<u16>,
    ) -> Option<Route> {
        let at = format!("spec.http[{i}]");
        let mut matches = Vec::with_capacity(r.matches.len());
        for (j, m) in r.matches.iter().enumerate() {
            match request_match(m) {
                Ok(m) => matches.push(m),
                Err(why) => {
                    // Only reachable for config that skipped validation.
                    self.report(vs.diagnostic(
                        Severity::Error,
                        format!("{at}.match[{j}]"),
                        format!("{why}; {SKIPPED}"),
                    ));
                    return None;
                }
            }
        }
        let action = if let Some(rd) = &r.redirect {
            RouteAction::Redirect(Redirect {
                uri: rd.uri.clone(),
                authority: rd.authority.clone(),
                port: rd.port.and_then(|p| u16::try_from(p).ok()),
                scheme: rd.scheme.clone(),
                code: rd
                    .redirect_code
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(301),
            })
        } else if let Some(dr) = &r.direct_response {
            RouteAction::DirectResponse(DirectResponse {
                status: u16::try_from(dr.status).unwrap_or(500),
                body: dr.body.as_ref().and_then(|b| b.string.clone()),
            })
        } else {
            let single = r.route.len() == 1;
            let mut targets = Vec::new();
            for (k, d) in r.route.iter().enumerate() {
                // A single destination gets all traffic; with several, a
                // missing weight is 0 and a 0 weight gets nothing.
                let weight = if single {
                    100
                } else {
                    d.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0)
                };
                if weight == 0 {
                    continue;
                }
                let at = format!("{at}.route[{k}].destination");
                let Some(cluster) = self.destination(vs, &at, &d.destination, request_port) else {
                    continue;
                };
                let (request_headers, response_headers) = header_ops(d.headers.as_ref());
                targets.push(WeightedCluster {
                    weight,
                    cluster,
                    request_headers,
                    response_headers,
                });
            }
            if targets.is_empty() {
                self.report(vs.diagnostic(
                    Severity::Error,
                    format!("{at}.route"),
                    format!("no destination with a weight above 0; {SKIPPED}"),
                ));
                return None;
            }
            RouteAction::Forward(Split::new(targets))
        };
        let (request_headers, response_headers) = header_ops(r.headers.as_ref());
        let (mirrors, consistent_hash) = match &action {
            RouteAction::Forward(split) => (
                self.mirrors(vs, &at, r, request_port),
                matches!(split.targets.as_slice(), [only] if r.route.len() == 1
                    && matches!(only.cluster.lb, LbPolicy::ConsistentHash(_))),
            ),
            _ => (Vec::new(), false),
        };
        let mirror_compare = if mirrors.is_empty() {
            None
        } else {
            annotations::mirror_compare(&vs.annotations)
        };
        Some(Route {
            name: r
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/http[{i}]", vs.id()))
                .into(),
            matches,
            action,
            // Istio: `0s` disables the timeout.
            timeout: r.timeout.map(|t| t.0).filter(|t| !t.is_zero()),
            request_headers,
            response_headers,
            rewrite: r.rewrite.as_ref().map(|rw| Rewrite {
                uri: rw.uri.clone(),
                authority: rw.authority.clone(),
            }),
            retry: retry_policy(r.retries.as_ref(), consistent_hash),
            fault: fault_policy(r.fault.as_ref()),
            mirrors,
            mirror_compare,
        })
    }

    /// A rule's mirrors (`mirror` with `mirrorPercentage`, then
    /// `mirrors[]`), each to the cluster its destination resolves to. A
    /// percentage of 0 mirrors nothing; unset is 100 (Istio's rules).
    fn mirrors(
        &mut self,
        vs: &Resource<VirtualService>,
        at: &str,
        r: &HttpRoute,
        request_port: Option<u16>,
    ) -> Vec<Mirror> {
        let mut wanted = Vec::new();
        if let Some(d) = &r.mirror {
            let percentage = match (r.mirror_percentage, r.mirror_percent) {
                (Some(p), _) => share(p),
                (None, Some(n)) => share(Percent { value: n as f64 }),
                (None, None) => Some(100.0),
            };
            wanted.push((format!("{at}.mirror"), d, percentage));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            let percentage = m.percentage.map_or(Some(100.0), share);
            wanted.push((
                format!("{at}.mirrors[{j}].destination"),
                &m.destination,
                percentage,
            ));
        }
        let mut out = Vec::with_capacity(wanted.len());
        for (at, d, percentage) in wanted {
            let Some(percentage) = percentage else {
                continue;
            };
            if let Some(cluster) = self.destination(vs, &at, d, request_port) {
                out.push(Mirror {
                    cluster,
                    percentage,
                });
            }
        }
        out
    }
}

fn request_match(m: &HttpMatchRequest) -> Result<RequestMatch, String> {
    let uri = match &m.uri {
        // Case-insensitive regexes get the `i` flag; exact and prefix
        // matches are compared case-insensitively by the table.
        Some(sm) if m.ignore_uri_case => match sm.kind() {
            Some(MatchKind::Regex(re)) => Some(
                StringMatch::regex(&format!("(?i){re}"))
                    .map_err(|e| format!("invalid regex {re:?}: {}", config::regex_reason(&e)))?,
            ),
            _ => Some(string_match(sm)?),
        },
        Some(sm) => Some(string_match(sm)?),
        None => None,
    };
    let opt = |sm: &Option<config::StringMatch>| sm.as_ref().map(string_match).transpose();
    let mut headers = Vec::with_capacity(m.headers.len());
    for (name, sm) in &m.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        headers.push((name, string_match(sm)?));
    }
    let mut query_params = Vec::with_capacity(m.query_params.len());
    for (name, sm) in &m.query_params {
        query_params.push((name.clone(), string_match(sm)?));
    }
    Ok(RequestMatch {
        name: m.name.clone(),
        uri,
        method: opt(&m.method)?,
        authority: opt(&m.authority)?,
        headers,
        query_params,
        ignore_uri_case: m.ignore_uri_case,
    })
}

fn string_match(sm: &config::StringMatch) -> Result<StringMatch, String> {
    match sm.kind() {
        Some(MatchKind::Exact(s)) => Ok(StringMatch::Exact(s.to_string())),
        Some(MatchKind::Prefix(s)) => Ok(StringMatch::Prefix(s.to_string())),
        Some(MatchKind::Regex(re)) => StringMatch::regex(re)
            .map_err(|e| format!("invalid regex {re:?}: {}", config::regex_reason(&e))),
        None => Err("a string match needs exactly one of exact, prefix or regex".into()),
    }
}

/// Request and response header operations; invalid entries (rejected when
/// the config was loaded) are left out.
fn header_ops(h: Option<&config::Headers>) -> (HeaderOps, HeaderOps) {
    let convert = |ops: &Option<HeaderOperations>| {
        let Some(ops) = ops else {
            return HeaderOps::default();
        };
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect()
        };
        HeaderOps {
            set: pairs(&ops.set),
            add: pairs(&ops.add),
            remove: ops
                .remove
                .iter()
                .filter_map(|k| HeaderName::from_bytes(k.as_bytes()).ok())
                .collect(),
        }
    };
    match h {
        Some(h) => (convert(&h.request), convert(&h.response)),
        None => (HeaderOps::default(), HeaderOps::default()),
    }
}
