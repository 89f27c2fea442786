//! [`SecurityPolicies`]: every security resource of a [`ConfigSet`]
//! compiled once, with the per-workload queries the proxy makes.

use std::sync::Arc;
use std::time::Duration;

use super::authz::{CompiledPolicy, TrustDomains, WorkloadAuthz};
use super::jwt::{ClaimToHeader, JwksSource, JwtRule, TokenHeader};
use super::peer::{MtlsMode, PeerPolicy};
use crate::config::security::{JwtRuleSpec, PeerAuthentication, WorkloadSelector};
use crate::config::{ConfigSet, Resource};
use crate::model::Labels;

/// Istio's default root namespace: policies there without a selector apply
/// to the whole mesh.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Istio's default timeout of a JWKS fetch.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Istio's default trust domain, which AuthorizationPolicy principals
/// also use to mean "this mesh's trust domain".
pub const CLUSTER_LOCAL: &str = "cluster.local";

/// What compiling policies needs to know about the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Policies here without a selector apply mesh-wide; with one, to the
    /// matching workloads of every namespace (AuthorizationPolicy,
    /// RequestAuthentication).
    pub root_namespace: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Former trust domains still accepted (Istio's `trustDomainAliases`):
    /// a principal written with any of them, the trust domain, or
    /// `cluster.local` matches a peer of any of them.
    pub trust_domain_aliases: Vec<String>,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        SecurityOptions {
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            trust_domain: CLUSTER_LOCAL.to_string(),
            trust_domain_aliases: Vec::new(),
        }
    }
}

/// A local workload, as security policies select it.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadRef<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
}

/// The compiled security policies of a config.
#[derive(Debug, Clone, Default)]
pub struct SecurityPolicies {
    root_namespace: String,
    peer: Vec<Resource<PeerAuthentication>>,
    authz: Vec<Arc<CompiledPolicy>>,
    jwt: Vec<JwtEntry>,
}

#[derive(Debug, Clone)]
struct JwtEntry {
    namespace: String,
    selector: Option<WorkloadSelector>,
    rules: Vec<JwtRule>,
}

impl SecurityPolicies {
    /// Compiles the accepted resources of `config` (see
    /// [`ConfigSet::retain_valid`]); `root_namespace` is the mesh's root
    /// namespace ([`DEFAULT_ROOT_NAMESPACE`] unless configured).
    pub fn compile(config: &ConfigSet, root_namespace: &str) -> SecurityPolicies {
        SecurityPolicies::compile_with(
            config,
            &SecurityOptions {
                root_namespace: root_namespace.to_string(),
                ..SecurityOptions::default()
            },
        )
    }

    /// [`SecurityPolicies::compile`] with the mesh's trust domain and its
    /// aliases.
    pub fn compile_with(config: &ConfigSet, options: &SecurityOptions) -> SecurityPolicies {
        let mut domains = vec![options.trust_domain.clone()];
        domains.extend(options.trust_domain_aliases.iter().cloned());
        let domains = TrustDomains(domains);
        SecurityPolicies {
            root_namespace: options.root_namespace.clone(),
            peer: config.peer_authentications.clone(),
            authz: config
                .authorization_policies
                .iter()
                .map(|r| {
                    let p = CompiledPolicy::compile(&r.namespace, &r.name, &r.spec, &domains);
                    Arc::new(p)
                })
                .collect(),
            jwt: config
                .request_authentications
                .iter()
                .map(|r| JwtEntry {
                    namespace: r.namespace.clone(),
                    selector: r.spec.selector.clone(),
                    rules: r.spec.jwt_rules.iter().filter_map(jwt_rule).collect(),
                })
                .collect(),
        }
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// The workload's PeerAuthentication, composed as Istio composes it
    /// (see [`PeerPolicy`]).
    pub fn peer_authentication(&self, w: &WorkloadRef<'_>) -> PeerPolicy {
        let root = self.root_namespace.as_str();
        let first = |pred: &dyn Fn(&Resource<PeerAuthentication>) -> bool| {
            self.peer.iter().find(|r| pred(r))
        };
        let mesh = first(&|r| r.namespace == root && !r.spec.has_selector());
        let namespace = if w.namespace == root {
            None // the root namespace's own policy is the mesh policy
        } else {
            first(&|r| r.namespace == w.namespace && !r.spec.has_selector())
        };
        // Istio ignores selector policies in the root namespace.
        let workload = first(&|r| {
            r.namespace == w.namespace
                && r.namespace != root
                && r.spec.has_selector()
                && r.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| s.matches(w.labels))
        });
        let ids = [mesh, namespace, workload].map(|r| r.map(|r| (r.id(), &r.spec)));
        let level = |i: usize| ids[i].as_ref().map(|(id, s)| (id.as_str(), *s));
        PeerPolicy::compose(level(0), level(1), level(2))
    }

