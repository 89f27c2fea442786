//! The per-request check: find the tokens, verify each, apply the outputs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anymesh_core::security::jwt::{JwksSource, JwtRule, RequestAuth};
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue, Uri};
use serde_json::{Map, Value};

use crate::cache::{Entry, JwksCache};
use crate::extract::{self, add_location, Location, LocationKind};
use crate::jwks::{KeySet, Pick};
use crate::token::{same_audience, Token};
use crate::{AuthnError, ConfigError};

/// Envoy's default allowance for clocks that disagree (`clock_skew_seconds`).
const CLOCK_SKEW_SECS: u64 = 60;

/// Istio's default JWKS fetch timeout.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one rule's keys are.
enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<Entry>),
}

/// A rule ready for requests.
struct Rule {
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, Vec<String>)>,
    forward: bool,
}

/// The RequestAuthentication rules of one workload, ready for requests.
///
/// Built once per rule set (when the workload's RequestAuthentications
/// change); [`Authenticator::authenticate`] runs on every request and only
/// reads: keys are behind atomic pointers the [`JwksCache`] loop swaps.
pub struct Authenticator {
    rules: Vec<Rule>,
    locations: Vec<Location>,
    /// Output headers removed from every incoming request, so a client
    /// cannot forge what a verified token would have set.
    sanitize: Vec<HeaderName>,
}

/// A verified token and where it came from.
struct Verified {
    rule: usize,
    location: usize,
    auth: RequestAuth,
    payload_b64: Option<HeaderValue>,
}

fn header_name(rule: usize, field: String, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::HeaderName {
        rule,
        field,
        name: name.to_owned(),
    })
}

