//! Checks across resources: duplicate names (of every kind), several
//! DestinationRules for one host, and destination subsets (of routes and mirrors) that no
//! DestinationRule defines.
//!
//! Without a catalog, hosts are compared as written (see
//! [`super::host::may_be_same`]): equal, covered by a wildcard,
//! or a short name the other extends. A subset is reported unknown only when
//! a rule may apply and none that may defines it; a host no rule may apply
//! to may be an alias, so the route compiler, which knows the services and
//! their aliases, checks it.

use std::collections::{BTreeSet, HashMap};

use super::diagnostic::{Diagnostic, Severity};
use super::host::{may_be_same, HostPattern};
use super::{ConfigSet, DestinationRule, Kind, Resource};

/// Findings plus the indices of resources that have an error.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub diagnostics: Vec<Diagnostic>,
    pub bad_virtual_services: BTreeSet<usize>,
    pub bad_destination_rules: BTreeSet<usize>,
    pub bad_peer_authentications: BTreeSet<usize>,
    pub bad_authorization_policies: BTreeSet<usize>,
    pub bad_request_authentications: BTreeSet<usize>,
    pub bad_telemetries: BTreeSet<usize>,
}

pub(crate) fn check(set: &ConfigSet) -> Report {
    let mut report = Report::default();
    duplicates(
        &set.virtual_services,
        &mut report.diagnostics,
        &mut report.bad_virtual_services,
    );
    duplicates(
        &set.destination_rules,
        &mut report.diagnostics,
        &mut report.bad_destination_rules,
    );
    duplicates(
        &set.peer_authentications,
        &mut report.diagnostics,
        &mut report.bad_peer_authentications,
    );
    duplicates(
        &set.authorization_policies,
        &mut report.diagnostics,
        &mut report.bad_authorization_policies,
    );
    duplicates(
        &set.request_authentications,
        &mut report.diagnostics,
        &mut report.bad_request_authentications,
    );
    duplicates(
        &set.telemetries,
        &mut report.diagnostics,
        &mut report.bad_telemetries,
    );
    let rules: Vec<_> = set
        .destination_rules
        .iter()
        .enumerate()
        .filter(|(i, _)| !report.bad_destination_rules.contains(i))
        .map(|(_, r)| r)
        .collect();
    // Several rules for the same host: the first applies.
    let mut first_for: HashMap<HostPattern, &Resource<_>> = HashMap::new();
    for dr in &rules {
        let Ok(host) = HostPattern::parse(&dr.spec.host) else {
            continue;
        };
        match first_for.get(&host) {
            Some(first) => report.diagnostics.push(dr.diagnostic(
                Severity::Warning,
                "spec.host",
                format!(
                    "host '{}' already has DestinationRule {} ({}); only that one applies",
                    dr.spec.host,
                    first.id(),
                    first.origin.file
                ),
            )),
            None => {
                first_for.insert(host, dr);
            }
        }
    }
    unknown_subsets(set, &rules, &mut report);
    report
}

/// Destination subsets that no rule which may apply defines.
///
/// Reported only when a rule may apply to the destination host as written
/// and none of those defines the subset. Without any such rule the host may
/// still be an alias of a service whose rule defines it: the compiler checks
/// that against the catalog. Likewise when only wildcard rules may apply, an
/// exact rule for another name of the same service would beat them, so an
/// exact rule for any host that defines the subset keeps quiet too.
fn unknown_subsets(set: &ConfigSet, rules: &[&Resource<DestinationRule>], report: &mut Report) {
    let is_wildcard = |dr: &Resource<DestinationRule>| {
        HostPattern::parse(&dr.spec.host).is_ok_and(|p| p.is_wildcard())
    };
    for (v, vs) in set.virtual_services.iter().enumerate() {
        if report.bad_virtual_services.contains(&v) {
            continue;
        }
        for (i, http) in vs.spec.http.iter().enumerate() {
            for (at, d) in http.destinations(&format!("spec.http[{i}]")) {
                let Some(subset) = &d.subset else {
                    continue;
                };
                let host = &d.host;
                let defines = |dr: &&&Resource<DestinationRule>| dr.spec.subset(subset).is_some();
                let candidates: Vec<_> = rules
                    .iter()
                    .filter(|dr| may_be_same(&dr.spec.host, host))
                    .collect();
                if candidates.is_empty() || candidates.iter().any(defines) {
                    continue;
                }
                if candidates.iter().all(|dr| is_wildcard(dr))
                    && rules
                        .iter()
                        .any(|dr| !is_wildcard(dr) && dr.spec.subset(subset).is_some())
                {
                    continue;
                }
                let defined: Vec<&str> = candidates
                    .iter()
                    .flat_map(|dr| dr.spec.subsets.iter().map(|s| s.name.as_str()))
                    .collect();
                let names: Vec<String> = candidates.iter().map(|dr| dr.id()).collect();
                report.diagnostics.push(vs.diagnostic(
                    Severity::Error,
                    format!("{at}.subset"),
                    format!(
                        "unknown subset '{subset}': DestinationRule {} for host '{host}' defines {}",
                        names.join(", "),
                        if defined.is_empty() {
                            "no subsets".to_string()
                        } else {
                            format!("only {}", defined.join(", "))
                        }
                    ),
                ));
                report.bad_virtual_services.insert(v);
            }
        }
    }
}

/// A second resource of the same kind, namespace and name is an error; the
/// first one stays.
fn duplicates<T: Kind>(
    resources: &[Resource<T>],
    out: &mut Vec<Diagnostic>,
    bad: &mut BTreeSet<usize>,
) {
    let mut seen: HashMap<(&str, &str), &Resource<T>> = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        let key = (r.namespace.as_str(), r.name.as_str());
        if let Some(first) = seen.get(&key) {
            out.push(r.diagnostic(
                Severity::Error,
                "metadata.name",
                format!(
                    "duplicate {} {}: already defined in {} (document {})",
                    T::KIND,
                    r.id(),
                    first.origin.file,
                    first.origin.document + 1
                ),
            ));
            bad.insert(i);
        } else {
            seen.insert(key, r);
        }
    }
}
