//! Token verification with inline key sets: what is accepted, what is
//! refused and why, where tokens are read, and what a verified token leaves
//! in the request.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod support;

use anymesh_authn::{Authenticator, AuthnError, ConfigError, FetchSettings, JwksCache};
use anymesh_core::security::jwt::{ClaimToHeader, JwksSource, JwtRule, TokenHeader};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;

fn cache() -> JwksCache {
    JwksCache::new(FetchSettings::default()).unwrap()
}

fn inline(keys: &[&SigningKey]) -> JwksSource {
    JwksSource::Inline(jwks(keys))
}

fn authn(rules: Vec<JwtRule>) -> Authenticator {
    Authenticator::new(rules, &cache()).unwrap()
}

fn check(a: &Authenticator, token: &str) -> Result<Option<String>, AuthnError> {
    let (mut headers, mut uri) = bearer(token);
    a.authenticate(&mut headers, &mut uri)
        .map(|auth| auth.map(|a| a.principal))
}

fn with_claims(f: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims();
    f(&mut c);
    c
}

#[test]
fn a_valid_token_gives_the_request_principal_and_is_removed() {
    let key = SigningKey::rsa(1, Algorithm::RS256, "r1");
    let a = authn(vec![rule(inline(&[&key]))]);
    let (mut headers, mut uri) = bearer(&key.sign(&claims()));
    headers.insert("x-other", "kept".parse().unwrap());

    let auth = a.authenticate(&mut headers, &mut uri).unwrap().unwrap();

    assert_eq!(auth.principal, format!("{ISSUER}/alice"));
    assert_eq!(auth.audiences, ["api"]);
    assert_eq!(auth.presenter.as_deref(), Some("web-app"));
    assert_eq!(auth.claims["group"], "admins");
    assert!(headers.get("authorization").is_none(), "token removed");
    assert_eq!(headers["x-other"], "kept");
}

