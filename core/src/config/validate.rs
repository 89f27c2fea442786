//! Checks that need only the resource itself. Each pushes findings with the
//! field path they are about; the caller attaches file and resource.

use std::collections::{BTreeMap, HashMap};

use http::{HeaderName, HeaderValue};

use super::destination_rule::{LoadBalancerSettings, SimpleLb, TrafficPolicy};
use super::diagnostic::Findings;
use super::host::HostPattern;
use super::resilience;
use super::virtual_service::{Destination, Headers, HttpRoute, StringMatch};
use super::{DestinationRule, VirtualService};
use crate::model::Hostname;

const REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

/// A VirtualService's own checks, its anymesh annotations included.
pub(crate) fn virtual_service_resource(
    vs: &VirtualService,
    annotations: &BTreeMap<String, String>,
    f: &mut Findings,
) {
    virtual_service(vs, f);
    super::annotations::virtual_service(vs, annotations, f);
}

/// A DestinationRule's own checks, its anymesh annotations included.
pub(crate) fn destination_rule_resource(
    dr: &DestinationRule,
    annotations: &BTreeMap<String, String>,
    f: &mut Findings,
) {
    destination_rule(dr, f);
    super::annotations::destination_rule(annotations, f);
}

pub(crate) fn virtual_service(vs: &VirtualService, f: &mut Findings) {
    if vs.hosts.is_empty() {
        f.error("spec.hosts", "at least one host is required");
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        if let Err(why) = HostPattern::parse(h) {
            f.error(
                format!("spec.hosts[{i}]"),
                format!("invalid host {h:?}: {why}"),
            );
        }
    }
    if !vs.gateways.is_empty() {
        let others: Vec<&str> = vs
            .gateways
            .iter()
            .map(String::as_str)
            .filter(|g| *g != "mesh")
            .collect();
        if others.len() == vs.gateways.len() {
            f.warning(
                "spec.gateways",
                format!(
                    "binds only to gateways {others:?}; anymesh has no gateways yet, so this \
                     VirtualService routes nothing (add 'mesh' to apply it to mesh traffic)"
                ),
            );
        } else if !others.is_empty() {
            f.warning(
                "spec.gateways",
                format!("gateways {others:?} are not supported; only 'mesh' applies"),
            );
        }
    }
    if vs.http.is_empty() {
        f.warning(
            "spec.http",
            "no HTTP routes; the hosts keep their default routes",
        );
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route(route, &format!("spec.http[{i}]"), f);
    }
}

fn http_route(r: &HttpRoute, at: &str, f: &mut Findings) {
    let forwards = !r.route.is_empty();
    match (forwards, r.redirect.is_some(), r.direct_response.is_some()) {
        (false, false, false) => {
            f.error(at, "one of route, redirect or directResponse is required")
        }
        (true, true, _) => f.error(
            format!("{at}.redirect"),
            "redirect cannot be combined with route",
        ),
        (true, _, true) => f.error(
            format!("{at}.directResponse"),
            "directResponse cannot be combined with route",
        ),
        (_, true, true) => f.error(
            format!("{at}.directResponse"),
            "directResponse cannot be combined with redirect",
        ),
        _ => {}
    }
    if r.rewrite.is_some() && !forwards {
        f.error(
            format!("{at}.rewrite"),
            "rewrite only applies to a route; it cannot be combined with redirect or directResponse",
        );
    }
    for (j, m) in r.matches.iter().enumerate() {
        let at = format!("{at}.match[{j}]");
        for (field, sm) in [
            ("uri", &m.uri),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                string_match(sm, &format!("{at}.{field}"), f);
            }
        }
        for (name, sm) in &m.headers {
            let at = format!("{at}.headers.{name}");
            header_name(name, &at, f);
            string_match(sm, &at, f);
        }
        for (name, sm) in &m.query_params {
            let at = format!("{at}.queryParams.{name}");
            if name.is_empty() {
                f.error(&at, "query parameter name must not be empty");
            }
            string_match(sm, &at, f);
        }
    }
    weights(r, at, f);
    for (dest_at, d) in r.destinations(at) {
        destination(d, &dest_at, f);
    }
    for (k, d) in r.route.iter().enumerate() {
        if let Some(h) = &d.headers {
            headers(h, &format!("{at}.route[{k}].headers"), f);
        }
    }
    resilience::http_route(r, at, f);
    if let Some(h) = &r.headers {
        headers(h, &format!("{at}.headers"), f);
    }
    if let Some(rd) = &r.redirect {
        if let Some(code) = rd.redirect_code {
            if !REDIRECT_CODES.contains(&code) {
                f.error(
                    format!("{at}.redirect.redirectCode"),
                    format!("redirect code {code} is not one of 301, 302, 303, 307, 308"),
                );
            }
        }
        if let Some(p) = rd.port {
            port(p, &format!("{at}.redirect.port"), f);
        }
        if let Some(s) = &rd.scheme {
            if s != "http" && s != "https" {
                f.error(
                    format!("{at}.redirect.scheme"),
                    format!("scheme {s:?} must be http or https"),
                );
            }
        }
    }
    if let Some(dr) = &r.direct_response {
        if !(200..=599).contains(&dr.status) {
            f.error(
                format!("{at}.directResponse.status"),
                format!("status {} is out of range 200..=599", dr.status),
            );
        }
    }
}

