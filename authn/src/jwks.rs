//! JSON Web Key Sets: parsed once into verification keys, each tagged with
//! the algorithms it may verify.
//!
//! Only public keys of the kinds the supported algorithms use are kept:
//! RSA (`n`, `e`) for RS*/PS*, EC P-256 and P-384 (`x`, `y`) for ES256 and
//! ES384, OKP Ed25519 (`x`) for EdDSA. Symmetric (`oct`) keys are dropped:
//! HMAC tokens are refused, so a public key can never be used as an HMAC
//! secret. A key that does not parse is skipped with its reason; a set with
//! no usable key is an error.

use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The kind of a public key, which decides the algorithms it fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether a token signed with `alg` can be verified with this kind of
    /// key. This is the guard against algorithm confusion: the token's `alg`
    /// only ever selects among keys of its own kind.
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (KeyKind::EcP256, Algorithm::ES256)
                | (KeyKind::EcP384, Algorithm::ES384)
                | (KeyKind::Ed25519, Algorithm::EdDSA)
        )
    }

    /// An algorithm this kind verifies, to check a key at load time.
    fn probe_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::EcP256 => Algorithm::ES256,
            KeyKind::EcP384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// One verification key.
pub(crate) struct Key {
    /// `kid`, when the set gives one.
    pub(crate) kid: Option<String>,
    /// `alg`, when the set pins the key to one algorithm.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) kind: KeyKind,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Key>,
}

/// A decoded signature, in the type jsonwebtoken's verifiers take.
pub(crate) type SignatureBytes = Vec<u8>;

/// What picking keys for a token found.
pub(crate) enum Pick {
    /// At least one key fits; the signature verified with one of them.
    Verified,
    /// Keys fit but none verified the signature.
    BadSignature,
    /// No key fits the token's `kid` and `alg`.
    NoKey,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    pub(crate) fn parse(doc: &[u8]) -> Result<KeySet, String> {
        let value: Value =
            serde_json::from_slice(doc).map_err(|e| format!("Jwks is an invalid JSON: {e}"))?;
        let Some(obj) = value.as_object() else {
            return Err("Jwks is an invalid JSON: not an object".into());
        };
        let Some(keys) = obj.get("keys") else {
            return Err("Jwks does not have [keys] field".into());
        };
        let Some(keys) = keys.as_array() else {
            return Err("[keys] in Jwks is not an array".into());
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut skipped = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            match parse_key(jwk) {
                Ok(Some(key)) => out.push(key),
                Ok(None) => {}
                Err(reason) => skipped.push(format!("keys[{i}]: {reason}")),
            }
        }
        if out.is_empty() {
            let mut reason = String::from("Jwks doesn't have any valid public key");
            if !skipped.is_empty() {
                reason.push_str(" (");
                reason.push_str(&skipped.join("; "));
                reason.push(')');
            }
            return Err(reason);
        }
        if !skipped.is_empty() {
            tracing::warn!(skipped = %skipped.join("; "), "jwks keys skipped");
        }
        Ok(KeySet { keys: out })
    }

    /// Whether some key carries this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Verifies `signature` over `message` with every key that fits the
    /// token: same `kid` when both name one (a key without `kid` fits any
    /// token, a token without `kid` tries every key), the key's `alg` equal
    /// to the token's when the key names one, and a key kind that fits the
    /// algorithm.
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        message: &[u8],
        signature: &SignatureBytes,
    ) -> Pick {
        let mut fitted = false;
        for key in &self.keys {
            if let (Some(want), Some(have)) = (kid, key.kid.as_deref()) {
                if want != have {
                    continue;
                }
            }
            if key.alg.is_some_and(|a| a != alg) || !key.kind.fits(alg) {
                continue;
            }
            fitted = true;
            if verify_with(&key.key, alg, message, signature) {
                return Pick::Verified;
            }
        }
        if fitted {
            Pick::BadSignature
        } else {
            Pick::NoKey
        }
    }
}

/// One signature check through jsonwebtoken's RustCrypto provider, named
/// directly so no process-wide provider choice can change it.
fn verify_with(
    key: &DecodingKey,
    alg: Algorithm,
    message: &[u8],
    signature: &SignatureBytes,
) -> bool {
    match (DEFAULT_PROVIDER.verifier_factory)(&alg, key) {
        Ok(verifier) => verifier.verify(message, signature).is_ok(),
        Err(_) => false,
    }
}

/// The algorithms anymesh verifies, by their JOSE names. `none`, `HS*` and
/// anything else are refused before any key is looked at.
pub(crate) fn supported_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("[{name}] is not a string")),
    }
}

fn required<'a>(jwk: &'a Value, name: &str, kty: &str) -> Result<&'a str, String> {
    str_field(jwk, name)?.ok_or_else(|| format!("[{name}] field is missing for a {kty} key"))
}

