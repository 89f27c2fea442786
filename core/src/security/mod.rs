//! Compiled security policy: Istio's `security.istio.io` resources
//! (PeerAuthentication, AuthorizationPolicy, RequestAuthentication) and
//! DestinationRule `trafficPolicy.tls`, in the form the proxy evaluates.
//!
//! [`SecurityPolicies::compile`] takes a loaded [`crate::config::ConfigSet`];
//! per local workload ([`WorkloadRef`]) it answers the mTLS mode of a port
//! ([`SecurityPolicies::peer_authentication`]), the AuthorizationPolicies to
//! check requests against ([`SecurityPolicies::authorization`], then
//! [`WorkloadAuthz::check`]) and the JWT rules to verify tokens with
//! ([`SecurityPolicies::jwt_rules`]). Everything here is pure: no I/O.

mod authz;
pub mod jwt;
mod matcher;
mod peer;
mod policies;

pub use authz::{
    AuthzInput, CompiledPolicy, Decision, DecisionReason, HttpAttributes, WorkloadAuthz,
};
pub use matcher::{normalize_path, Cidr};
pub use peer::{MtlsMode, PeerPolicy};
pub use policies::{
    SecurityOptions, SecurityPolicies, WorkloadRef, CLUSTER_LOCAL, DEFAULT_JWKS_TIMEOUT,
    DEFAULT_ROOT_NAMESPACE,
};

pub(crate) use authz::WhenKey;
pub(crate) use matcher::PathPattern;