/// A destination's host, subset and port (`at` is the destination's path).
fn destination(d: &Destination, at: &str, f: &mut Findings) {
    let host = &d.host;
    if host.is_empty() {
        f.error(format!("{at}.host"), "host is required");
    } else if let Err(e) = Hostname::new(host) {
        f.error(
            format!("{at}.host"),
            format!("invalid host {host:?}: {}", e.reason),
        );
    }
    if d.subset.as_deref() == Some("") {
        f.error(format!("{at}.subset"), "subset name must not be empty");
    }
    if let Some(p) = d.port {
        port(p.number, &format!("{at}.port.number"), f);
    }
}

/// Istio: with several destinations a missing weight counts as 0 and the sum
/// must be 100; a single destination gets all traffic whatever its weight.
fn weights(r: &HttpRoute, at: &str, f: &mut Findings) {
    let mut sum = 0;
    for (k, d) in r.route.iter().enumerate() {
        let w = d.weight.unwrap_or(0);
        if !(0..=100).contains(&w) {
            f.error(
                format!("{at}.route[{k}].weight"),
                format!("weight {w} is out of range 0..=100"),
            );
        } else {
            sum += w;
        }
    }
    match r.route.as_slice() {
        [only] => {
            if let Some(w) = only.weight.filter(|w| *w != 100 && (0..=100).contains(w)) {
                f.warning(
                    format!("{at}.route[0].weight"),
                    format!("weight {w} is ignored: a single destination receives all traffic"),
                );
            }
        }
        [_, _, ..]
            if sum != 100
                && r.route
                    .iter()
                    .all(|d| (0..=100).contains(&d.weight.unwrap_or(0))) =>
        {
            f.error(
                format!("{at}.route"),
                format!("weights sum to {sum}, must sum to 100"),
            );
        }
        _ => {}
    }
}

fn port(n: u32, at: &str, f: &mut Findings) {
    if !(1..=65535).contains(&n) {
        f.error(at, format!("port {n} is out of range 1..=65535"));
    }
}

pub(crate) fn string_match(sm: &StringMatch, at: &str, f: &mut Findings) {
    let set = sm.set_fields();
    match set.as_slice() {
        [] => f.error(
            at,
            "exactly one of exact, prefix or regex is required (a presence match `{}` is not \
             supported; use regex: \".*\")",
        ),
        [_] => {
            if let Some(re) = &sm.regex {
                if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
                    f.error(
                        format!("{at}.regex"),
                        format!("invalid regex {re:?}: {}", regex_reason(&e)),
                    );
                }
            }
        }
        several => f.error(
            at,
            format!(
                "only one of exact, prefix or regex may be set, found {}",
                several.join(" and ")
            ),
        ),
    }
}

/// The last line of the regex crate's multi-line error, without `error: `.
pub(crate) fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
}

