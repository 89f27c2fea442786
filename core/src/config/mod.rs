//! Istio config: `networking.istio.io` VirtualService and DestinationRule
//! (apiVersion `v1alpha3`, `v1beta1` or `v1`) and `security.istio.io`
//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication
//! (`v1beta1` or `v1`), and `telemetry.istio.io` Telemetry (`v1` or
//! `v1alpha1`), read from multi-document YAML and validated.
//!
//! - [`parse_str`] reads one file's text: syntax, fields and every check that
//!   needs only the resource itself. A resource with an error is left out of
//!   the returned [`ConfigSet`] and reported; the rest are kept.
//! - [`ConfigSet::retain_valid`] adds the checks across resources (duplicate
//!   names, subsets no DestinationRule defines) and drops the offenders.
//! - [`load_str`] and [`load_files`] do both.
//!
//! Fields anymesh does not implement are reported by name, never dropped
//! quietly; see `docs/config-reference.md` for the full list and the rules.

pub mod annotations;
mod cross;
mod destination_rule;
mod diagnostic;
pub mod duration;
mod host;
mod parse;
mod resilience;
mod schema;
pub mod security;
pub mod telemetry;
mod validate;
mod virtual_service;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use destination_rule::{ClientTlsSettings, TlsMode};
pub use destination_rule::{
    ConnectionPoolSettings, ConsistentHashLb, DestinationRule, EffectivePolicy, HashKey,
    HttpCookie, HttpSettings, LoadBalancerSettings, LocalityDistributeSetting,
    LocalityFailoverSetting, LocalityLbSetting, Maglev, OutlierDetectionSettings,
    PortTrafficPolicy, RetryBudgetSettings, RingHash, SimpleLb, Subset, TcpKeepaliveSettings,
    TcpSettings, TrafficPolicy,
};
pub use diagnostic::{has_errors, Diagnostic, Severity};
pub use duration::{parse_duration, GoDuration, InvalidDuration};
pub use host::HostPattern;
pub use parse::parse_str;
pub use security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
pub use telemetry::Telemetry;
pub use virtual_service::{
    Destination, FaultInjectionAbort, FaultInjectionDelay, GrpcStatus, HeaderOperations, Headers,
    HttpBody, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpMirrorPolicy,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, MatchKind, Percent,
    PortSelector, StringMatch, VirtualService, GRPC_STATUS_NAMES,
};

use diagnostic::Subject;
pub(crate) use validate::regex_reason;

/// Where a resource was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file as it was given.
    pub file: String,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the document's content starts.
    pub line: usize,
}

/// The resource kinds anymesh reads.
pub trait Kind {
    const KIND: &'static str;
}

impl Kind for VirtualService {
    const KIND: &'static str = "VirtualService";
}

impl Kind for DestinationRule {
    const KIND: &'static str = "DestinationRule";
}

/// One parsed resource with its identity and origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource<T> {
    pub origin: Origin,
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    pub name: String,
    /// `metadata.annotations`; anymesh reads its own (see [`annotations`]).
    pub annotations: BTreeMap<String, String>,
    pub spec: T,
}

impl<T: Kind> Resource<T> {
    pub fn kind(&self) -> &'static str {
        T::KIND
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A finding about this resource, at a field path such as `spec.http[0]`.
    pub fn diagnostic(
        &self,
        severity: Severity,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.subject().diagnostic(severity, path, message)
    }

    pub(crate) fn subject(&self) -> Subject {
        Subject {
            file: self.origin.file.clone(),
            document: Some(self.origin.document),
            kind: Some(T::KIND.to_string()),
            resource: Some(self.id()),
        }
    }
}

/// Every resource read, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSet {
    pub virtual_services: Vec<Resource<VirtualService>>,
    pub destination_rules: Vec<Resource<DestinationRule>>,
    pub peer_authentications: Vec<Resource<PeerAuthentication>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicy>>,
    pub request_authentications: Vec<Resource<RequestAuthentication>>,
    pub telemetries: Vec<Resource<Telemetry>>,
    /// Resources that parsed but failed their own checks. Never routed; kept
    /// so the cross-resource checks can still report on them (one `check`
    /// run shows every mistake) and not cascade (a rejected rule's subsets
    /// are not reported again as unknown).
    pub rejected: Rejected,
}

/// See [`ConfigSet::rejected`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rejected {
    pub virtual_services: Vec<Resource<VirtualService>>,
    pub destination_rules: Vec<Resource<DestinationRule>>,
    pub peer_authentications: Vec<Resource<PeerAuthentication>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicy>>,
    pub request_authentications: Vec<Resource<RequestAuthentication>>,
    pub telemetries: Vec<Resource<Telemetry>>,
}

impl ConfigSet {
    pub fn is_empty(&self) -> bool {
        self.virtual_services.is_empty()
            && self.destination_rules.is_empty()
            && self.peer_authentications.is_empty()
            && self.authorization_policies.is_empty()
            && self.request_authentications.is_empty()
            && self.telemetries.is_empty()
    }