#[test]
fn every_supported_algorithm_verifies() {
    let keys = [
        SigningKey::rsa(1, Algorithm::RS256, "rs256"),
        SigningKey::rsa(1, Algorithm::RS384, "rs384"),
        SigningKey::rsa(1, Algorithm::RS512, "rs512"),
        SigningKey::rsa(2, Algorithm::PS256, "ps256"),
        SigningKey::rsa(2, Algorithm::PS384, "ps384"),
        SigningKey::rsa(2, Algorithm::PS512, "ps512"),
        SigningKey::ec(Algorithm::ES256, "es256"),
        SigningKey::ec(Algorithm::ES384, "es384"),
        SigningKey::ed25519("eddsa"),
    ];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let a = authn(vec![rule(inline(&refs))]);
    for key in &keys {
        assert_eq!(
            check(&a, &key.sign(&claims())),
            Ok(Some(format!("{ISSUER}/alice"))),
            "{:?}",
            key.alg
        );
    }
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_with_a_minute_of_skew() {
    let key = SigningKey::ec(Algorithm::ES256, "e1");
    let a = authn(vec![rule(inline(&[&key]))]);
    let token = |f: &dyn Fn(&mut Value)| key.sign(&with_claims(|c| f(c)));

    let expired = token(&|c| c["exp"] = json!(now() - 120));
    assert_eq!(check(&a, &expired), Err(AuthnError::Expired));
    assert_eq!(AuthnError::Expired.reason(), "Jwt is expired");
    let within_skew = token(&|c| c["exp"] = json!(now() - 30));
    assert!(check(&a, &within_skew).unwrap().is_some());

    let early = token(&|c| c["nbf"] = json!(now() + 120));
    assert_eq!(check(&a, &early), Err(AuthnError::NotYetValid));
    let nearly = token(&|c| c["nbf"] = json!(now() + 30));
    assert!(check(&a, &nearly).unwrap().is_some());
}

#[test]
fn an_issuer_no_rule_names_is_refused() {
    let key = SigningKey::ec(Algorithm::ES256, "e1");
    let a = authn(vec![rule(inline(&[&key]))]);
    let other = key.sign(&with_claims(|c| {
        c["iss"] = json!("https://evil.example.com")
    }));
    assert_eq!(check(&a, &other), Err(AuthnError::UnknownIssuer));
    assert_eq!(
        AuthnError::UnknownIssuer.to_string(),
        "Jwt issuer is not configured"
    );
    let none = key.sign(&with_claims(|c| {
        c.as_object_mut().unwrap().remove("iss");
    }));
    assert_eq!(check(&a, &none), Err(AuthnError::UnknownIssuer));
}

#[test]
fn audiences_must_be_among_the_rules() {
    let key = SigningKey::ec(Algorithm::ES256, "e1");
    let mut r = rule(inline(&[&key]));
    r.audiences = vec!["https://api/".into(), "other".into()];
    let a = authn(vec![r]);
    assert!(
        check(&a, &key.sign(&claims())).unwrap().is_some(),
        "api ~ https://api/"
    );
    let wrong = key.sign(&with_claims(|c| c["aud"] = json!(["x", "y"])));
    assert_eq!(check(&a, &wrong), Err(AuthnError::AudienceNotAllowed));
    let listed = key.sign(&with_claims(|c| c["aud"] = json!(["x", "other"])));
    assert!(check(&a, &listed).unwrap().is_some());
    let missing = key.sign(&with_claims(|c| {
        c.as_object_mut().unwrap().remove("aud");
    }));
    assert_eq!(check(&a, &missing), Err(AuthnError::AudienceNotAllowed));
}

#[test]
fn bad_signatures_are_refused() {
    let key = SigningKey::rsa(1, Algorithm::RS256, "r1");
    let impostor = SigningKey::rsa(2, Algorithm::RS256, "r1");
    let a = authn(vec![rule(inline(&[&key]))]);
    assert_eq!(
        check(&a, &impostor.sign(&claims())),
        Err(AuthnError::VerificationFail)
    );

    // A valid token whose payload is swapped for another.
    let good = key.sign(&claims());
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(with_claims(|c| c["sub"] = json!("root")).to_string());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(check(&a, &forged), Err(AuthnError::VerificationFail));
}

#[test]
fn alg_none_is_refused_here_and_by_jsonwebtoken() {
    let key = SigningKey::rsa(1, Algorithm::RS256, "r1");
    let a = authn(vec![rule(inline(&[&key]))]);
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for sig in ["", "AAAA"] {
        let token = format!(
            "{}.{}.{sig}",
            b64(&json!({"alg": "none", "kid": "r1"})),
            b64(&claims())
        );
        assert_eq!(check(&a, &token), Err(AuthnError::AlgNotSupported));
        // The library itself refuses it: `none` is no `Algorithm`.
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
            key.jwk["n"].as_str().unwrap(),
            key.jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&token, &decoding, &v).is_err());
        assert!(jsonwebtoken::decode_header(&token).is_err());
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    let key = SigningKey::rsa(1, Algorithm::RS256, "r1");
    let a = authn(vec![rule(inline(&[&key]))]);
    // Every byte string an attacker could take for "the public key".
    let n = key.jwk["n"].as_str().unwrap().to_owned();
    let secrets: Vec<Vec<u8>> = vec![
        jwks(&[&key]).into_bytes(),
        key.jwk.to_string().into_bytes(),
        n.clone().into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&n)
            .unwrap(),
    ];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            for kid in [Some("r1".to_owned()), None] {
                let mut header = Header::new(alg);
                header.kid = kid;
                let token = jsonwebtoken::encode(
                    &header,
                    &claims(),
                    &EncodingKey::from_secret(&secret).unwrap(),
                )
                .unwrap();
                assert_eq!(check(&a, &token), Err(AuthnError::AlgNotSupported));
            }
        }
    }
}

#[test]
fn a_key_of_the_wrong_type_for_the_alg_is_not_used() {
    let rsa = SigningKey::rsa(1, Algorithm::RS256, "shared");
    let ec = SigningKey::ec(Algorithm::ES256, "ec");
    let a = authn(vec![rule(inline(&[&rsa]))]);
    // ES256 token naming the RSA key's kid: no key fits.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("shared".into());
    let token = jsonwebtoken::encode(&header, &claims(), &ec.key).unwrap();
    assert_eq!(check(&a, &token), Err(AuthnError::KidAlgMismatch));
    // An RSA key pinned to RS256 does not verify PS256.
    let mut pinned = rsa.jwk.clone();
    pinned["alg"] = json!("RS256");
    let doc = json!({ "keys": [pinned] }).to_string();
    let a = authn(vec![rule(JwksSource::Inline(doc))]);
    let ps = SigningKey::rsa(1, Algorithm::PS256, "shared");
    assert_eq!(
        check(&a, &ps.sign(&claims())),
        Err(AuthnError::KidAlgMismatch)
    );
    assert!(check(&a, &rsa.sign(&claims())).unwrap().is_some());
}

#[test]
fn keys_and_tokens_without_kid_match_by_type() {
    let ec = SigningKey::ec(Algorithm::ES256, "ignored");
    let rsa = SigningKey::rsa(1, Algorithm::RS256, "ignored");
    let mut ec_jwk = ec.jwk.clone();
    ec_jwk.as_object_mut().unwrap().remove("kid");
    let doc = json!({ "keys": [rsa.jwk.clone(), ec_jwk] }).to_string();
    let a = authn(vec![rule(JwksSource::Inline(doc))]);
    // Token with a kid the set does not name: the key without kid fits.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("whatever".into());
    let token = jsonwebtoken::encode(&header, &claims(), &ec.key).unwrap();
    assert!(check(&a, &token).unwrap().is_some());
    // Tokens without kid: every key of the right type is tried.
    assert!(check(&a, &ec.sign_without_kid(&claims()))
        .unwrap()
        .is_some());
    assert!(check(&a, &rsa.sign_without_kid(&claims()))
        .unwrap()
        .is_some());
}

