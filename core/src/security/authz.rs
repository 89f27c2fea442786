//! AuthorizationPolicy compiled and evaluated as Istio (Envoy's RBAC
//! filters, as Istio generates them) evaluates it.
//!
//! For one workload the applicable policies are split by action and checked
//! in Istio's order: CUSTOM (not supported: a CUSTOM policy fails closed, so
//! a request it matches is denied), then DENY (any match denies), then ALLOW
//! (no ALLOW policy: allowed; otherwise allowed only when one matches).
//! AUDIT policies only mark the decision.
//!
//! A policy matches when one of its rules does; a rule matches when one of
//! its `from` entries, one of its `to` entries and all its `when`
//! conditions match (a missing `from` or `to` matches anything). Within a
//! `source` or `operation` every field given must match; a field matches
//! when any of its values does, and its `not` form when none does. A value
//! that needs something the request lacks (a peer principal without mTLS, a
//! JWT, a header, the SNI) does not match, so its `not` form does.
//!
//! For plain TCP ([`AuthzInput::http`] `None`), HTTP-only fields
//! (`requestPrincipals`, `hosts`, `methods`, `paths`, `request.*`) make an
//! ALLOW rule match nothing and are left out of DENY, AUDIT and CUSTOM
//! rules, as Istio generates its TCP filter.
//!
//! Evaluation allocates nothing, except to join a header that appears more
//! than once (Envoy compares the values joined with `,`).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use serde_json::Value;

use super::jwt::RequestAuth;
use super::matcher::{Cidr, Glob, PathPattern, StrPattern};
use crate::config::security::{
    AuthorizationAction, AuthorizationPolicy, Condition, Operation, Source,
};

/// What a request or connection looks like to authorization.
#[derive(Debug, Clone, Copy)]
pub struct AuthzInput<'a> {
    /// The peer address of the connection (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client address (`remote.ip`, `remoteIpBlocks`): from
    /// `X-Forwarded-For` or PROXY protocol where trusted, else the source.
    pub remote_ip: IpAddr,
    /// The address and port the connection arrived on (`destination.*`,
    /// `ports`): the workload's port.
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// The verified peer identity in Istio's form, without `spiffe://`
    /// (`cluster.local/ns/default/sa/sleep`); `None` without mTLS. The
    /// source namespace is read from it.
    pub principal: Option<&'a str>,
    /// The TLS server name the client asked for.
    pub sni: Option<&'a str>,
    /// The HTTP request; `None` for a plain TCP connection.
    pub http: Option<HttpAttributes<'a>>,
}

/// The HTTP parts of an [`AuthzInput`].
#[derive(Debug, Clone, Copy)]
pub struct HttpAttributes<'a> {
    /// `:authority` / `Host`, as sent (a port included, as in Istio).
    pub host: &'a str,
    pub method: &'a str,
    /// The path as [`normalize_path`](super::normalize_path) gives it; any
    /// query is ignored.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// What a verified JWT established; `None` without a token.
    pub request_auth: Option<&'a RequestAuth>,
}

/// Why a [`Decision`] was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionReason {
    /// No ALLOW policy applies to the workload (and nothing denied).
    NoAllowPolicy,
    /// An ALLOW policy matched ([`Decision::policy`]).
    Allowed,
    /// A DENY policy matched ([`Decision::policy`]).
    Denied,
    /// A CUSTOM policy matched: unsupported, so it fails closed.
    DeniedByCustom,
    /// ALLOW policies apply and none matched.
    NoAllowMatched,
}

/// The outcome of [`WorkloadAuthz::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub reason: DecisionReason,
    /// `namespace/name` of the policy that decided, when one did.
    pub policy: Option<&'a str>,
    /// `namespace/name` of the first AUDIT policy that matched.
    pub audit: Option<&'a str>,
}

/// One AuthorizationPolicy, compiled.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    id: Box<str>,
    pub(crate) namespace: String,
    pub(crate) selector: Option<crate::config::security::WorkloadSelector>,
    action: AuthorizationAction,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// One list per `from` entry (a single empty list without `from`).
    principals: Vec<Vec<Check>>,
    /// One list per `to` entry (a single empty list without `to`).
    permissions: Vec<Vec<Check>>,
    when: Vec<Check>,
    http_only: bool,
}

