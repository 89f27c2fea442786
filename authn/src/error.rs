//! Why a token was refused (the 401 body and the log line), and why a set of
//! rules could not be compiled.

use std::fmt;

/// Why a request's token was refused. The proxy answers 401 with
/// [`AuthnError::reason`] as the body, as Envoy's `jwt_authn` filter does;
/// the reasons are Envoy's own status strings, so logs and tests written
/// against Istio read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthnError {
    /// Not three base64url sections separated by two dots.
    BadFormat,
    /// The header section is not base64url.
    HeaderBadBase64,
    /// The header section is not a JSON object.
    HeaderBadJson,
    /// `alg` is missing or not a string.
    HeaderBadAlg,
    /// `alg` names an algorithm anymesh refuses or does not implement
    /// (`none`, `HS*`, `ES512`, unknown names).
    AlgNotSupported,
    /// `kid` is not a string.
    HeaderBadKid,
    /// The header has a `crit` member: no extension is understood.
    CritNotSupported,
    /// The payload section is not base64url.
    PayloadBadBase64,
    /// The payload section is not a JSON object.
    PayloadBadJson,
    /// `iss` is not a string.
    IssNotString,
    /// `sub` is not a string.
    SubNotString,
    /// `aud` is neither a string nor a list of strings.
    AudNotString,
    /// `azp` is not a string.
    AzpNotString,
    /// `exp` is not a non-negative integer.
    ExpNotInteger,
    /// `nbf` is not a non-negative integer.
    NbfNotInteger,
    /// `iat` is not a non-negative integer.
    IatNotInteger,
    /// The signature section is not base64url.
    SignatureBadBase64,
    /// No rule reading the token's location names its `iss`.
    UnknownIssuer,
    /// `nbf` is later than now plus the clock skew.
    NotYetValid,
    /// `exp` is earlier than now minus the clock skew.
    Expired,
    /// None of the token's `aud` values is accepted by the rule.
    AudienceNotAllowed,
    /// A key fitting the token was found but the signature does not verify.
    VerificationFail,
    /// No key of the issuer's set fits the token's `kid` and `alg`.
    KidAlgMismatch,
    /// The issuer's key set has no usable key.
    NoValidKeys,
    /// The issuer's keys have never been fetched successfully.
    FetchFailed,
}

impl AuthnError {
    /// The reason, short and stable: Envoy's wording where Envoy has one.
    pub fn reason(self) -> &'static str {
        match self {
            AuthnError::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            AuthnError::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            AuthnError::HeaderBadJson => "Jwt header is an invalid JSON",
            AuthnError::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            AuthnError::AlgNotSupported => "Jwt header [alg] is not supported",
            AuthnError::HeaderBadKid => "Jwt header [kid] field is not a string",
            AuthnError::CritNotSupported => "Jwt header [crit] is not supported",
            AuthnError::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            AuthnError::PayloadBadJson => "Jwt payload is an invalid JSON",
            AuthnError::IssNotString => "Jwt payload [iss] field is not a string",
            AuthnError::SubNotString => "Jwt payload [sub] field is not a string",
            AuthnError::AudNotString => "Jwt payload [aud] field is not a string or string list",
            AuthnError::AzpNotString => "Jwt payload [azp] field is not a string",
            AuthnError::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            AuthnError::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            AuthnError::IatNotInteger => "Jwt payload [iat] field is not an integer",
            AuthnError::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            AuthnError::UnknownIssuer => "Jwt issuer is not configured",
            AuthnError::NotYetValid => "Jwt not yet valid",
            AuthnError::Expired => "Jwt is expired",
            AuthnError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            AuthnError::VerificationFail => "Jwt verification fails",
            AuthnError::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            AuthnError::NoValidKeys => "Jwks doesn't have any valid public key",
            AuthnError::FetchFailed => "Jwks remote fetch is failed",
        }
    }

    /// The HTTP status the request gets: always 401.
    pub fn status(self) -> http::StatusCode {
        http::StatusCode::UNAUTHORIZED
    }
}

impl fmt::Display for AuthnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthnError {}

/// A rule that cannot be compiled into an [`crate::Authenticator`], or a
/// fetch setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An inline `jwks` document gives no usable key.
    #[error("jwtRules[{rule}].jwks: {reason}")]
    InlineJwks {
        /// Index of the rule in the list given.
        rule: usize,
        /// What is wrong with the document.
        reason: String,
    },
    /// A header name (token location or output) is not a valid HTTP header
    /// name.
    #[error("jwtRules[{rule}].{field}: {name:?} is not a valid header name")]
    HeaderName {
        /// Index of the rule in the list given.
        rule: usize,
        /// The field path inside the rule (`fromHeaders[0].name`, …).
        field: String,
        /// The name given.
        name: String,
    },
    /// `jwksUri` is not an http(s) URL.
    #[error("jwtRules[{rule}].jwksUri: {uri:?} is not an http or https URL")]
    JwksUri {
        /// Index of the rule in the list given.
        rule: usize,
        /// The URI given.
        uri: String,
    },
    /// The HTTPS client for `jwksUri` fetches could not be built.
    #[error("building the JWKS fetch client: {0}")]
    Client(#[source] reqwest::Error),
}
