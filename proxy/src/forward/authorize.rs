//! The inbound policy check of each request, before it is routed: the
//! token (if any) verified first and taken off the request unless its rule
//! forwards it, then authorization ([`crate::policy`]).

use anymesh_core::security::{normalize_path, AuthzInput, HttpAttributes};
use http::request::Parts;

use crate::error::ErrorKind;
use crate::policy::RBAC_DENIED;
use crate::service::{InboundConn, Peer};

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