#[test]
fn no_token_passes_without_identity() {
    let key = SigningKey::ec(Algorithm::ES256, "e1");
    let a = authn(vec![rule(inline(&[&key]))]);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-jwt", key.sign(&claims()).parse().unwrap());
    headers.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    let mut uri: http::Uri = "/p?token=abc".parse().unwrap();
    assert_eq!(a.authenticate(&mut headers, &mut uri), Ok(None));
    assert!(headers.get("authorization").is_some());
}

#[test]
fn malformed_tokens_are_refused() {
    let key = SigningKey::ec(Algorithm::ES256, "e1");
    let a = authn(vec![rule(inline(&[&key]))]);
    assert_eq!(check(&a, "not-a-jwt"), Err(AuthnError::BadFormat));
    assert_eq!(check(&a, "a.b.c"), Err(AuthnError::HeaderBadBase64));
    assert_eq!(check(&a, "bm90IGpzb24.b.c"), Err(AuthnError::HeaderBadJson));
}

#[test]
fn tokens_are_read_from_a_custom_header_a_param_and_a_cookie() {
    let key = SigningKey::ec(Algorithm::ES384, "e1");
    let mut r = rule(inline(&[&key]));
    r.from_headers = vec![TokenHeader {
        name: "x-jwt-assertion".into(),
        prefix: "Token ".into(),
    }];
    r.from_params = vec!["jwt".into()];
    r.from_cookies = vec!["session".into()];
    let a = authn(vec![r]);
    let token = key.sign(&claims());
    let principal = format!("{ISSUER}/alice");

    // Header with prefix.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-jwt-assertion", format!("Token {token}").parse().unwrap());
    let mut uri: http::Uri = "/p".parse().unwrap();
    let auth = a.authenticate(&mut headers, &mut uri).unwrap().unwrap();
    assert_eq!(auth.principal, principal);
    assert!(headers.get("x-jwt-assertion").is_none());
    // The header without its prefix carries no token; Authorization is not
    // read when locations are given.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-jwt-assertion", token.parse().unwrap());
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(a.authenticate(&mut headers, &mut uri), Ok(None));

    // Query parameter.
    let mut headers = http::HeaderMap::new();
    let mut uri: http::Uri = format!("/p?a=1&jwt={token}&b=2").parse().unwrap();
    let auth = a.authenticate(&mut headers, &mut uri).unwrap().unwrap();
    assert_eq!(auth.principal, principal);
    assert_eq!(uri, "/p?a=1&b=2");

    // Cookie.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "cookie",
        format!("theme=dark; session={token}").parse().unwrap(),
    );
    let mut uri: http::Uri = "/p".parse().unwrap();
    let auth = a.authenticate(&mut headers, &mut uri).unwrap().unwrap();
    assert_eq!(auth.principal, principal);
    assert_eq!(headers["cookie"], "theme=dark");

    // An invalid token in any of them is refused.
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", "session=a.b.c".parse().unwrap());
    assert_eq!(
        a.authenticate(&mut headers, &mut uri),
        Err(AuthnError::HeaderBadBase64)
    );
}

#[test]
fn default_locations_include_the_access_token_param() {
    let key = SigningKey::ed25519("ed");
    let a = authn(vec![rule(inline(&[&key]))]);
    let mut headers = http::HeaderMap::new();
    let mut uri: http::Uri = format!("/p?access_token={}", key.sign(&claims()))
        .parse()
        .unwrap();
    assert!(a.authenticate(&mut headers, &mut uri).unwrap().is_some());
    assert_eq!(uri, "/p");
}