    /// Appends another set (e.g. the next file). Run [`ConfigSet::retain_valid`]
    /// afterwards: resources from different files can conflict.
    pub fn merge(&mut self, other: ConfigSet) {
        self.virtual_services.extend(other.virtual_services);
        self.destination_rules.extend(other.destination_rules);
        self.rejected
            .virtual_services
            .extend(other.rejected.virtual_services);
        self.rejected
            .destination_rules
            .extend(other.rejected.destination_rules);
        self.peer_authentications.extend(other.peer_authentications);
        self.authorization_policies
            .extend(other.authorization_policies);
        self.request_authentications
            .extend(other.request_authentications);
        let r = &mut self.rejected;
        r.peer_authentications
            .extend(other.rejected.peer_authentications);
        r.authorization_policies
            .extend(other.rejected.authorization_policies);
        r.request_authentications
            .extend(other.rejected.request_authentications);
        self.telemetries.extend(other.telemetries);
        self.rejected.telemetries.extend(other.rejected.telemetries);
    }

    /// The accepted resources followed by the rejected ones, for the
    /// cross-resource checks. Indices below the accepted counts refer to
    /// accepted resources.
    fn with_rejected(&self) -> ConfigSet {
        fn chain<T: Clone>(a: &[T], b: &[T]) -> Vec<T> {
            a.iter().chain(b).cloned().collect()
        }
        let r = &self.rejected;
        ConfigSet {
            virtual_services: chain(&self.virtual_services, &r.virtual_services),
            destination_rules: chain(&self.destination_rules, &r.destination_rules),
            peer_authentications: chain(&self.peer_authentications, &r.peer_authentications),
            authorization_policies: chain(&self.authorization_policies, &r.authorization_policies),
            request_authentications: chain(
                &self.request_authentications,
                &r.request_authentications,
            ),
            telemetries: chain(&self.telemetries, &r.telemetries),
            rejected: Rejected::default(),
        }
    }

    /// The checks across resources (duplicate names, several
    /// DestinationRules for one host, unknown subsets), without changing the
    /// set. Per-resource checks already ran in [`parse_str`], which only
    /// returns resources that passed them.
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut diagnostics = cross::check(&self.with_rejected()).diagnostics;
        diagnostics.extend(telemetry::validate::shadowed(&self.telemetries));
        diagnostics
    }

    /// Like [`ConfigSet::validate`], then drops every resource with an error.
    pub fn retain_valid(&mut self) -> Vec<Diagnostic> {
        let report = cross::check(&self.with_rejected());
        self.virtual_services = std::mem::take(&mut self.virtual_services)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !report.bad_virtual_services.contains(i))
            .map(|(_, r)| r)
            .collect();
        self.destination_rules = std::mem::take(&mut self.destination_rules)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !report.bad_destination_rules.contains(i))
            .map(|(_, r)| r)
            .collect();
        keep(
            &mut self.peer_authentications,
            &report.bad_peer_authentications,
        );
        keep(
            &mut self.authorization_policies,
            &report.bad_authorization_policies,
        );
        keep(
            &mut self.request_authentications,
            &report.bad_request_authentications,
        );
        keep(&mut self.telemetries, &report.bad_telemetries);
        let mut diagnostics = report.diagnostics;
        diagnostics.extend(telemetry::validate::shadowed(&self.telemetries));
        diagnostics
    }

    /// The DestinationRule that applies to a service, given its names
    /// (hostname and aliases): the most specific `host` that matches one of
    /// them, as Istio picks it (an exact host, then the longest wildcard
    /// suffix, `*` last), and among equals the first in file order.
    pub fn destination_rule_for<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<&Resource<DestinationRule>> {
        self.destination_rules
            .iter()
            .enumerate()
            .filter_map(|(i, dr)| {
                let p = HostPattern::parse(&dr.spec.host).ok()?;
                names
                    .clone()
                    .into_iter()
                    .any(|n| p.matches(n))
                    .then(|| ((p.rank(), i), dr))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, dr)| dr)
    }
}

/// Drops the resources at the indices in `bad`.
fn keep<T>(list: &mut Vec<T>, bad: &std::collections::BTreeSet<usize>) {
    *list = std::mem::take(list)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !bad.contains(i))
        .map(|(_, r)| r)
        .collect();
}

/// Parses one file's text and runs the cross-resource checks on it alone.
pub fn load_str(file: &str, text: &str) -> (ConfigSet, Vec<Diagnostic>) {
    let (mut set, mut diagnostics) = parse_str(file, text);
    diagnostics.extend(set.retain_valid());
    (set, diagnostics)
}

/// Reads and parses every file, merges them in order and runs the
/// cross-resource checks. A file that cannot be read is an error; the other
/// files still load.
pub fn load_files(paths: &[PathBuf]) -> (ConfigSet, Vec<Diagnostic>) {
    let mut set = ConfigSet::default();
    let mut diagnostics = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (s, d) = parse_str(&file, &text);
                set.merge(s);
                diagnostics.extend(d);
            }
            Err(e) => diagnostics.push(
                Subject {
                    file,
                    ..Subject::default()
                }
                .diagnostic(Severity::Error, "", format!("cannot read file: {e}")),
            ),
        }
    }
    diagnostics.extend(set.retain_valid());
    (set, diagnostics)
}

#[cfg(test)]
mod tests;