#[derive(Debug, Clone)]
struct Check {
    matcher: Matcher,
    negate: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    SourceIp(Vec<Cidr>),
    RemoteIp(Vec<Cidr>),
    DestinationIp(Vec<Cidr>),
    DestinationPort(Vec<u16>),
    Sni(Vec<StrPattern>),
    Principal(Vec<StrPattern>),
    Namespace(Vec<Glob>),
    /// `(namespace, service account)`.
    ServiceAccount(Vec<(Box<str>, Box<str>)>),
    TrustDomain(Vec<Glob>),
    /// `(iss, sub)` patterns.
    RequestPrincipal(Vec<(StrPattern, StrPattern)>),
    Audiences(Vec<StrPattern>),
    Presenter(Vec<StrPattern>),
    Claim(Vec<String>, Vec<StrPattern>),
    Header(HeaderName, Vec<StrPattern>),
    Host(Vec<StrPattern>),
    Method(Vec<StrPattern>),
    Path(Vec<PathPattern>),
    /// Something anymesh cannot evaluate (`experimental.*`, or a value
    /// that skipped validation): fails closed.
    Unsupported,
}

/// A `when` key, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WhenKey {
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourceServiceAccount,
    SourcePrincipal,
    SourceTrustDomain,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestHeader(String),
    RequestClaim(Vec<String>),
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// `experimental.envoy.filters.*`: Envoy metadata, not supported.
    Experimental,
}

impl WhenKey {
    /// Parses a key as Istio's validation does; the error says why.
    pub(crate) fn parse(key: &str) -> Result<WhenKey, String> {
        Ok(match key {
            "source.ip" => WhenKey::SourceIp,
            "remote.ip" => WhenKey::RemoteIp,
            "source.namespace" => WhenKey::SourceNamespace,
            "source.serviceAccount" => WhenKey::SourceServiceAccount,
            "source.principal" => WhenKey::SourcePrincipal,
            "source.trustDomain" => WhenKey::SourceTrustDomain,
            "request.auth.principal" => WhenKey::RequestPrincipal,
            "request.auth.audiences" => WhenKey::RequestAudiences,
            "request.auth.presenter" => WhenKey::RequestPresenter,
            "destination.ip" => WhenKey::DestinationIp,
            "destination.port" => WhenKey::DestinationPort,
            "connection.sni" => WhenKey::ConnectionSni,
            "destination.namespace" => {
                return Err(format!(
                    "attribute {key} is replaced by the policy's metadata.namespace"
                ))
            }
            "destination.name" | "destination.user" => {
                return Err(format!(
                    "deprecated attribute {key}: only supported in v1alpha1"
                ))
            }
            k if k.starts_with("destination.labels") => {
                return Err(format!(
                    "attribute {key} is replaced by the workload selector"
                ))
            }
            k if k.starts_with("request.headers") => {
                let name =
                    in_brackets(&k["request.headers".len()..]).ok_or_else(|| bad_map_key(key))?;
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!("invalid header name {name:?} in {key}"));
                }
                WhenKey::RequestHeader(name.to_ascii_lowercase())
            }
            k if k.starts_with("request.auth.claims") => WhenKey::RequestClaim(
                nested_brackets(&k["request.auth.claims".len()..]).ok_or_else(|| {
                    format!(
                        "bad key ({key}): should have format request.auth.claims[name] or [a][b]"
                    )
                })?,
            ),
            k if k.starts_with("experimental.envoy.filters.") => {
                if in_brackets_anywhere(k).is_none() {
                    return Err(bad_map_key(key));
                }
                WhenKey::Experimental
            }
            _ => return Err(format!("unknown attribute: {key}")),
        })
    }
}

fn bad_map_key(key: &str) -> String {
    format!("bad key ({key}): should have format a[b]")
}

/// `[name]` → `name` (non-empty).
fn in_brackets(s: &str) -> Option<&str> {
    s.strip_prefix('[')?
        .strip_suffix(']')
        .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
}

/// Istio's check for `a[b]` keys: a `[` after the start and a non-empty
/// name before the closing `]`.
fn in_brackets_anywhere(key: &str) -> Option<()> {
    let open = key.find('[')?;
    (key.ends_with(']') && open > 0 && open < key.len() - 2).then_some(())
}

