//! A compact JWS token taken apart: header fields, payload claims and the
//! signature, each checked for the types Envoy's JWT library requires.
//! Nothing here is trusted until the signature has been verified.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::jwks::{supported_alg, SignatureBytes};
use crate::AuthnError;

/// base64url, padding optional (Envoy accepts both).
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A parsed, not yet verified token.
pub(crate) struct Token<'a> {
    /// `header.payload`: the bytes the signature covers.
    pub(crate) signed: &'a str,
    /// The payload section as sent (base64url), for `outputPayloadToHeader`.
    pub(crate) payload_b64: &'a str,
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) signature: SignatureBytes,
    pub(crate) claims: Map<String, Value>,
    /// `iss`, empty when absent.
    pub(crate) iss: String,
    pub(crate) exp: Option<u64>,
    pub(crate) nbf: Option<u64>,
    pub(crate) audiences: Vec<String>,
}

impl<'a> Token<'a> {
    /// Splits and decodes a token, checking the types of the registered
    /// claims. The algorithm is checked here, before any key is looked up:
    /// `none`, `HS*` and unknown names end the matter.
    pub(crate) fn parse(token: &'a str) -> Result<Token<'a>, AuthnError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthnError::BadFormat);
        };
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];

        let header = B64
            .decode(header_b64)
            .map_err(|_| AuthnError::HeaderBadBase64)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&header).map_err(|_| AuthnError::HeaderBadJson)?;
        let alg = match header.get("alg") {
            Some(Value::String(name)) => supported_alg(name).ok_or(AuthnError::AlgNotSupported)?,
            _ => return Err(AuthnError::HeaderBadAlg),
        };
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthnError::HeaderBadKid),
        };
        // RFC 7515 4.1.11: extensions listed in `crit` must be understood;
        // none is (`b64: false` would change what the signature covers).
        if header.contains_key("crit") {
            return Err(AuthnError::CritNotSupported);
        }

        let payload = B64
            .decode(payload_b64)
            .map_err(|_| AuthnError::PayloadBadBase64)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| AuthnError::PayloadBadJson)?;
        let iss = match claims.get("iss") {
            None => String::new(),
            Some(Value::String(iss)) => iss.clone(),
            Some(_) => return Err(AuthnError::IssNotString),
        };
        if claims.get("sub").is_some_and(|v| !v.is_string()) {
            return Err(AuthnError::SubNotString);
        }
        if claims.get("azp").is_some_and(|v| !v.is_string()) {
            return Err(AuthnError::AzpNotString);
        }
        let audiences = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(AuthnError::AudNotString)?,
            Some(_) => return Err(AuthnError::AudNotString),
        };
        let exp = time_claim(&claims, "exp", AuthnError::ExpNotInteger)?;
        let nbf = time_claim(&claims, "nbf", AuthnError::NbfNotInteger)?;
        time_claim(&claims, "iat", AuthnError::IatNotInteger)?;

        let signature = B64
            .decode(sig_b64)
            .map_err(|_| AuthnError::SignatureBadBase64)?;

        Ok(Token {
            signed,
            payload_b64,
            alg,
            kid,
            signature,
            claims,
            iss,
            exp,
            nbf,
            audiences,
        })
    }

    /// Envoy's time check: not before `nbf - skew`, not after `exp + skew`.
    pub(crate) fn check_time(&self, now: u64, skew: u64) -> Result<(), AuthnError> {
        if self.nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
            return Err(AuthnError::NotYetValid);
        }
        if self.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
            return Err(AuthnError::Expired);
        }
        Ok(())
    }
}

/// A NumericDate: a non-negative integer (a float with no fraction counts,
/// as in Envoy).
fn time_claim(
    claims: &Map<String, Value>,
    name: &str,
    err: AuthnError,
) -> Result<Option<u64>, AuthnError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(err);
    };
    if let Some(v) = n.as_u64() {
        return Ok(Some(v));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(err),
    }
}

