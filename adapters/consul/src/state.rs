//! What the adapter has told the catalog about each followed service, and
//! the changes a new answer from Consul makes to it.
//!
//! A `/v1/health/service/<name>` answer is the whole instance list of that
//! service, so applying one is a diff against what was sent before: new or
//! changed instances are upserts, missing ones removals. Nothing of a
//! service outlives an answer that no longer lists it.

use std::collections::BTreeMap;

use anymesh_core::{Change, Endpoint, Service, SourceStatus, SourceView};

use crate::api::ServiceEntry;
use crate::decode::Decoder;

/// One followed service.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Followed {
    /// The index of the last answer applied (0: none yet).
    pub index: u64,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub declared: Option<Service>,
    /// Instances skipped, with why.
    pub problems: Vec<String>,
}

/// Every followed service, by Consul name.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Synced {
    pub catalog_index: u64,
    /// Every service name in the catalog (followed or not).
    pub catalog: Vec<String>,
    pub services: BTreeMap<String, Followed>,
}

/// How many problems a status message names.
const NAMED_PROBLEMS: usize = 3;

impl Followed {
    /// Decodes a full answer into a fresh state.
    pub(crate) fn decode(
        decoder: &Decoder,
        name: &str,
        index: u64,
        entries: &[ServiceEntry],
    ) -> Self {
        let mut f = Followed {
            index,
            ..Followed::default()
        };
        for e in entries {
            match decoder.endpoint(e) {
                Ok(ep) => {
                    f.endpoints.insert(ep.provenance.native_id.clone(), ep);
                }
                Err(p) => f.problems.push(format!("service {name:?}: {p}")),
            }
        }
        let (declared, problem) = decoder.service(name, entries);
        f.declared = declared;
        f.problems.extend(problem);
        f
    }

    /// Replaces `self` with `next`; returns the changes that make the
    /// catalog agree.
    pub(crate) fn replace(&mut self, next: Followed) -> Vec<Change> {
        let mut out = Vec::new();
        if self.declared != next.declared {
            match &next.declared {
                Some(svc) => out.push(Change::UpsertService(svc.clone())),
                None => {
                    // Removing a declaration removes the service's endpoints
                    // too: send the remaining ones again.
                    if let Some(old) = &self.declared {
                        out.push(Change::RemoveService(old.hostname.clone()));
                    }
                    out.extend(next.endpoints.values().cloned().map(Change::UpsertEndpoint));
                }
            }
        }
        let redeclared_away = self.declared.is_some() && next.declared.is_none();
        for (id, ep) in &self.endpoints {
            if !next.endpoints.contains_key(id) && !redeclared_away {
                out.push(Change::RemoveEndpoint(ep.key()));
            }
        }
        if !redeclared_away {
            for (id, ep) in &next.endpoints {
                if self.endpoints.get(id) != Some(ep) {
                    out.push(Change::UpsertEndpoint(ep.clone()));
                }
            }
        }
        *self = next;
        out
    }

    /// The changes that take this service out of the catalog.
    pub(crate) fn removal(&self) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .endpoints
            .values()
            .map(|ep| Change::RemoveEndpoint(ep.key()))
            .collect();
        if let Some(svc) = &self.declared {
            out.push(Change::RemoveService(svc.hostname.clone()));
        }
        out
    }
}

impl Synced {
    /// The whole view, for a `Reset`.
    pub(crate) fn view(&self) -> SourceView {
        SourceView {
            services: self
                .services
                .values()
                .filter_map(|f| f.declared.clone())
                .collect(),
            endpoints: self
                .services
                .values()
                .flat_map(|f| f.endpoints.values().cloned())
                .collect(),
        }
    }

    /// `Healthy`, or `Degraded` naming the first few skipped instances.
    pub(crate) fn status(&self) -> SourceStatus {
        let problems: Vec<&String> = self.services.values().flat_map(|f| &f.problems).collect();
        if problems.is_empty() {
            return SourceStatus::Healthy;
        }
        let n = problems.len();
        let named: Vec<&str> = problems
            .iter()
            .take(NAMED_PROBLEMS)
            .map(|s| s.as_str())
            .collect();
        let more = match n.saturating_sub(NAMED_PROBLEMS) {
            0 => String::new(),
            rest => format!("; and {rest} more"),
        };
        let plural = if n == 1 { "" } else { "s" };
        SourceStatus::Degraded {
            message: format!(
                "{n} consul instance{plural} skipped: {}{more}",
                named.join("; ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use anymesh_core::SourceId;

    use super::*;
    use crate::api::{AgentService, Node};

    fn entry(id: &str, port: u16, meta: &[(&str, &str)]) -> ServiceEntry {
        ServiceEntry {
            node: Node {
                node: "n1".into(),
                address: "10.0.0.1".into(),
                ..Node::default()
            },
            service: AgentService {
                id: id.into(),
                service: "web".into(),
                port,
                meta: meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..AgentService::default()
            },
            checks: Vec::new(),
        }
    }

    fn decode(entries: &[ServiceEntry]) -> Followed {
        Followed::decode(&Decoder::new(SourceId::new("c")), "web", 5, entries)
    }

    fn kinds(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::UpsertEndpoint(e) => format!("+{}", e.provenance.native_id),
                Change::RemoveEndpoint(k) => format!("-{}", k.native_id),
                Change::UpsertService(s) => format!("+service {}", s.hostname),
                Change::RemoveService(h) => format!("-service {h}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_new_answer_is_a_diff() {
        let mut f = decode(&[entry("a", 80, &[]), entry("b", 80, &[])]);
        let changes = f.replace(decode(&[entry("b", 81, &[]), entry("c", 80, &[])]));
        assert_eq!(kinds(&changes), ["-n1/a", "+n1/b", "+n1/c"]);
        assert!(f
            .replace(decode(&[entry("b", 81, &[]), entry("c", 80, &[])]))
            .is_empty());
        assert_eq!(kinds(&f.removal()), ["-n1/b", "-n1/c"]);
    }

    #[test]
    fn a_declaration_comes_and_goes_with_the_meta() {
        let mut f = decode(&[entry("a", 80, &[])]);
        let changes = f.replace(decode(&[entry("a", 80, &[("protocol", "grpc")])]));
        assert_eq!(
            kinds(&changes),
            ["+service web", "+n1/a"],
            "labels changed too"
        );
        // Dropping the declaration removes the service's endpoints in the
        // catalog, so the remaining ones are sent again.
        let changes = f.replace(decode(&[entry("a", 80, &[]), entry("b", 80, &[])]));
        assert_eq!(kinds(&changes), ["-service web", "+n1/a", "+n1/b"]);
        assert_eq!(f.endpoints.len(), 2);
    }

    #[test]
    fn skipped_instances_make_a_degraded_status() {
        let mut synced = Synced::default();
        synced.services.insert(
            "web".into(),
            decode(&[entry("a", 0, &[]), entry("b", 80, &[])]),
        );
        match synced.status() {
            SourceStatus::Degraded { message } => {
                assert!(
                    message.starts_with("1 consul instance skipped"),
                    "{message}"
                );
                assert!(message.contains("n1/a: no port"), "{message}");
            }
            other => panic!("degraded expected, got {other:?}"),
        }
        assert_eq!(synced.view().endpoints.len(), 1);
    }
}
