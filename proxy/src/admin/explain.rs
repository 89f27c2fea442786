//! `GET /explain?host=H`: [`anymesh_core::explain`] on the live catalog
//! snapshot and the route table in force, as JSON.

use anymesh_core::explain::{explain, ExplainError};
use http::{Request, Response, StatusCode};

use super::{respond, AdminState};
use crate::body::ProxyBody;

pub(super) fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<ProxyBody> {
    let Some(host) = query_param(req.uri().query().unwrap_or(""), "host") else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "explain: give the service as ?host=<hostname or alias>[:port]\n",
        );
    };
    let snapshot = state.catalog.borrow().clone();
    let routing = state.router.current();
    match explain(&snapshot, &routing.table, &host) {
        Ok(x) => match serde_json::to_vec_pretty(&x) {
            Ok(body) => respond(StatusCode::OK, "application/json", body),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot encode the explanation: {e}\n"),
            ),
        },
        Err(e @ ExplainError::InvalidHost { .. }) => {
            respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))
        }
        Err(e @ ExplainError::NoService { .. }) => {
            respond(StatusCode::NOT_FOUND, "text/plain", format!("{e}\n"))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_param("x=1&host=reviews%3A9080", "host").as_deref(),
            Some("reviews:9080")
        );
        assert_eq!(query_param("host=&host=a", "host").as_deref(), Some("a"));
        assert_eq!(query_param("hostname=a", "host"), None);
        assert_eq!(query_param("", "host"), None);
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
    }
}
