//! Per-registry mapping rules: how a registry's native service names and
//! metadata become mesh hostnames and labels.
//!
//! A [`Mapping`] is plain config (the `mapping:` block of a registry in
//! `anymesh.yaml`, documented in `docs/registry-mapping.md`). [`Mapping::apply`]
//! maps one [`Change`] without state; [`MappedRegistry`] wraps an adapter so
//! every change it sends is mapped before it reaches the catalog, and mapping
//! problems show as a degraded source status.
//!
//! Rules apply in a fixed order: labels first (tags, renames, drops,
//! defaults), then the hostname from the mapped labels (strip the suffix,
//! fill the template, add prefix and suffix), then aliases.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::model::{Endpoint, Hostname, Labels, Service};
use crate::registry::Change;

mod forward;
mod template;
#[cfg(test)]
mod tests;
mod view;

pub use forward::{MappedRegistry, MappedSink};
pub use template::{Pattern, Template};

/// The `mapping:` block of one registry. The default maps nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mapping {
    pub hostname: HostnameRule,
    /// Extra mesh hostnames per service, as templates (no prefix or suffix added).
    pub aliases: Vec<Template>,
    pub labels: LabelRules,
}

/// How a registry's service name becomes the mesh hostname.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostnameRule {
    /// Removed from the end of the service name first (`.service.consul`).
    pub strip_suffix: String,
    /// Replaces the name; `{service}` is the (stripped) name, `{key}` a label.
    pub template: Option<Template>,
    pub prefix: String,
    pub suffix: String,
}

/// How native metadata becomes labels. A label with an empty value is a tag.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelRules {
    /// A tag `k=v` becomes the label `k: v`.
    pub key_value_tags: bool,
    /// A tag matching a rule's pattern becomes `<key>: <tag>`; first match wins.
    pub tags: Vec<TagRule>,
    /// Key renames (`ver: version`), applied after tags.
    pub rename: BTreeMap<String, String>,
    /// Keys removed after renaming.
    pub drop: BTreeSet<String>,
    /// Labels set when absent, last.
    pub defaults: Labels,
}

/// `{match: "^v[0-9]+$", key: version}`: the tag `v2` becomes `version: v2`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    #[serde(rename = "match")]
    pub pattern: Pattern,
    pub key: String,
}

/// A mapping rule that is invalid, or an item it could not map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A rule is invalid; `path` names the field (`mapping.hostname.template`).
    #[error("{path}: {reason}")]
    InvalidRule { path: String, reason: String },
    /// The item (`endpoint <source>:<id>` or `service <name>`) was left out.
    #[error("{item} skipped: {reason}")]
    ItemSkipped { item: String, reason: String },
    /// The item was kept without this alias.
    #[error("{item}: alias {alias:?} skipped: {reason}")]
    AliasSkipped {
        item: String,
        alias: String,
        reason: String,
    },
}

impl MappingError {
    /// The item a mapping problem is about (None for an invalid rule).
    pub fn item(&self) -> Option<&str> {
        match self {
            Self::InvalidRule { .. } => None,
            Self::ItemSkipped { item, .. } | Self::AliasSkipped { item, .. } => Some(item),
        }
    }
}

/// An endpoint after mapping, with the aliases its labels give its service.
pub(crate) struct MappedEndpoint {
    pub endpoint: Endpoint,
    pub aliases: BTreeSet<Hostname>,
    pub problems: Vec<MappingError>,
}

pub(crate) fn endpoint_item(ep: &Endpoint) -> String {
    format!("endpoint {}", ep.key())
}

fn service_item(name: &Hostname) -> String {
    format!("service {name}")
}