/// Parses one JWK. `Ok(None)` for keys that are well formed but not for
/// signature verification here (`use: enc`, `oct` keys).
fn parse_key(jwk: &Value) -> Result<Option<Key>, String> {
    if !jwk.is_object() {
        return Err("not an object".into());
    }
    let kty = str_field(jwk, "kty")?.ok_or("[kty] is missing in [keys]")?;
    let kid = str_field(jwk, "kid")?.map(str::to_owned);
    if str_field(jwk, "use")? == Some("enc") {
        return Ok(None);
    }
    let alg = match str_field(jwk, "alg")? {
        None => None,
        Some(name) => match supported_alg(name) {
            Some(alg) => Some(alg),
            // A key pinned to an algorithm that is refused (HS*, ES512,
            // encryption algorithms) can never verify a token here.
            None => return Ok(None),
        },
    };
    let (kind, key) = match kty {
        "RSA" => {
            let n = required(jwk, "n", "RSA")?;
            let e = required(jwk, "e", "RSA")?;
            let key = DecodingKey::from_rsa_components(n, e)
                .map_err(|e| format!("RSA [n] or [e] has a parse error: {e}"))?;
            (KeyKind::Rsa, key)
        }
        "EC" => {
            let crv = required(jwk, "crv", "EC")?;
            let (kind, len) = match crv {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                // P-521 (ES512) is not implemented by jsonwebtoken.
                "P-521" => return Ok(None),
                other => return Err(format!("[crv] {other:?} is not supported for an EC key")),
            };
            let x = required(jwk, "x", "EC")?;
            let y = required(jwk, "y", "EC")?;
            check_len(x, len, "x")?;
            check_len(y, len, "y")?;
            let key = DecodingKey::from_ec_components(x, y)
                .map_err(|e| format!("EC [x] or [y] has a parse error: {e}"))?;
            (kind, key)
        }
        "OKP" => {
            let crv = required(jwk, "crv", "OKP")?;
            if crv != "Ed25519" {
                return Err(format!("[crv] {crv:?} is not supported for an OKP key"));
            }
            let x = required(jwk, "x", "OKP")?;
            check_len(x, 32, "x")?;
            let key = DecodingKey::from_ed_components(x)
                .map_err(|e| format!("OKP [x] has a parse error: {e}"))?;
            (KeyKind::Ed25519, key)
        }
        "oct" => return Ok(None),
        other => return Err(format!("[kty] {other:?} is not supported")),
    };
    if let Some(alg) = alg {
        if !kind.fits(alg) {
            return Err(format!("[alg] {alg:?} does not fit a {kty} key"));
        }
    }
    // Build a verifier once: an EC point off the curve or an Ed25519 key
    // that does not decode is refused here rather than on every request.
    if (DEFAULT_PROVIDER.verifier_factory)(&kind.probe_alg(), &key).is_err() {
        return Err(format!("the {kty} key is not a valid public key"));
    }
    Ok(Some(Key {
        kid,
        alg,
        kind,
        key,
    }))
}

/// Checks a base64url coordinate decodes to `len` bytes.
fn check_len(b64: &str, len: usize, field: &str) -> Result<(), String> {
    use base64::Engine as _;
    let bytes = crate::token::B64
        .decode(b64)
        .map_err(|_| format!("[{field}] is an invalid Base64"))?;
    if bytes.len() != len {
        return Err(format!("[{field}] field is wrong length"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1",
        "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;

    #[test]
    fn parses_keys_and_skips_what_cannot_verify() {
        let doc = format!(
            r#"{{"keys":[{EC_P256},
                {{"kty":"oct","k":"c2VjcmV0"}},
                {{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}},
                {{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}},
                {{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}]}}"#
        );
        let set = KeySet::parse(doc.as_bytes()).unwrap();
        let kinds: Vec<_> = set.keys.iter().map(|k| k.kind).collect();
        assert_eq!(kinds, [KeyKind::EcP256, KeyKind::Ed25519]);
        assert!(set.has_kid("ec1"));
        assert!(!set.has_kid("other"));
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        // x of the key above with y of another point: not on P-256.
        let doc = r#"{"keys":[{"kty":"EC","crv":"P-256",
            "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4"}]}"#;
        let err = KeySet::parse(doc.as_bytes()).unwrap_err();
        assert!(err.contains("not a valid public key"), "{err}");
    }

    #[test]
    fn documents_without_keys_are_errors() {
        for (doc, want) in [
            ("not json", "invalid JSON"),
            ("{}", "does not have [keys]"),
            (r#"{"keys":{}}"#, "not an array"),
            (
                r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
                "any valid public key",
            ),
            (
                r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#,
                "[n] field is missing",
            ),
        ] {
            let err = KeySet::parse(doc.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn keys_fit_only_their_algorithms() {
        assert!(KeyKind::Rsa.fits(Algorithm::PS384));
        assert!(!KeyKind::Rsa.fits(Algorithm::HS256));
        assert!(!KeyKind::EcP256.fits(Algorithm::ES384));
        assert!(!KeyKind::Ed25519.fits(Algorithm::ES256));
        assert_eq!(supported_alg("none"), None);
        assert_eq!(supported_alg("HS256"), None);
        assert_eq!(supported_alg("ES512"), None);
    }
}
