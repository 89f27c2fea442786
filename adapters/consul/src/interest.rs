//! Which Consul services get a long-poll.
//!
//! A catalog can hold thousands of services while the mesh routes to a few.
//! The adapter follows a service when it is listed in `services`, when
//! `watch_all` is set, or when its mesh names (the Consul name passed
//! forward through the registry's mapping: hostname and aliases) match a
//! host the routing configuration names ([`Interest`]). The binary keeps the
//! interest current from the routing files through a `tokio::sync::watch`
//! channel; the adapter starts and stops long-polls as it changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use anymesh_core::config::{ConfigSet, HostPattern};
use anymesh_core::{Hostname, Mapping};

/// The mesh hosts the routing configuration references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    patterns: Vec<HostPattern>,
}

impl Interest {
    /// Every host a VirtualService (its `hosts` and route destinations) or a
    /// DestinationRule names. Hosts that do not parse are left out (the
    /// routing checks report them).
    pub fn from_config(set: &ConfigSet) -> Self {
        let mut hosts: Vec<&str> = Vec::new();
        for vs in &set.virtual_services {
            hosts.extend(vs.spec.hosts.iter().map(String::as_str));
            for rule in &vs.spec.http {
                hosts.extend(rule.route.iter().map(|d| d.destination.host.as_str()));
            }
        }
        hosts.extend(set.destination_rules.iter().map(|d| d.spec.host.as_str()));
        Self::hosts(hosts)
    }

    /// An interest in the given hosts (exact, `*.suffix` or `*`).
    pub fn hosts<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<HostPattern> = Vec::new();
        for h in hosts {
            if let Ok(p) = HostPattern::parse(h) {
                if !patterns.contains(&p) {
                    patterns.push(p);
                }
            }
        }
        Self { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a mesh name is referenced.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }
}

/// Decides per Consul service name whether it is followed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    pub watch_all: bool,
    pub listed: BTreeSet<String>,
    pub mapping: Arc<Mapping>,
}

/// The name suffix Consul gives a Connect sidecar service
/// (`connect.sidecar_service` registers `<service>-sidecar-proxy`).
pub(crate) const SIDECAR_SUFFIX: &str = "-sidecar-proxy";

impl Selector {
    /// Whether service `name` is followed: wanted itself, or the Connect
    /// sidecar service of a wanted service (whose endpoints it gives their
    /// mesh proxy).
    pub(crate) fn wants(&self, interest: &Interest, name: &str) -> bool {
        if let Some(base) = name.strip_suffix(SIDECAR_SUFFIX) {
            if !base.is_empty() && self.wants_itself(interest, base) {
                return true;
            }
        }
        self.wants_itself(interest, name)
    }

    fn wants_itself(&self, interest: &Interest, name: &str) -> bool {
        if self.watch_all || self.listed.contains(name) {
            return true;
        }
        if interest.is_empty() {
            return false;
        }
        match mesh_names(&self.mapping, name) {
            Some(names) => names.iter().any(|n| interest.matches(n.as_str())),
            // The mapping needs instance labels to name it: follow it, so
            // nothing routed is missed.
            None => true,
        }
    }
}

/// The mesh hostname and aliases of a Consul service under `mapping`, using
/// only the mapping's default labels; `None` when that is not enough (a
/// template names another label). An invalid name has no mesh names.
pub(crate) fn mesh_names(mapping: &Mapping, name: &str) -> Option<Vec<Hostname>> {
    let Ok(native) = Hostname::new(name) else {
        return Some(Vec::new());
    };
    let defaults = &mapping.labels.defaults;
    let mut out = vec![mapping.service_hostname(&native, defaults).ok()?];
    let strip = mapping.hostname.strip_suffix.to_ascii_lowercase();
    let stripped = native.as_str();
    let stripped = stripped
        .strip_suffix(strip.as_str())
        .unwrap_or(stripped)
        .trim_end_matches('.');
    for alias in &mapping.aliases {
        let rendered = alias.render(stripped, defaults).ok()?;
        if let Ok(h) = Hostname::new(&rendered) {
            out.push(h);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(yaml: &str) -> Arc<Mapping> {
        Arc::new(serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn routing_hosts_make_the_interest() {
        let (set, diags) = anymesh_core::config::load_str(
            "r.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n\
             spec:\n  hosts: [front.mesh]\n  http:\n  - route:\n    - destination: {host: payments.mesh}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n\
             spec: {host: '*.db.mesh'}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let i = Interest::from_config(&set);
        assert!(i.matches("front.mesh") && i.matches("payments.mesh"));
        assert!(i.matches("orders.db.mesh"));
        assert!(!i.matches("other.mesh"));
    }

    #[test]
    fn consul_names_are_mapped_forward_before_matching() {
        let sel = Selector {
            mapping: mapping("hostname: {suffix: .mesh}\naliases: ['{service}.legacy']\n"),
            ..Selector::default()
        };
        let i = Interest::hosts(["payments.mesh", "orders.legacy"]);
        assert!(sel.wants(&i, "payments"));
        assert!(sel.wants(&i, "orders"), "through the alias");
        assert!(
            !sel.wants(&i, "payments.mesh"),
            "its mesh name is payments.mesh.mesh"
        );
        assert!(!sel.wants(&i, "billing"));
        assert!(!sel.wants(&Interest::default(), "payments"));
        let listed = Selector {
            listed: ["billing".to_string()].into(),
            ..sel.clone()
        };
        assert!(listed.wants(&Interest::default(), "billing"));
        assert!(
            sel.wants(&i, "payments-sidecar-proxy"),
            "its Connect sidecar"
        );
        assert!(listed.wants(&Interest::default(), "billing-sidecar-proxy"));
        assert!(!sel.wants(&i, "billing-sidecar-proxy"));
        assert!(!sel.wants(&i, "-sidecar-proxy"));
        let all = Selector {
            watch_all: true,
            ..sel
        };
        assert!(all.wants(&Interest::default(), "anything"));
    }

    #[test]
    fn a_template_needing_instance_labels_is_followed() {
        let sel = Selector {
            mapping: mapping("hostname: {template: '{service}.{team}'}\n"),
            ..Selector::default()
        };
        assert!(sel.wants(&Interest::hosts(["x.y"]), "payments"));
    }
}
