//! `GET /explain?host=H[&format=text]`: [`anymesh_core::explain`] on the
//! live catalog snapshot and the route table in force, with what only the
//! running proxy knows ([`live`]: each endpoint's health verdicts, each
//! cluster's counters), as JSON or as the text `anymesh explain` prints.
//! The transports are explained in the proxy's trust domain
//! ([`AdminState::local`]), with the certificate the proxy holds now.

use std::time::SystemTime;

use anymesh_core::explain::{explain, Certificate, ExplainError, LocalProxy};
use http::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::{respond, AdminState};
use crate::body::ProxyBody;

mod live;
#[cfg(test)]
mod tests;

pub(super) fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<ProxyBody> {
    let Some(host) = query_param(req.uri().query().unwrap_or(""), "host") else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "explain: give the service as ?host=<hostname or alias>[:port]\n",
        );
    };
    let query = req.uri().query().unwrap_or("");
    let text = match query_param(query, "format").as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("explain: format {other:?}: use json (the default) or text\n"),
            )
        }
    };
    let snapshot = state.catalog.borrow().clone();
    let routing = state.router.current();
    let wall = SystemTime::now();
    let proxy = local_proxy(state, wall);
    match explain(&snapshot, &routing.table, &host, &proxy) {
        Ok(mut x) => {
            x.set_default_retry_budget(&state.router.default_retry_budget_in_force());
            live::add_live(
                &mut x,
                &routing,
                state.health.as_deref(),
                Instant::now(),
                wall,
            );
            if text {
                return respond(StatusCode::OK, "text/plain; charset=utf-8", x.render(wall));
            }
            json(&x)
        }
        Err(e @ ExplainError::InvalidHost { .. }) => {
            respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))
        }
        Err(e @ ExplainError::NoService { .. }) => {
            respond(StatusCode::NOT_FOUND, "text/plain", format!("{e}\n"))
        }
    }
}

/// The proxy as configured, with the certificate it holds at `now`.
fn local_proxy(state: &AdminState, now: SystemTime) -> LocalProxy {
    let mut proxy = state.local.clone();
    proxy.certificate = match &state.identity {
        None => Certificate::NotConfigured,
        Some(identity) => {
            let last_error = identity.last_error().map(|e| e.to_string());
            match identity.current() {
                None => Certificate::Missing { last_error },
                Some(creds) => Certificate::Held {
                    identity: creds.id.as_str().to_string(),
                    not_before: creds.not_before,
                    not_after: creds.not_after,
                    valid_now: identity.valid_at(now),
                    last_error,
                },
            }
        }
    };
    // What the proxy can do is decided by the identity it has, whatever
    // the configuration said.
    if state.identity.is_none() {
        proxy.certificate_source = None;
    }
    proxy
}

fn json(x: &anymesh_core::explain::Explanation) -> Response<ProxyBody> {
    match serde_json::to_vec_pretty(x) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode the explanation: {e}\n"),
        ),
    }
}

/// The first non-empty value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name))
        .map(|(_, v)| percent_decode(v))
        .find(|v| !v.is_empty())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' => {
                match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => {
                        // Two hex digits are at most 0xff.
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