/// `[a][b]` → `["a", "b"]`; `[a.b]` → `["a.b"]`.
fn nested_brackets(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        out.push(name.to_string());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

impl CompiledPolicy {
    /// Compiles a policy that passed validation. Anything that did not
    /// (it cannot happen through [`crate::config::load_files`]) becomes a
    /// check that fails closed.
    pub(crate) fn compile(
        namespace: &str,
        name: &str,
        spec: &AuthorizationPolicy,
        domains: &TrustDomains,
    ) -> Self {
        let ctx = Ctx { namespace, domains };
        let rules = spec
            .rules
            .iter()
            .map(|r| {
                let principals: Vec<Vec<Check>> = if r.from.is_empty() {
                    vec![Vec::new()]
                } else {
                    r.from
                        .iter()
                        .map(|f| f.source.as_ref().map_or_else(Vec::new, |s| source(s, &ctx)))
                        .collect()
                };
                let permissions: Vec<Vec<Check>> = if r.to.is_empty() {
                    vec![Vec::new()]
                } else {
                    r.to.iter()
                        .map(|t| t.operation.as_ref().map_or_else(Vec::new, operation))
                        .collect()
                };
                let when: Vec<Check> = r.when.iter().flat_map(|c| condition(c, &ctx)).collect();
                let http_only = principals
                    .iter()
                    .chain(&permissions)
                    .flatten()
                    .chain(&when)
                    .any(|c| c.matcher.http_only());
                Rule {
                    principals,
                    permissions,
                    when,
                    http_only,
                }
            })
            .collect();
        CompiledPolicy {
            id: format!("{namespace}/{name}").into(),
            namespace: namespace.to_string(),
            selector: spec.selector.clone(),
            action: spec.action,
            rules,
        }
    }

    /// `namespace/name`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn action(&self) -> AuthorizationAction {
        self.action
    }

    /// Whether the policy applies to a workload, given the mesh's root
    /// namespace (policies there apply in every namespace).
    pub(crate) fn applies_to(
        &self,
        root: &str,
        namespace: &str,
        labels: &crate::model::Labels,
    ) -> bool {
        (self.namespace == namespace || self.namespace == root)
            && self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// Whether any rule matches.
    pub fn matches(&self, input: &AuthzInput<'_>) -> bool {
        let allow = self.action == AuthorizationAction::Allow;
        // Fields anymesh cannot evaluate: true where that denies more.
        let fail_closed = matches!(
            self.action,
            AuthorizationAction::Deny | AuthorizationAction::Custom
        );
        let tcp = input.http.is_none();
        self.rules.iter().any(|rule| {
            if tcp && rule.http_only && allow {
                return false;
            }
            let ok = |c: &Check| c.eval(input, fail_closed);
            rule.when.iter().all(ok)
                && rule.principals.iter().any(|l| l.iter().all(ok))
                && rule.permissions.iter().any(|l| l.iter().all(ok))
        })
    }
}

/// A check for the values and one (negated) for the `not` values, each
/// when given.
fn push(out: &mut Vec<Check>, values: &[String], not: &[String], f: impl Fn(&[String]) -> Matcher) {
    if !values.is_empty() {
        out.push(Check {
            matcher: f(values),
            negate: false,
        });
    }
    if !not.is_empty() {
        out.push(Check {
            matcher: f(not),
            negate: true,
        });
    }
}

fn cidrs(v: &[String], make: fn(Vec<Cidr>) -> Matcher) -> Matcher {
    v.iter()
        .map(|s| Cidr::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_or(Matcher::Unsupported, make)
}

fn ports(v: &[String]) -> Matcher {
    v.iter()
        .map(|s| s.parse::<u16>())
        .collect::<Result<Vec<_>, _>>()
        .map_or(Matcher::Unsupported, Matcher::DestinationPort)
}

fn strs(v: &[String]) -> Vec<StrPattern> {
    v.iter().map(|s| StrPattern::parse(s)).collect()
}

fn globs(v: &[String]) -> Vec<Glob> {
    v.iter().map(|s| Glob::new(s)).collect()
}

fn service_accounts(v: &[String], namespace: &str) -> Matcher {
    Matcher::ServiceAccount(
        v.iter()
            .map(|s| match s.split_once('/') {
                Some((ns, sa)) => (ns.into(), sa.into()),
                None => (namespace.into(), s.as_str().into()),
            })
            .collect(),
    )
}

/// Istio splits a request principal pattern at its last `/` into issuer
/// and subject patterns.
fn request_principals(v: &[String]) -> Matcher {
    Matcher::RequestPrincipal(
        v.iter()
            .map(|value| {
                let any = StrPattern::Any;
                match value.rsplit_once('/') {
                    _ if value == "*" => (any.clone(), any),
                    Some((iss, sub)) if value.starts_with('*') => (
                        if iss == "*" {
                            any
                        } else {
                            StrPattern::parse(iss)
                        },
                        StrPattern::Exact(sub.into()),
                    ),
                    None if value.starts_with('*') => (any, StrPattern::parse(value)),
                    Some((iss, sub)) if value.ends_with('*') => (
                        StrPattern::Exact(iss.into()),
                        if sub == "*" {
                            any
                        } else {
                            StrPattern::parse(sub)
                        },
                    ),
                    None if value.ends_with('*') => (StrPattern::parse(value), any),
                    Some((iss, sub)) => {
                        (StrPattern::Exact(iss.into()), StrPattern::Exact(sub.into()))
                    }
                    None => (
                        StrPattern::Exact(value.as_str().into()),
                        StrPattern::Exact("".into()),
                    ),
                }
            })
            .collect(),
    )
}

fn paths(v: &[String]) -> Matcher {
    v.iter()
        .map(|p| PathPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_or(Matcher::Unsupported, Matcher::Path)
}

/// What compiling a policy needs besides its spec.
struct Ctx<'a> {
    namespace: &'a str,
    domains: &'a TrustDomains,
}

/// The mesh's trust domain and its aliases (Istio's trust domain bundle):
/// a principal or trust domain naming one of them (or `cluster.local`,
/// Istio's stand-in for "this mesh") matches any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustDomains(pub(crate) Vec<String>);

impl TrustDomains {
    /// Istio's `ReplaceTrustDomainAliases`: `td/ns/x/sa/y` with `td` in
    /// the bundle (or `cluster.local`) becomes one value per domain.
    fn principals(&self, values: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in values {
            let parts: Vec<&str> = v.split('/').collect();
            let td = parts[0];
            let ours = parts.len() == 5
                && td != "*"
                && (self.0.iter().any(|d| d == td) || td == super::CLUSTER_LOCAL);
            if !ours {
                out.push(v.clone());
                continue;
            }
            for d in &self.0 {
                let p = format!("{d}/{}", parts[1..].join("/"));
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Istio's `ExpandTrustDomainAliases` for `trustDomains` values.
    fn domains(&self, values: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in values {
            let add: Vec<String> = if self.0.contains(v) {
                self.0.clone()
            } else {
                vec![v.clone()]
            };
            for a in add {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

fn source(s: &Source, ctx: &Ctx<'_>) -> Vec<Check> {
    let (namespace, domains) = (ctx.namespace, ctx.domains);
    let mut out = Vec::new();
    push(&mut out, &s.principals, &s.not_principals, |v| {
        Matcher::Principal(strs(&domains.principals(v)))
    });
    push(
        &mut out,
        &s.request_principals,
        &s.not_request_principals,
        request_principals,
    );
    push(
        &mut out,
        &s.service_accounts,
        &s.not_service_accounts,
        |v| service_accounts(v, namespace),
    );
    push(&mut out, &s.trust_domains, &s.not_trust_domains, |v| {
        Matcher::TrustDomain(globs(&domains.domains(v)))
    });
    push(&mut out, &s.namespaces, &s.not_namespaces, |v| {
        Matcher::Namespace(globs(v))
    });
    push(
        &mut out,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        |v| cidrs(v, Matcher::RemoteIp),
    );
    push(&mut out, &s.ip_blocks, &s.not_ip_blocks, |v| {
        cidrs(v, Matcher::SourceIp)
    });
    out
}

fn operation(o: &Operation) -> Vec<Check> {
    let mut out = Vec::new();
    push(&mut out, &o.hosts, &o.not_hosts, |v| {
        Matcher::Host(strs(v).into_iter().map(StrPattern::lowercase).collect())
    });
    push(&mut out, &o.methods, &o.not_methods, |v| {
        Matcher::Method(strs(v))
    });
    push(&mut out, &o.paths, &o.not_paths, paths);
    push(&mut out, &o.ports, &o.not_ports, ports);
    out
}

fn condition(c: &Condition, ctx: &Ctx<'_>) -> Vec<Check> {
    let (namespace, domains) = (ctx.namespace, ctx.domains);
    let mut out = Vec::new();
    let Ok(key) = WhenKey::parse(&c.key) else {
        out.push(Check {
            matcher: Matcher::Unsupported,
            negate: false,
        });
        return out;
    };
    let make = |v: &[String]| match &key {
        WhenKey::SourceIp => cidrs(v, Matcher::SourceIp),
        WhenKey::RemoteIp => cidrs(v, Matcher::RemoteIp),
        WhenKey::DestinationIp => cidrs(v, Matcher::DestinationIp),
        WhenKey::DestinationPort => ports(v),
        WhenKey::ConnectionSni => Matcher::Sni(strs(v)),
        WhenKey::SourcePrincipal => Matcher::Principal(strs(&domains.principals(v))),
        WhenKey::SourceNamespace => Matcher::Namespace(globs(v)),
        WhenKey::SourceServiceAccount => service_accounts(v, namespace),
        WhenKey::SourceTrustDomain => Matcher::TrustDomain(globs(&domains.domains(v))),
        WhenKey::RequestPrincipal => request_principals(v),
        WhenKey::RequestAudiences => Matcher::Audiences(strs(v)),
        WhenKey::RequestPresenter => Matcher::Presenter(strs(v)),
        WhenKey::RequestClaim(path) => Matcher::Claim(path.clone(), strs(v)),
        WhenKey::RequestHeader(name) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Matcher::Header(h, strs(v)),
            Err(_) => Matcher::Unsupported,
        },
        WhenKey::Experimental => Matcher::Unsupported,
    };
    if matches!(key, WhenKey::Experimental) {
        out.push(Check {
            matcher: Matcher::Unsupported,
            negate: false,
        });
        return out;
    }
    push(&mut out, &c.values, &c.not_values, make);
    out
}

impl Check {
    fn eval(&self, input: &AuthzInput<'_>, fail_closed: bool) -> bool {
        if let Matcher::Unsupported = self.matcher {
            return fail_closed;
        }
        if input.http.is_none() && self.matcher.http_only() {
            // Left out of the TCP form of DENY / AUDIT / CUSTOM rules.
            return true;
        }
        self.matcher.any(input) != self.negate
    }
}

impl Matcher {
    fn http_only(&self) -> bool {
        matches!(
            self,
            Matcher::RequestPrincipal(_)
                | Matcher::Audiences(_)
                | Matcher::Presenter(_)
                | Matcher::Claim(..)
                | Matcher::Header(..)
                | Matcher::Host(_)
                | Matcher::Method(_)
                | Matcher::Path(_)
        )
    }

    /// Whether any value matches.
    fn any(&self, i: &AuthzInput<'_>) -> bool {
        let auth = i.http.and_then(|h| h.request_auth);
        match self {
            Matcher::SourceIp(c) => c.iter().any(|c| c.contains(i.source_ip)),
            Matcher::RemoteIp(c) => c.iter().any(|c| c.contains(i.remote_ip)),
            Matcher::DestinationIp(c) => c.iter().any(|c| c.contains(i.destination_ip)),
            Matcher::DestinationPort(p) => p.contains(&i.destination_port),
            Matcher::Sni(p) => i.sni.is_some_and(|s| p.iter().any(|p| p.matches(s))),
            Matcher::Principal(p) => i.principal.is_some_and(|s| p.iter().any(|p| p.matches(s))),
            Matcher::Namespace(g) => i
                .principal
                .and_then(namespace_of)
                .is_some_and(|ns| g.iter().any(|g| g.matches(ns))),
            Matcher::ServiceAccount(accounts) => i
                .principal
                .and_then(account_of)
                .is_some_and(|(ns, sa)| accounts.iter().any(|(n, s)| **n == *ns && **s == *sa)),
            Matcher::TrustDomain(g) => i
                .principal
                .and_then(|p| p.split_once('/').map(|(td, _)| td))
                .is_some_and(|td| g.iter().any(|g| g.matches(td))),
            Matcher::RequestPrincipal(p) => auth.is_some_and(|a| {
                let claim = |k: &str| a.claims.get(k).and_then(Value::as_str);
                let (iss, sub) = match (claim("iss"), claim("sub")) {
                    (Some(iss), Some(sub)) => (iss, sub),
                    _ => a.principal.rsplit_once('/').unwrap_or((&a.principal, "")),
                };
                p.iter().any(|(pi, ps)| pi.matches(iss) && ps.matches(sub))
            }),
            Matcher::Audiences(p) => auth.is_some_and(|a| {
                a.audiences
                    .iter()
                    .any(|aud| p.iter().any(|p| p.matches(aud)))
            }),
            Matcher::Presenter(p) => auth
                .and_then(|a| a.presenter.as_deref())
                .is_some_and(|azp| p.iter().any(|p| p.matches(azp))),
            Matcher::Claim(path, p) => auth.is_some_and(|a| claim_matches(&a.claims, path, p)),
            Matcher::Header(name, p) => i.http.is_some_and(|h| header_matches(h.headers, name, p)),
            Matcher::Host(p) => i.http.is_some_and(|h| {
                p.iter()
                    .any(|p| matches!(p, StrPattern::Any) || p.matches_ignore_case(h.host))
            }),
            Matcher::Method(p) => i.http.is_some_and(|h| {
                p.iter()
                    .any(|p| matches!(p, StrPattern::Any) || p.matches(h.method))
            }),
            Matcher::Path(p) => i.http.is_some_and(|h| {
                let path = h.path.split('?').next().unwrap_or(h.path);
                p.iter().any(|p| p.matches(path))
            }),
            Matcher::Unsupported => false,
        }
    }
}

/// The namespace of an Istio-form principal (`<td>/ns/<ns>/sa/<sa>`).
pub(crate) fn namespace_of(principal: &str) -> Option<&str> {
    let (_, rest) = principal.split_once("/ns/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// `(namespace, service account)` of `<td>/ns/<ns>/sa/<sa>`.
fn account_of(principal: &str) -> Option<(&str, &str)> {
    let (td, rest) = principal.split_once("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    (!td.is_empty() && !ns.contains('/') && !sa.contains('/')).then_some((ns, sa))
}

/// A claim (a string, or a list of strings any of which may match), found
/// by its path of nested names.
fn claim_matches(
    claims: &serde_json::Map<String, Value>,
    path: &[String],
    patterns: &[StrPattern],
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut value = claims.get(first);
    for key in rest {
        value = value.and_then(|v| v.get(key));
    }
    let one = |s: &str| patterns.iter().any(|p| p.matches(s));
    match value {
        Some(Value::String(s)) => one(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(one),
        _ => false,
    }
}

/// Envoy's header match: `*` is presence; otherwise the values of every
/// occurrence joined with `,`.
fn header_matches(headers: &HeaderMap, name: &HeaderName, patterns: &[StrPattern]) -> bool {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return false;
    };
    if patterns.iter().any(|p| matches!(p, StrPattern::Any)) {
        return true;
    }
    let test = |v: &str| patterns.iter().any(|p| p.matches(v));
    match all.next() {
        None => first.to_str().is_ok_and(test),
        Some(_) => {
            let joined: Option<Vec<&str>> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().ok())
                .collect();
            joined.is_some_and(|parts| test(&parts.join(",")))
        }
    }
}

/// The AuthorizationPolicies that apply to one workload, by action, ready
/// to check requests ([`super::SecurityPolicies::authorization`]).
#[derive(Debug, Clone, Default)]
pub struct WorkloadAuthz {
    pub(crate) custom: Vec<std::sync::Arc<CompiledPolicy>>,
    pub(crate) deny: Vec<std::sync::Arc<CompiledPolicy>>,
    pub(crate) allow: Vec<std::sync::Arc<CompiledPolicy>>,
    pub(crate) audit: Vec<std::sync::Arc<CompiledPolicy>>,
}

impl WorkloadAuthz {
    pub(crate) fn add(&mut self, p: std::sync::Arc<CompiledPolicy>) {
        match p.action {
            AuthorizationAction::Custom => self.custom.push(p),
            AuthorizationAction::Deny => self.deny.push(p),
            AuthorizationAction::Allow => self.allow.push(p),
            AuthorizationAction::Audit => self.audit.push(p),
        }
    }

    /// No policy applies: everything is allowed.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
    }

    /// Decides a request (or, with `http: None`, a connection).
    pub fn check<'a>(&'a self, input: &AuthzInput<'_>) -> Decision<'a> {
        let audit = self.audit.iter().find(|p| p.matches(input)).map(|p| p.id());
        let decided = |allowed, reason, policy: Option<&'a CompiledPolicy>| Decision {
            allowed,
            reason,
            policy: policy.map(|p| &*p.id),
            audit,
        };
        if let Some(p) = self.custom.iter().find(|p| p.matches(input)) {
            return decided(false, DecisionReason::DeniedByCustom, Some(&**p));
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(input)) {
            return decided(false, DecisionReason::Denied, Some(&**p));
        }
        if self.allow.is_empty() {
            return decided(true, DecisionReason::NoAllowPolicy, None);
        }
        match self.allow.iter().find(|p| p.matches(input)) {
            Some(p) => decided(true, DecisionReason::Allowed, Some(&**p)),
            None => decided(false, DecisionReason::NoAllowMatched, None),
        }
    }
}