fn header_name(name: &str, at: &str, f: &mut Findings) {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        f.error(at, format!("invalid header name {name:?}"));
    }
}

fn headers(h: &Headers, at: &str, f: &mut Findings) {
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            header_pairs(map, &format!("{at}.{side}.{op}"), f);
        }
        for (i, name) in ops.remove.iter().enumerate() {
            header_name(name, &format!("{at}.{side}.remove[{i}]"), f);
        }
    }
}

fn header_pairs(map: &BTreeMap<String, String>, at: &str, f: &mut Findings) {
    for (name, value) in map {
        let at = format!("{at}.{name}");
        header_name(name, &at, f);
        if HeaderValue::from_str(value).is_err() {
            f.error(
                &at,
                format!("invalid header value {value:?}: control characters are not allowed"),
            );
        }
    }
}

pub(crate) fn destination_rule(dr: &DestinationRule, f: &mut Findings) {
    if dr.host.is_empty() {
        f.error("spec.host", "host is required");
    } else if let Err(why) = HostPattern::parse(&dr.host) {
        f.error("spec.host", format!("invalid host {:?}: {why}", dr.host));
    }
    if let Some(p) = &dr.traffic_policy {
        traffic_policy(p, "spec.trafficPolicy", f);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            f.error(format!("{at}.name"), "subset name is required");
        } else if let Some(first) = seen.get(s.name.as_str()) {
            f.error(
                format!("{at}.name"),
                format!(
                    "duplicate subset '{}' (first at spec.subsets[{first}])",
                    s.name
                ),
            );
        } else {
            seen.insert(&s.name, i);
        }
        if let Some(p) = &s.traffic_policy {
            traffic_policy(p, &format!("{at}.trafficPolicy"), f);
        }
    }
}

fn traffic_policy(p: &TrafficPolicy, at: &str, f: &mut Findings) {
    if let Some(lb) = &p.load_balancer {
        load_balancer(
            lb,
            p.outlier_detection.is_some(),
            &format!("{at}.loadBalancer"),
            f,
        );
    }
    resilience::traffic_policy(
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.retry_budget.as_ref(),
        at,
        f,
    );
    resilience::port_level_settings(&p.port_level_settings, at, f);
    if let Some(tls) = &p.tls {
        super::security::validate::client_tls(tls, &format!("{at}.tls"), f);
    }
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{i}]");
        if let Some(tls) = &pl.tls {
            super::security::validate::client_tls(tls, &format!("{at}.tls"), f);
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(
                lb,
                pl.outlier_detection.is_some(),
                &format!("{at}.loadBalancer"),
                f,
            );
        }
        resilience::traffic_policy(
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            None,
            &at,
            f,
        );
    }
}

/// `outlier`: the same policy has outlier detection (locality failover
/// needs it).
fn load_balancer(lb: &LoadBalancerSettings, outlier: bool, at: &str, f: &mut Findings) {
    if let Some(l) = &lb.locality_lb_setting {
        resilience::locality(l, outlier, &format!("{at}.localityLbSetting"), f);
    }
    match (&lb.simple, &lb.consistent_hash) {
        (Some(_), Some(_)) => f.error(at, "only one of simple or consistentHash may be set"),
        (Some(SimpleLb::Passthrough), None) => f.warning(
            format!("{at}.simple"),
            "unsupported load balancer PASSTHROUGH: round robin is used",
        ),
        (None, Some(ch)) => {
            let at = format!("{at}.consistentHash");
            match ch.keys().len() {
                0 => f.error(
                    &at,
                    "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
                ),
                1 => {}
                _ => f.error(
                    &at,
                    "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
                ),
            }
            if let Some(h) = &ch.http_header_name {
                header_name(h, &format!("{at}.httpHeaderName"), f);
            }
            if let Some(c) = &ch.http_cookie {
                if c.name.is_empty() {
                    f.error(format!("{at}.httpCookie.name"), "cookie name is required");
                }
            }
            if ch.ring_hash.is_some() && ch.maglev.is_some() {
                f.error(&at, "only one of ringHash or maglev may be set");
            }
        }
        _ => {}
    }
}