impl Authenticator {
    /// Compiles `rules` (all the rules applying to one workload, in the
    /// order Istio sorts them: by issuer). Remote key sets are registered in
    /// `cache`; they are fetched by its loop ([`JwksCache::spawn`]).
    pub fn new(rules: Vec<JwtRule>, cache: &JwksCache) -> Result<Authenticator, ConfigError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut locations = Vec::new();
        let mut sanitize: Vec<HeaderName> = Vec::new();
        for (i, rule) in rules.into_iter().enumerate() {
            let keys = match &rule.jwks {
                JwksSource::Inline(doc) => Keys::Inline(Arc::new(
                    KeySet::parse(doc.as_bytes())
                        .map_err(|reason| ConfigError::InlineJwks { rule: i, reason })?,
                )),
                JwksSource::Uri(uri) => {
                    if !(uri.starts_with("https://") || uri.starts_with("http://"))
                        || uri.parse::<Uri>().is_err()
                    {
                        return Err(ConfigError::JwksUri {
                            rule: i,
                            uri: uri.clone(),
                        });
                    }
                    let timeout = if rule.fetch_timeout.is_zero() {
                        DEFAULT_FETCH_TIMEOUT
                    } else {
                        rule.fetch_timeout
                    };
                    Keys::Remote(cache.entry(uri, timeout))
                }
            };
            for (j, h) in rule.from_headers.iter().enumerate() {
                let name = header_name(i, format!("fromHeaders[{j}].name"), &h.name)?;
                let kind = LocationKind::Header {
                    name,
                    prefix: h.prefix.clone(),
                };
                add_location(&mut locations, kind, i);
            }
            for p in &rule.from_params {
                add_location(&mut locations, LocationKind::Param(p.clone()), i);
            }
            for c in &rule.from_cookies {
                add_location(&mut locations, LocationKind::Cookie(c.clone()), i);
            }
            if rule.from_headers.is_empty()
                && rule.from_params.is_empty()
                && rule.from_cookies.is_empty()
            {
                let bearer = LocationKind::Header {
                    name: AUTHORIZATION,
                    prefix: "Bearer ".into(),
                };
                add_location(&mut locations, bearer, i);
                add_location(
                    &mut locations,
                    LocationKind::Param("access_token".into()),
                    i,
                );
            }
            let payload_header = match &rule.output_payload_to_header {
                Some(h) => Some(header_name(i, "outputPayloadToHeader".into(), h)?),
                None => None,
            };
            let mut claim_headers = Vec::with_capacity(rule.output_claim_to_headers.len());
            for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
                let name = header_name(i, format!("outputClaimToHeaders[{j}].header"), &c.header)?;
                let path = c.claim.split('.').map(str::to_owned).collect();
                claim_headers.push((name, path));
            }
            for name in payload_header
                .iter()
                .chain(claim_headers.iter().map(|(n, _)| n))
            {
                if !sanitize.contains(name) {
                    sanitize.push(name.clone());
                }
            }
            compiled.push(Rule {
                issuer: rule.issuer,
                audiences: rule.audiences,
                keys,
                payload_header,
                claim_headers,
                forward: rule.forward_original_token,
            });
        }
        Ok(Authenticator {
            rules: compiled,
            locations,
            sanitize,
        })
    }

    /// Waits until every remote key set of these rules has had its first
    /// fetch attempt (successful or not). The proxy may bound this with a
    /// timeout at start; requests are served correctly either way (tokens
    /// of an issuer without keys get 401 until its keys arrive).
    pub async fn ready(&self) {
        for rule in &self.rules {
            if let Keys::Remote(entry) = &rule.keys {
                entry.attempted().await;
            }
        }
    }

    /// Authenticates one request, on the request path (never blocks, never
    /// waits for the network).
    ///
    /// - No token at any rule's location: `Ok(None)`; the request goes on
    ///   without a request principal (AuthorizationPolicy decides).
    /// - Every token found is valid: `Ok(Some(auth))` with the first token's
    ///   identity; the outputs of each token's rule are applied to `headers`
    ///   (payload header, claim headers) and the tokens are removed from
    ///   `headers`/`uri` unless the rule forwards them.
    /// - Any token invalid: `Err(reason)`, to answer 401 with
    ///   [`AuthnError::reason`] as the body.
    ///
    /// Output headers the rules set are removed from every request first.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        uri: &mut Uri,
    ) -> Result<Option<RequestAuth>, AuthnError> {
        for name in &self.sanitize {
            headers.remove(name);
        }
        let verified = {
            let found = extract::find(&self.locations, headers, uri);
            if found.is_empty() {
                return Ok(None);
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut verified = Vec::with_capacity(found.len());
            for f in &found {
                let rules = &self.locations[f.location].rules;
                match self.verify(&f.token, rules, now) {
                    Ok((rule, auth, payload_b64)) => verified.push(Verified {
                        rule,
                        location: f.location,
                        auth,
                        payload_b64,
                    }),
                    Err(e) => {
                        tracing::debug!(reason = e.reason(), "jwt refused");
                        return Err(e);
                    }
                }
            }
            verified
        };

        let mut first = None;
        for v in verified {
            let rule = &self.rules[v.rule];
            if let (Some(name), Some(value)) = (&rule.payload_header, v.payload_b64) {
                headers.append(name.clone(), value);
            }
            for (name, path) in &rule.claim_headers {
                if let Some(value) = claim_header_value(&v.auth.claims, path) {
                    headers.append(name.clone(), value);
                }
            }
            if !rule.forward {
                extract::remove(&self.locations[v.location].kind, headers, uri);
            }
            if first.is_none() {
                first = Some(v.auth);
            }
        }
        Ok(first)
    }

    /// Verifies one token against the rules reading its location: the rule
    /// naming the token's issuer (the first of several that verifies).
    fn verify(
        &self,
        token: &str,
        rules: &[usize],
        now: u64,
    ) -> Result<(usize, RequestAuth, Option<HeaderValue>), AuthnError> {
        let token = Token::parse(token)?;
        let mut first_err = None;
        for &i in rules {
            let rule = &self.rules[i];
            if rule.issuer != token.iss {
                continue;
            }
            match self.verify_with_rule(rule, &token, now) {
                Ok(()) => {
                    let payload_b64 = match rule.payload_header {
                        Some(_) => HeaderValue::from_str(token.payload_b64).ok(),
                        None => None,
                    };
                    return Ok((i, request_auth(token), payload_b64));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(AuthnError::UnknownIssuer))
    }

    /// Envoy's order: time, audience, then keys and signature.
    fn verify_with_rule(&self, rule: &Rule, token: &Token<'_>, now: u64) -> Result<(), AuthnError> {
        token.check_time(now, CLOCK_SKEW_SECS)?;
        if !rule.audiences.is_empty()
            && !token
                .audiences
                .iter()
                .any(|a| rule.audiences.iter().any(|r| same_audience(a, r)))
        {
            return Err(AuthnError::AudienceNotAllowed);
        }
        let guard;
        let (set, entry) = match &rule.keys {
            Keys::Inline(set) => (set.as_ref(), None),
            Keys::Remote(entry) => {
                guard = entry.keys();
                match guard.as_deref() {
                    Some(set) => (set, Some(entry)),
                    None => return Err(AuthnError::FetchFailed),
                }
            }
        };
        match set.verify(
            token.alg,
            token.kid.as_deref(),
            token.signed.as_bytes(),
            &token.signature,
        ) {
            Pick::Verified => Ok(()),
            Pick::BadSignature => Err(AuthnError::VerificationFail),
            Pick::NoKey => {
                if let (Some(entry), Some(kid)) = (entry, token.kid.as_deref()) {
                    if !set.has_kid(kid) {
                        entry.want_refresh();
                    }
                }
                Err(AuthnError::KidAlgMismatch)
            }
        }
    }
}

/// What a verified token establishes.
fn request_auth(token: Token<'_>) -> RequestAuth {
    let sub = token
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("");
    let principal = format!("{}/{}", token.iss, sub);
    let presenter = token
        .claims
        .get("azp")
        .and_then(Value::as_str)
        .map(str::to_owned);
    RequestAuth {
        principal,
        audiences: token.audiences,
        presenter,
        claims: token.claims,
    }
}

/// A claim as a header value, as Envoy writes it: strings as they are,
/// numbers as integers when integral (otherwise with six decimals, as C++'s
/// `std::to_string`), booleans as `true`/`false`; other types and empty
/// strings give no header.
fn claim_header_value(claims: &Map<String, Value>, path: &[String]) -> Option<HeaderValue> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    let text = match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => format!("{f:.6}"),
            (None, None) => return None,
        },
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_header_values_as_envoy_writes_them() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"s":"v","n":42,"f":1.5,"neg":-2,"b":true,"o":{"in":{"x":"deep"}},
                "l":["a"],"e":"","bad":"a\nb"}"#,
        )
        .unwrap();
        let get = |p: &str| {
            let path: Vec<String> = p.split('.').map(str::to_owned).collect();
            claim_header_value(&claims, &path).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("s").as_deref(), Some("v"));
        assert_eq!(get("n").as_deref(), Some("42"));
        assert_eq!(get("f").as_deref(), Some("1.500000"));
        assert_eq!(get("neg").as_deref(), Some("-2.000000"));
        assert_eq!(get("b").as_deref(), Some("true"));
        assert_eq!(get("o.in.x").as_deref(), Some("deep"));
        assert_eq!(get("o.in"), None);
        assert_eq!(get("l"), None);
        assert_eq!(get("e"), None);
        assert_eq!(get("bad"), None);
        assert_eq!(get("missing"), None);
    }
}