    /// The mTLS mode of one port of the workload.
    pub fn mtls_mode(&self, w: &WorkloadRef<'_>, port: u16) -> MtlsMode {
        self.peer_authentication(w).mode(port)
    }

    /// The AuthorizationPolicies that apply to the workload: those of the
    /// root namespace and of its own namespace whose selector (if any)
    /// matches its labels. Build once per workload and config; checking is
    /// [`WorkloadAuthz::check`].
    pub fn authorization(&self, w: &WorkloadRef<'_>) -> WorkloadAuthz {
        let mut out = WorkloadAuthz::default();
        for p in &self.authz {
            if p.applies_to(&self.root_namespace, w.namespace, w.labels) {
                out.add(Arc::clone(p));
            }
        }
        out
    }

    /// The JWT rules of every RequestAuthentication that applies to the
    /// workload (root namespace and its own, selector matching), merged as
    /// Istio merges them: a token is accepted if any rule accepts it.
    pub fn jwt_rules(&self, w: &WorkloadRef<'_>) -> Vec<JwtRule> {
        self.jwt
            .iter()
            .filter(|e| {
                (e.namespace == w.namespace || e.namespace == self.root_namespace)
                    && e.selector.as_ref().is_none_or(|s| s.matches(w.labels))
            })
            .flat_map(|e| e.rules.iter().cloned())
            .collect()
    }
}

/// A `jwtRules[]` entry compiled; `None` for one validation refuses.
/// `jwksUri` wins over `jwks` when both are set, as with Istio's default
/// (remote) JWKS fetch mode.
pub(crate) fn jwt_rule(spec: &JwtRuleSpec) -> Option<JwtRule> {
    let jwks = if !spec.jwks_uri.is_empty() {
        JwksSource::Uri(spec.jwks_uri.clone())
    } else if !spec.jwks.is_empty() {
        JwksSource::Inline(spec.jwks.clone())
    } else {
        return None;
    };
    if spec.issuer.is_empty() {
        return None;
    }
    Some(JwtRule {
        issuer: spec.issuer.clone(),
        audiences: spec.audiences.clone(),
        jwks,
        from_headers: spec
            .from_headers
            .iter()
            .map(|h| TokenHeader {
                name: h.name.to_ascii_lowercase(),
                prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: spec.from_params.clone(),
        from_cookies: spec.from_cookies.clone(),
        output_payload_to_header: Some(spec.output_payload_to_header.to_ascii_lowercase())
            .filter(|h| !h.is_empty()),
        output_claim_to_headers: spec
            .output_claim_to_headers
            .iter()
            .map(|c| ClaimToHeader {
                header: c.header.to_ascii_lowercase(),
                claim: c.claim.clone(),
            })
            .collect(),
        forward_original_token: spec.forward_original_token,
        fetch_timeout: spec.timeout.map_or(DEFAULT_JWKS_TIMEOUT, |d| d.0),
    })
}
