//! RequestAuthentication compiled: the JWT rules a workload accepts, and
//! what a verified token tells authorization (`request.auth.*`).

use std::time::Duration;

use serde::Serialize;

/// Where a rule's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// Fetched from `jwksUri` (cached and refreshed).
    Uri(String),
    /// Given inline (`jwks`): a JSON Web Key Set document.
    Inline(String),
}

/// A header a token is read from, with the prefix before it
/// (`Authorization: Bearer <token>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenHeader {
    /// Lower-case header name.
    pub name: String,
    pub prefix: String,
}

/// A claim copied to a request header (`outputClaimToHeaders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimToHeader {
    /// Lower-case header name.
    pub header: String,
    /// The claim's name; nested claims separated by `.`.
    pub claim: String,
}

/// One `jwtRules[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwtRule {
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any audience.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Where tokens are read from. With none of the three given, Istio's
    /// defaults: `Authorization: Bearer` and the `access_token` parameter.
    pub from_headers: Vec<TokenHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    /// Header that receives the verified payload (base64url).
    pub output_payload_to_header: Option<String>,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token in the request sent to the application.
    pub forward_original_token: bool,
    /// Timeout of a JWKS fetch (`timeout`; Istio's default 5 s).
    pub fetch_timeout: Duration,
}

/// What a verified token establishes, for AuthorizationPolicy's
/// `requestPrincipals` and `request.auth.*` conditions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestAuth {
    /// `<iss>/<sub>`.
    pub principal: String,
    /// The token's `aud` (a string or list in the token).
    pub audiences: Vec<String>,
    /// The token's `azp`.
    pub presenter: Option<String>,
    /// Every claim of the payload.
    pub claims: serde_json::Map<String, serde_json::Value>,
}
