//! Inbound policy: what a local workload's RequestAuthentication and
//! AuthorizationPolicy say about each request, checked before it is routed.
//! A token that fails verification is answered 401 with Envoy's reason; a
//! request authorization refuses is answered 403 `RBAC: access denied`, as
//! Istio's sidecars answer them.

use std::sync::Arc;

use anymesh_authn::Authenticator;
use anymesh_core::security::{normalize_path, AuthzInput, HttpAttributes, WorkloadAuthz};
use arc_swap::ArcSwap;
use http::request::Parts;

use crate::error::ErrorKind;
use crate::service::{InboundConn, Peer};

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

/// Why a request is refused: its kind (401 or 403) and the body.
pub(crate) struct Refused {
    pub kind: ErrorKind,
    pub body: String,
}

/// Checks one inbound request. The token (if any) is verified first and
/// taken off the request unless its rule forwards it; then authorization.
pub(crate) fn check(parts: &mut Parts, peer: &Peer, conn: &InboundConn) -> Result<(), Refused> {
    let policy = conn.policy.load();
    let auth = match &policy.authn {
        None => None,
        Some(a) => a
            .authenticate(&mut parts.headers, &mut parts.uri)
            .map_err(|e| {
                tracing::debug!(peer = %peer.addr, reason = e.reason(), "inbound request refused: invalid JWT");
                Refused {
                    kind: ErrorKind::Unauthenticated,
                    body: e.reason().to_string(),
                }
            })?,
    };
    if policy.authz.is_empty() {
        return Ok(());
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let path = normalize_path(parts.uri.path());
    let input = AuthzInput {
        source_ip: peer.addr.ip(),
        remote_ip: peer.addr.ip(),
        destination_ip: conn.local.ip(),
        destination_port: conn.port,
        principal: conn.peer_id.as_ref().map(|id| id.principal()),
        sni: conn.sni.as_deref(),
        http: Some(HttpAttributes {
            host,
            method: parts.method.as_str(),
            path: &path,
            headers: &parts.headers,
            request_auth: auth.as_ref(),
        }),
    };
    let decision = policy.authz.check(&input);
    if let Some(audit) = decision.audit {
        tracing::info!(peer = %peer.addr, policy = audit, method = %parts.method, path = %path, "AUDIT policy matched");
    }
    if decision.allowed {
        return Ok(());
    }
    tracing::debug!(
        peer = %peer.addr,
        principal = ?input.principal,
        policy = ?decision.policy,
        reason = ?decision.reason,
        method = %parts.method,
        path = %path,
        "inbound request refused by authorization"
    );
    Err(Refused {
        kind: ErrorKind::Forbidden,
        body: RBAC_DENIED.to_string(),
    })
}