impl Mapping {
    /// Checks every rule; each error names its field under `mapping.`.
    pub fn validate(&self) -> Result<(), Vec<MappingError>> {
        let mut errs = Vec::new();
        let mut bad =
            |path: String, reason: String| errs.push(MappingError::InvalidRule { path, reason });
        let h = &self.hostname;
        let sample = |t: Option<&Template>| {
            let labels = t
                .iter()
                .flat_map(|t| t.labels())
                .map(|k| (k.into(), "x".into()));
            let labels: Labels = labels.collect();
            match t {
                Some(t) => t.render("x", &labels),
                None => Ok("x".into()),
            }
        };
        match sample(h.template.as_ref()) {
            Err(e) => bad("mapping.hostname.template".into(), e),
            Ok(body) => {
                if let Err(e) = Hostname::new(&format!("{}{body}{}", h.prefix, h.suffix)) {
                    bad(
                        "mapping.hostname".into(),
                        format!("prefix, template and suffix do not make a hostname: {e}"),
                    );
                }
            }
        }
        for (i, a) in self.aliases.iter().enumerate() {
            if let Err(e) =
                sample(Some(a)).and_then(|s| Hostname::new(&s).map(drop).map_err(|e| e.to_string()))
            {
                bad(format!("mapping.aliases[{i}]"), e);
            }
        }
        let l = &self.labels;
        for (i, r) in l.tags.iter().enumerate() {
            if let Some(e) = r.pattern.error() {
                bad(format!("mapping.labels.tags[{i}].match"), e.to_string());
            }
            if r.key.is_empty() {
                bad(
                    format!("mapping.labels.tags[{i}].key"),
                    "must not be empty".into(),
                );
            }
        }
        for (from, to) in &l.rename {
            if from.is_empty() || to.is_empty() {
                bad(
                    format!("mapping.labels.rename.{from}"),
                    "keys must not be empty".into(),
                );
            }
        }
        if l.defaults.keys().any(String::is_empty) {
            bad(
                "mapping.labels.defaults".into(),
                "keys must not be empty".into(),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Whether the mapping changes nothing (then wrapping can be skipped).
    pub fn is_identity(&self) -> bool {
        let (h, l) = (&self.hostname, &self.labels);
        h.strip_suffix.is_empty()
            && h.template.is_none()
            && h.prefix.is_empty()
            && h.suffix.is_empty()
            && self.aliases.is_empty()
            && !l.key_value_tags
            && l.tags.is_empty()
            && l.rename.is_empty()
            && l.drop.is_empty()
            && l.defaults.is_empty()
    }

    /// Maps one change. Endpoints get mapped labels (the originals stay in
    /// `provenance.raw_labels`, set here when empty) and a mapped service
    /// hostname; services get a mapped hostname and aliases; a Reset maps its
    /// whole view. An item that cannot be mapped is left out and reported; an
    /// endpoint upsert that cannot be mapped becomes its removal, so an older
    /// mapped version does not linger. Endpoint keys never change.
    pub fn apply(&self, change: Change) -> (Option<Change>, Vec<MappingError>) {
        if self.is_identity() {
            return (Some(change), Vec::new());
        }
        match change {
            Change::Reset(view) => {
                let (view, problems) = self.map_view(view);
                (Some(Change::Reset(view)), problems)
            }
            Change::UpsertEndpoint(ep) => {
                let key = ep.key();
                match self.map_endpoint(ep) {
                    Ok(m) => (Some(Change::UpsertEndpoint(m.endpoint)), m.problems),
                    Err(e) => (Some(Change::RemoveEndpoint(key)), vec![e]),
                }
            }
            Change::UpsertService(svc) => {
                let mut problems = Vec::new();
                let svc = self.map_service(svc, &self.labels.defaults, &mut problems);
                (svc.map(Change::UpsertService), problems)
            }
            Change::RemoveService(name) => {
                match self.service_hostname(&name, &self.labels.defaults) {
                    Ok(host) => (Some(Change::RemoveService(host)), Vec::new()),
                    Err(reason) => {
                        let item = service_item(&name);
                        (None, vec![MappingError::ItemSkipped { item, reason }])
                    }
                }
            }
            c @ (Change::RemoveEndpoint(_) | Change::Status(_)) => (Some(c), Vec::new()),
        }
    }

    /// Maps the labels of one item (see [`LabelRules`] for the order).
    pub fn map_labels(&self, labels: Labels) -> Labels {
        let l = &self.labels;
        let mut out = Labels::new();
        let mut tags = Vec::new();
        for (k, v) in labels {
            if v.is_empty() {
                tags.push(k);
            } else {
                out.insert(k, v);
            }
        }
        for tag in tags {
            let kv = tag
                .split_once('=')
                .filter(|(k, _)| l.key_value_tags && !k.is_empty());
            let (k, v) = match kv {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match l.tags.iter().find(|r| r.pattern.is_match(&tag)) {
                    Some(rule) => (rule.key.clone(), tag),
                    None => (tag, String::new()),
                },
            };
            // Explicit `key: value` labels win over values taken from tags.
            out.entry(k).or_insert(v);
        }
        let moved: Vec<_> = l
            .rename
            .iter()
            .filter_map(|(from, to)| out.remove(from).map(|v| (to.clone(), v)))
            .collect();
        out.extend(moved);
        out.retain(|k, _| !l.drop.contains(k));
        for (k, v) in &l.defaults {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out
    }

    /// The mesh hostname for a registry service name, given mapped labels.
    pub fn service_hostname(&self, name: &Hostname, labels: &Labels) -> Result<Hostname, String> {
        let h = &self.hostname;
        let name = self.stripped(name)?;
        let body = match &h.template {
            Some(t) => t.render(name, labels)?,
            None => name.to_string(),
        };
        Hostname::new(&format!("{}{body}{}", h.prefix, h.suffix)).map_err(|e| e.to_string())
    }

    fn stripped<'a>(&self, name: &'a Hostname) -> Result<&'a str, String> {
        let strip = self.hostname.strip_suffix.to_ascii_lowercase();
        let name = name.as_str();
        let rest = name.strip_suffix(strip.as_str()).unwrap_or(name);
        let rest = rest.trim_end_matches('.');
        if rest.is_empty() {
            return Err(format!("nothing is left of {name:?} after strip_suffix"));
        }
        Ok(rest)
    }

    fn aliases_for(
        &self,
        name: &Hostname,
        labels: &Labels,
        host: &Hostname,
        item: &str,
        problems: &mut Vec<MappingError>,
    ) -> BTreeSet<Hostname> {
        let mut out = BTreeSet::new();
        let Ok(name) = self.stripped(name) else {
            return out;
        };
        for a in &self.aliases {
            let rendered = a
                .render(name, labels)
                .and_then(|s| Hostname::new(&s).map_err(|e| e.to_string()));
            match rendered {
                Ok(alias) if &alias == host => {}
                Ok(alias) => {
                    out.insert(alias);
                }
                Err(reason) => problems.push(MappingError::AliasSkipped {
                    item: item.to_string(),
                    alias: a.as_str().to_string(),
                    reason,
                }),
            }
        }
        out
    }

    pub(crate) fn map_endpoint(&self, mut ep: Endpoint) -> Result<MappedEndpoint, MappingError> {
        let item = endpoint_item(&ep);
        if ep.provenance.raw_labels.is_empty() {
            ep.provenance.raw_labels = ep.labels.clone();
        }
        ep.labels = self.map_labels(std::mem::take(&mut ep.labels));
        let native = ep.service.clone();
        let host = self
            .service_hostname(&native, &ep.labels)
            .map_err(|reason| {
                let reason = format!("hostname of service `{native}`: {reason}");
                MappingError::ItemSkipped {
                    item: item.clone(),
                    reason,
                }
            })?;
        let mut problems = Vec::new();
        let aliases = self.aliases_for(&native, &ep.labels, &host, &item, &mut problems);
        ep.service = host;
        Ok(MappedEndpoint {
            endpoint: ep,
            aliases,
            problems,
        })
    }

    /// Maps a service declaration whose labels are `labels` (the defaults when
    /// nothing better is known). Declared aliases are kept as they are.
    pub(crate) fn map_service(
        &self,
        mut svc: Service,
        labels: &Labels,
        problems: &mut Vec<MappingError>,
    ) -> Option<Service> {
        let item = service_item(&svc.hostname);
        match self.service_hostname(&svc.hostname, labels) {
            Ok(host) => {
                let extra = self.aliases_for(&svc.hostname, labels, &host, &item, problems);
                merge_aliases(&mut svc.aliases, extra, &host);
                svc.hostname = host;
                Some(svc)
            }
            Err(reason) => {
                problems.push(MappingError::ItemSkipped { item, reason });
                None
            }
        }
    }
}

/// Adds `extra` to `aliases`, skipping duplicates and the hostname itself.
/// Returns whether anything was added.
pub(crate) fn merge_aliases(
    aliases: &mut Vec<Hostname>,
    extra: impl IntoIterator<Item = Hostname>,
    host: &Hostname,
) -> bool {
    let before = aliases.len();
    for a in extra {
        if &a != host && !aliases.contains(&a) {
            aliases.push(a);
        }
    }
    aliases.len() != before
}
