//! Inbound policy: the local workload's RequestAuthentication and
//! AuthorizationPolicy in force, which the forwarding layer checks for each
//! inbound request before it is routed (`forward::authorize`).
//! A token that fails verification is answered 401 with Envoy's reason; a
//! request authorization refuses is answered 403 `RBAC: access denied`, as
//! Istio's sidecars answer them.

use std::sync::Arc;

use anymesh_authn::Authenticator;
use anymesh_core::security::WorkloadAuthz;
use arc_swap::ArcSwap;

/// The body of a request authorization refuses (Envoy's RBAC filter's).
pub(crate) const RBAC_DENIED: &str = "RBAC: access denied";

/// The policies of the local workload in force.
#[derive(Default)]
pub struct InboundPolicy {
    pub authz: WorkloadAuthz,
    /// `None`: no RequestAuthentication applies.
    pub authn: Option<Authenticator>,
}

impl std::fmt::Debug for InboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundPolicy")
            .field("authz", &self.authz)
            .field("authn", &self.authn.is_some())
            .finish()
    }
}

/// The policies in force, replaced whole when the config changes.
pub type SharedPolicy = Arc<ArcSwap<InboundPolicy>>;