#[test]
fn outputs_payload_and_claims_to_headers_and_can_keep_the_token() {
    let key = SigningKey::rsa(2, Algorithm::PS256, "p1");
    let mut r = rule(inline(&[&key]));
    r.output_payload_to_header = Some("x-jwt-payload".into());
    r.output_claim_to_headers = vec![
        ClaimToHeader {
            header: "x-group".into(),
            claim: "group".into(),
        },
        ClaimToHeader {
            header: "x-level".into(),
            claim: "level".into(),
        },
        ClaimToHeader {
            header: "x-admin".into(),
            claim: "admin".into(),
        },
        ClaimToHeader {
            header: "x-team".into(),
            claim: "org.team.name".into(),
        },
        ClaimToHeader {
            header: "x-absent".into(),
            claim: "nope".into(),
        },
    ];
    r.forward_original_token = true;
    let a = authn(vec![r]);
    let token = key.sign(&claims());
    let (mut headers, mut uri) = bearer(&token);
    // Forged outputs from the client are dropped.
    headers.insert("x-group", "forged".parse().unwrap());
    headers.insert("x-absent", "forged".parse().unwrap());

    a.authenticate(&mut headers, &mut uri).unwrap().unwrap();

    let payload = token.split('.').nth(1).unwrap();
    assert_eq!(headers["x-jwt-payload"], payload);
    let decoded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decoded["sub"], "alice");
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(all("x-group"), ["admins"]);
    assert_eq!(all("x-level"), ["3"]);
    assert_eq!(all("x-admin"), ["true"]);
    assert_eq!(all("x-team"), ["mesh"]);
    assert!(all("x-absent").is_empty());
    assert_eq!(
        headers["authorization"],
        format!("Bearer {token}"),
        "forwarded"
    );

    // Without a token the forged output headers are dropped too.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-jwt-payload", "forged".parse().unwrap());
    assert_eq!(a.authenticate(&mut headers, &mut uri), Ok(None));
    assert!(headers.get("x-jwt-payload").is_none());
}

#[test]
fn rules_sharing_a_location_each_accept_their_issuer_and_every_token_must_verify() {
    let k1 = SigningKey::ec(Algorithm::ES256, "k1");
    let k2 = SigningKey::ec(Algorithm::ES256, "k2");
    let mut r1 = rule(inline(&[&k1]));
    r1.issuer = "issuer-one".into();
    let mut r2 = rule(inline(&[&k2]));
    r2.issuer = "issuer-two".into();
    r2.from_headers = vec![
        TokenHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        TokenHeader {
            name: "x-two".into(),
            prefix: String::new(),
        },
    ];
    let a = authn(vec![r1, r2]);
    let t1 = k1.sign(&with_claims(|c| c["iss"] = json!("issuer-one")));
    let t2 = k2.sign(&with_claims(|c| c["iss"] = json!("issuer-two")));
    assert_eq!(check(&a, &t1), Ok(Some("issuer-one/alice".into())));
    assert_eq!(check(&a, &t2), Ok(Some("issuer-two/alice".into())));
    // issuer-one's key does not verify issuer-two's tokens.
    let swapped = k1.sign(&with_claims(|c| c["iss"] = json!("issuer-two")));
    assert_eq!(check(&a, &swapped), Err(AuthnError::KidAlgMismatch));
    // issuer-one is not read from x-two.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-two", t1.parse().unwrap());
    let mut uri: http::Uri = "/".parse().unwrap();
    assert_eq!(
        a.authenticate(&mut headers, &mut uri),
        Err(AuthnError::UnknownIssuer)
    );

    // Two valid tokens: the first found names the request.
    let (mut headers, mut uri) = bearer(&t1);
    headers.insert("x-two", t2.parse().unwrap());
    let auth = a.authenticate(&mut headers, &mut uri).unwrap().unwrap();
    assert_eq!(auth.principal, "issuer-one/alice");
    // A valid token beside an invalid one: refused.
    let expired = k2.sign(&with_claims(|c| {
        c["iss"] = json!("issuer-two");
        c["exp"] = json!(now() - 3600);
    }));
    let (mut headers, mut uri) = bearer(&t1);
    headers.insert("x-two", expired.parse().unwrap());
    assert_eq!(
        a.authenticate(&mut headers, &mut uri),
        Err(AuthnError::Expired)
    );
}

#[test]
fn unusable_rules_are_config_errors_with_their_path() {
    // An empty set.
    let e = Authenticator::new(vec![rule(JwksSource::Inline(jwks(&[])))], &cache())
        .err()
        .unwrap();
    assert!(matches!(e, ConfigError::InlineJwks { rule: 0, .. }), "{e}");
    assert!(e.to_string().starts_with("jwtRules[0].jwks: "), "{e}");

    let key = SigningKey::ec(Algorithm::ES256, "e1");
    let mut bad_header = rule(inline(&[&key]));
    bad_header.output_claim_to_headers = vec![ClaimToHeader {
        header: "bad header".into(),
        claim: "sub".into(),
    }];
    let e = Authenticator::new(vec![bad_header], &cache())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "jwtRules[0].outputClaimToHeaders[0].header: \"bad header\" is not a valid header name"
    );
    let e = Authenticator::new(
        vec![rule(JwksSource::Uri("ftp://example.com/jwks".into()))],
        &cache(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, ConfigError::JwksUri { rule: 0, .. }), "{e}");
}
