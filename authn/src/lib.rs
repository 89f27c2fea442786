//! Istio's RequestAuthentication at run time: JWTs verified on the request
//! path with keys fetched, cached and refreshed in the background.
//!
//! # Use
//!
//! ```no_run
//! # async fn wire(rules: Vec<anymesh_core::security::jwt::JwtRule>) -> Result<(), Box<dyn std::error::Error>> {
//! use anymesh_authn::{Authenticator, FetchSettings, JwksCache};
//!
//! // Once per process: one cache, one refresh loop.
//! let cache = JwksCache::new(FetchSettings::default())?;
//! let _refresh = cache.spawn();
//!
//! // Per workload, whenever its RequestAuthentications change.
//! let authn = Authenticator::new(rules, &cache)?;
//! let _ = tokio::time::timeout(std::time::Duration::from_secs(2), authn.ready()).await;
//!
//! // Per request (synchronous, never waits for the network).
//! let req = http::Request::new(());
//! let (mut parts, _body) = req.into_parts();
//! match authn.authenticate(&mut parts.headers, &mut parts.uri) {
//!     Ok(Some(auth)) => { /* request.auth.* for AuthorizationPolicy */ }
//!     Ok(None) => { /* no token: no request principal */ }
//!     Err(e) => { /* 401, body e.reason() */ }
//! }
//! # Ok(()) }
//! ```
//!
//! # What is verified
//!
//! A token is read from each rule's locations (`fromHeaders` with their
//! prefixes, `fromParams`, `fromCookies`; without any, Istio's defaults
//! `Authorization: Bearer` and the `access_token` parameter). Then, in
//! Envoy's order: the compact form and the types of the registered claims;
//! the algorithm; the issuer (a rule reading that location must name the
//! token's `iss`); `nbf` and `exp` with Envoy's 60 s clock skew; the
//! audiences (any of the token's `aud` among the rule's, scheme and trailing
//! slash ignored; a rule without audiences accepts any); the signature, with
//! the keys of the issuer's set that fit the token.
//!
//! Refusals carry Envoy's status strings ([`AuthnError::reason`]): `Jwt is
//! expired`, `Jwt not yet valid`, `Jwt issuer is not configured`, `Audiences
//! in Jwt are not allowed`, `Jwt verification fails`, `Jwks doesn't have key
//! to match kid or alg from Jwt`, `Jwks remote fetch is failed`, …
//!
//! A verified token gives [`RequestAuth`](anymesh_core::security::jwt::RequestAuth):
//! principal `<iss>/<sub>`, audiences, presenter (`azp`) and the claims.
//! Its rule's outputs are applied: `outputPayloadToHeader` (the payload as
//! sent, base64url), `outputClaimToHeaders` (string, number and boolean
//! claims; nested claims by `.`), and the token is removed from the request
//! (its header, its query parameter, or its cookie) unless
//! `forwardOriginalToken`. The output headers are first removed from every
//! request, token or not, so a client cannot forge them (Envoy does the
//! same).
//!
//! # Algorithms and keys
//!
//! RS256/384/512, PS256/384/512, ES256, ES384 and EdDSA (Ed25519). ES512 is
//! not supported: jsonwebtoken does not implement P-521 (tokens get `Jwt
//! header [alg] is not supported`, P-521 keys are skipped). `alg: none` and
//! HS256/384/512 are refused before any key is looked at, so the HMAC
//! "public key as secret" confusion cannot happen; besides, keys are chosen
//! by `kid` and by a key type that fits the algorithm (RSA for RS/PS, P-256
//! for ES256, P-384 for ES384, OKP Ed25519 for EdDSA), and symmetric (`oct`)
//! keys are never loaded. A key without `kid` fits any token; a token
//! without `kid` tries each fitting key. A header with `crit` is refused (no
//! extension is understood). Verification is jsonwebtoken's RustCrypto
//! provider (pure Rust, no C toolchain), named explicitly rather than taken
//! from a process-wide default.
//!
//! # Several tokens, several rules
//!
//! Istio gives each rule an Envoy provider and requires
//! `OR(P1, …, Pn, AND(OR(P1, allow_missing), …))`; Envoy verifies every
//! token a provider extracts ("all of them must be valid") and Istio
//! documents requests with several tokens as unsupported, their principal
//! undefined. anymesh takes the strict reading: **every token found at any
//! rule's location must verify**, against the rule reading that location
//! whose issuer is the token's `iss` (rules sharing a location, such as the
//! default `Authorization` header, each accept their own issuer's tokens).
//! One invalid token refuses the request, even beside a valid one (Envoy's
//! outer OR could let it through when the two tokens sit in different
//! rules' locations). Several rules with the same issuer: the first that
//! verifies wins. With several valid tokens the first found (headers, then
//! parameters, then cookies, in rule order) gives the request's identity,
//! and each token's own rule applies its outputs.
//!
//! # Key sets
//!
//! Inline `jwks` are parsed when the [`Authenticator`] is built (an unusable
//! document is a [`ConfigError`]). `jwksUri` sets live in a shared
//! [`JwksCache`]: one entry per URI whatever the number of rules naming it,
//! fetched by one background loop ([`JwksCache::spawn`]) with reqwest
//! (rustls; public roots plus [`FetchSettings::extra_roots`]) and the rule's
//! `timeout` (5 s by default), every [`FetchSettings::refresh_interval`]
//! (20 min, Istio's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`), after a failure
//! again after 1 s doubling up to 60 s, and early when a token names a `kid`
//! the set lacks (a key rotation), at most once per
//! [`FetchSettings::unknown_kid_refetch_interval`] (30 s) per URI. That
//! token itself still gets 401: the request path never waits for a fetch.
//!
//! Failing closed: until a set has been fetched once, tokens of its issuer
//! are refused (`Jwks remote fetch is failed`) while requests without a
//! token pass. A failed refresh keeps the last keys fetched. The request
//! path reads keys through an `ArcSwapOption` and never blocks.

mod authenticator;
mod cache;
mod error;
mod extract;
mod jwks;
mod token;

pub use authenticator::Authenticator;
pub use cache::{FetchSettings, JwksCache};
pub use error::{AuthnError, ConfigError};
