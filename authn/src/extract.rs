//! Where tokens are read from, as Envoy's extractor reads them: every
//! location of every rule, deduplicated (rules sharing a location share it,
//! and a token found there is checked against the rule naming its issuer).
//!
//! - a header with a prefix: each value of the header that contains the
//!   prefix gives one token, from the first base64url character after the
//!   prefix to the end; without a prefix the whole value is the token;
//! - a query parameter: its first value, percent-decoded;
//! - a cookie: its value, surrounding double quotes removed.
//!
//! Without any location, a rule reads `Authorization: Bearer <token>` and the
//! `access_token` query parameter.

use std::borrow::Cow;

use http::header::{HeaderName, COOKIE};
use http::{HeaderMap, HeaderValue, Uri};

/// One place a token can be, and the rules (by index) that read it.
#[derive(Debug)]
pub(crate) struct Location {
    pub(crate) kind: LocationKind,
    pub(crate) rules: Vec<usize>,
}

/// The kinds of token locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocationKind {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// A token found in a request, with the index of its location.
pub(crate) struct Found<'r> {
    pub(crate) token: Cow<'r, str>,
    pub(crate) location: usize,
}

/// Adds `rule` as a reader of the location, creating it if new.
pub(crate) fn add_location(locations: &mut Vec<Location>, kind: LocationKind, rule: usize) {
    match locations.iter_mut().find(|l| l.kind == kind) {
        Some(loc) => {
            if !loc.rules.contains(&rule) {
                loc.rules.push(rule);
            }
        }
        None => locations.push(Location {
            kind,
            rules: vec![rule],
        }),
    }
}

/// The characters a compact JWS is made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Every token present in the request, in location order (headers, then
/// parameters, then cookies, each in the order the rules name them).
pub(crate) fn find<'r>(
    locations: &[Location],
    headers: &'r HeaderMap,
    uri: &'r Uri,
) -> Vec<Found<'r>> {
    let mut found = Vec::new();
    for (i, loc) in locations.iter().enumerate() {
        match &loc.kind {
            LocationKind::Header { name, prefix } => {
                for value in headers.get_all(name) {
                    let Ok(value) = value.to_str() else { continue };
                    let token = if prefix.is_empty() {
                        value
                    } else {
                        let Some(pos) = value.find(prefix.as_str()) else {
                            continue;
                        };
                        let rest = &value[pos + prefix.len()..];
                        match rest.bytes().position(is_token_char) {
                            Some(start) => &rest[start..],
                            None => value,
                        }
                    };
                    found.push(Found {
                        token: Cow::Borrowed(token),
                        location: i,
                    });
                }
            }
            LocationKind::Param(param) => {
                let Some(query) = uri.query() else { continue };
                if let Some((_, v)) =
                    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == param)
                {
                    found.push(Found {
                        token: v,
                        location: i,
                    });
                }
            }
            LocationKind::Cookie(cookie) => {
                if let Some(v) = cookie_value(headers, cookie) {
                    found.push(Found {
                        token: Cow::Borrowed(v),
                        location: i,
                    });
                }
            }
        }
    }
    found
}

/// The pairs of the `cookie` headers: `(name, value)`, trimmed.
fn cookie_pairs(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split(';').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        Some((k.trim(), v.trim()))
    })
}

fn cookie_value<'r>(headers: &'r HeaderMap, name: &str) -> Option<&'r str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie_pairs)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
}

/// Removes a verified token's location from the request, so the application
/// does not see the token (`forwardOriginalToken: false`): the whole header,
/// every occurrence of the parameter, or the one cookie.
pub(crate) fn remove(kind: &LocationKind, headers: &mut HeaderMap, uri: &mut Uri) {
    match kind {
        LocationKind::Header { name, .. } => {
            headers.remove(name);
        }
        LocationKind::Param(param) => remove_param(uri, param),
        LocationKind::Cookie(cookie) => remove_cookie(headers, cookie),
    }
}

fn remove_param(uri: &mut Uri, param: &str) {
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != param)
        })
        .collect();
    let path = uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = std::mem::take(uri).into_parts();
    match path_and_query.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(e) => tracing::warn!(error = %e, "jwt: query without the token does not parse"),
    }
    match Uri::from_parts(parts) {
        Ok(new) => *uri = new,
        Err(e) => tracing::warn!(error = %e, "jwt: uri without the token does not build"),
    }
}

fn remove_cookie(headers: &mut HeaderMap, cookie: &str) {
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    headers.remove(COOKIE);
    for value in values {
        let Ok(text) = value.to_str() else {
            headers.append(COOKIE, value);
            continue;
        };
        let kept: Vec<String> = cookie_pairs(text)
            .filter(|(k, _)| *k != cookie)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.append(COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locs(kinds: Vec<LocationKind>) -> Vec<Location> {
        let mut out = Vec::new();
        for k in kinds {
            add_location(&mut out, k, 0);
        }
        out
    }

    fn bearer() -> LocationKind {
        LocationKind::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        }
    }

    #[test]
    fn finds_tokens_in_every_kind_of_location() {
        let locations = locs(vec![
            bearer(),
            LocationKind::Header {
                name: HeaderName::from_static("x-jwt"),
                prefix: String::new(),
            },
            LocationKind::Param("access_token".into()),
            LocationKind::Cookie("session".into()),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer   a.b.c"));
        headers.append(
            "authorization",
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        headers.insert("x-jwt", HeaderValue::from_static("d.e.f"));
        headers.insert("cookie", HeaderValue::from_static("x=1; session=\"g.h.i\""));
        let uri: Uri = "/p?x=1&access_token=j%2Ek.l&access_token=zz"
            .parse()
            .unwrap();
        let found: Vec<_> = find(&locations, &headers, &uri)
            .into_iter()
            .map(|f| (f.token.into_owned(), f.location))
            .collect();
        assert_eq!(
            found,
            [
                ("a.b.c".to_owned(), 0),
                ("d.e.f".to_owned(), 1),
                ("j.k.l".to_owned(), 2),
                ("g.h.i".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn shared_locations_are_read_once() {
        let mut out = Vec::new();
        add_location(&mut out, bearer(), 0);
        add_location(&mut out, bearer(), 1);
        add_location(&mut out, LocationKind::Param("t".into()), 1);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].rules, [0, 1]);
    }

    #[test]
    fn removes_the_token_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer a.b.c"));
        headers.insert("cookie", HeaderValue::from_static("x=1; session=t; y=2"));
        headers.append("cookie", HeaderValue::from_static("session=t"));
        let mut uri: Uri = "http://h/p?a=1&access_token=t&b=2".parse().unwrap();

        remove(&bearer(), &mut headers, &mut uri);
        remove(
            &LocationKind::Cookie("session".into()),
            &mut headers,
            &mut uri,
        );
        remove(
            &LocationKind::Param("access_token".into()),
            &mut headers,
            &mut uri,
        );

        assert!(headers.get("authorization").is_none());
        let cookies: Vec<_> = headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["x=1; y=2"]);
        assert_eq!(uri.to_string(), "http://h/p?a=1&b=2");

        let mut only: Uri = "/p?access_token=t".parse().unwrap();
        remove(
            &LocationKind::Param("access_token".into()),
            &mut headers,
            &mut only,
        );
        assert_eq!(only.to_string(), "/p");
    }
}