/// Envoy's audience comparison: `http://` or `https://` and one trailing
/// slash are ignored on both sides.
pub(crate) fn same_audience(a: &str, b: &str) -> bool {
    fn trim(s: &str) -> &str {
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        s.strip_suffix('/').unwrap_or(s)
    }
    trim(a) == trim(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    #[test]
    fn parses_registered_claims() {
        let t = tok(
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10,"nbf":5.0,"iat":1}"#,
        );
        let token = Token::parse(&t).unwrap();
        assert_eq!(token.alg, Algorithm::ES256);
        assert_eq!(token.kid.as_deref(), Some("k1"));
        assert_eq!(token.iss, "i");
        assert_eq!(token.audiences, ["a", "b"]);
        assert_eq!((token.exp, token.nbf), (Some(10), Some(5)));
        assert_eq!(token.signature, b"sig");
        assert_eq!(token.signed, &t[..t.rfind('.').unwrap()]);
    }

    #[test]
    fn malformed_tokens_get_envoys_reasons() {
        let ok_payload = r#"{"iss":"i"}"#;
        let cases = [
            ("a.b".to_owned(), AuthnError::BadFormat),
            ("a.b.c.d".to_owned(), AuthnError::BadFormat),
            (
                format!("*.{}.c", b64(ok_payload)),
                AuthnError::HeaderBadBase64,
            ),
            (tok("[1]", ok_payload), AuthnError::HeaderBadJson),
            (
                tok(r#"{"typ":"JWT"}"#, ok_payload),
                AuthnError::HeaderBadAlg,
            ),
            (
                tok(r#"{"alg":"none"}"#, ok_payload),
                AuthnError::AlgNotSupported,
            ),
            (
                tok(r#"{"alg":"HS256"}"#, ok_payload),
                AuthnError::AlgNotSupported,
            ),
            (
                tok(r#"{"alg":"ES512"}"#, ok_payload),
                AuthnError::AlgNotSupported,
            ),
            (
                tok(r#"{"alg":"RS256","kid":1}"#, ok_payload),
                AuthnError::HeaderBadKid,
            ),
            (
                tok(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#, ok_payload),
                AuthnError::CritNotSupported,
            ),
            (tok(r#"{"alg":"RS256"}"#, "1"), AuthnError::PayloadBadJson),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"iss":1}"#),
                AuthnError::IssNotString,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"sub":[]}"#),
                AuthnError::SubNotString,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"aud":[1]}"#),
                AuthnError::AudNotString,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"exp":"1"}"#),
                AuthnError::ExpNotInteger,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"exp":-1}"#),
                AuthnError::ExpNotInteger,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"nbf":1.5}"#),
                AuthnError::NbfNotInteger,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"iat":true}"#),
                AuthnError::IatNotInteger,
            ),
        ];
        for (token, want) in cases {
            assert_eq!(Token::parse(&token).err(), Some(want), "{token}");
        }
        let bad_sig = format!("{}.{}.*", b64(r#"{"alg":"RS256"}"#), b64(ok_payload));
        assert_eq!(
            Token::parse(&bad_sig).err(),
            Some(AuthnError::SignatureBadBase64)
        );
    }

    #[test]
    fn time_window_allows_the_skew() {
        let t = tok(r#"{"alg":"ES256"}"#, r#"{"exp":1000,"nbf":900}"#);
        let token = Token::parse(&t).unwrap();
        assert_eq!(token.check_time(1000 + 60, 60), Ok(()));
        assert_eq!(token.check_time(1000 + 61, 60), Err(AuthnError::Expired));
        assert_eq!(token.check_time(900 - 60, 60), Ok(()));
        assert_eq!(token.check_time(900 - 61, 60), Err(AuthnError::NotYetValid));
    }

    #[test]
    fn audiences_compare_without_scheme_and_trailing_slash() {
        assert!(same_audience("https://api.example.com/", "api.example.com"));
        assert!(same_audience("http://a", "https://a/"));
        assert!(!same_audience("a", "b"));
    }
}
