//! The checks of a Telemetry that need only the resource itself: Istio's
//! validation (each at its field path) plus what anymesh cannot apply,
//! reported as unsupported with its path.

use std::collections::BTreeMap;

use super::{
    cel_bool_literal, cel_string_literal, AccessLogging, Metrics, ProviderRef, TagOperation,
    Telemetry, Tracing,
};
use crate::config::diagnostic::{Diagnostic, Findings, Severity};
use crate::config::Resource;
use crate::telemetry::{StandardMetric, PROMETHEUS_PROVIDER};

pub(crate) fn telemetry(t: &Telemetry, _annotations: &BTreeMap<String, String>, f: &mut Findings) {
    crate::config::security::validate::workload_selector(t.selector.as_ref(), "the Telemetry", f);
    for (i, m) in t.metrics.iter().enumerate() {
        metrics(m, &format!("spec.metrics[{i}]"), f);
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        tracing(tr, &format!("spec.tracing[{i}]"), f);
    }
    for (i, l) in t.access_logging.iter().enumerate() {
        access_logging(l, &format!("spec.accessLogging[{i}]"), f);
    }
}

fn providers(list: &[ProviderRef], at: &str, f: &mut Findings) {
    for (j, p) in list.iter().enumerate() {
        if p.name.trim().is_empty() {
            f.error(
                format!("{at}.providers[{j}].name"),
                "a provider name is required",
            );
        }
    }
}

fn metrics(m: &Metrics, at: &str, f: &mut Findings) {
    providers(&m.providers, at, f);
    let names: Vec<&str> = m.providers.iter().map(|p| p.name.as_str()).collect();
    if !names.is_empty()
        && !names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(PROMETHEUS_PROVIDER))
    {
        f.warning(
            format!("{at}.providers"),
            format!(
                "anymesh exports metrics only as provider '{PROMETHEUS_PROVIDER}': the overrides \
                 of this entry change nothing, and where it is the last level naming providers \
                 anymesh's metrics are off (as in Istio, only the providers named get metrics)"
            ),
        );
    }
    for (k, o) in m.overrides.iter().enumerate() {
        let at = format!("{at}.overrides[{k}]");
        if let Some(sel) = &o.r#match {
            let at = format!("{at}.match");
            match (&sel.metric, &sel.custom_metric) {
                (Some(_), Some(_)) => f.error(
                    &at,
                    "metric and customMetric are exclusive (one of them, or neither for every \
                     metric)",
                ),
                (None, Some(c)) if c.trim().is_empty() => f.error(
                    format!("{at}.customMetric"),
                    "customMetric may not be empty",
                ),
                (None, Some(c)) if StandardMetric::from_short_name(c).is_none() => f.warning(
                    format!("{at}.customMetric"),
                    format!(
                        "unsupported: anymesh has no metric '{c}' (custom metrics name standard \
                         ones here: {}); this override is ignored",
                        StandardMetric::ALL.map(|m| m.short_name()).join(", ")
                    ),
                ),
                _ => {}
            }
        }
        for (tag, t) in &o.tag_overrides {
            let at = format!("{at}.tagOverrides.{tag}");
            if let Err(why) = label_name(tag) {
                f.error(&at, why);
            }
            match (t.operation, t.value.as_deref()) {
                (TagOperation::Upsert, None | Some("")) => {
                    f.error(format!("{at}.value"), "a value is required with UPSERT")
                }
                (TagOperation::Upsert, Some(v)) if cel_string_literal(v).is_none() => f.warning(
                    format!("{at}.value"),
                    format!(
                        "unsupported: {v:?} is a CEL expression; anymesh takes only a fixed \
                         value, a CEL string literal such as \"'canary'\"; this tag override is \
                         ignored"
                    ),
                ),
                (TagOperation::Remove, Some(v)) if !v.is_empty() => f.error(
                    format!("{at}.value"),
                    "a value is only allowed with UPSERT, not REMOVE",
                ),
                _ => {}
            }
        }
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with
/// `__` (reserved).
fn label_name(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if tag.is_empty() {
        return Err("empty tag name".to_string());
    }
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "tag {tag:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if tag.starts_with("__") {
        return Err(format!(
            "tag {tag:?}: names starting with '__' are reserved by Prometheus"
        ));
    }
    Ok(())
}

fn tracing(t: &Tracing, at: &str, f: &mut Findings) {
    providers(&t.providers, at, f);
    if t.providers.len() > 1 {
        f.warning(
            format!("{at}.providers"),
            "several tracing providers: only the first is used (as in Istio)",
        );
    }
    if let Some(p) = t.random_sampling_percentage {
        if !(0.0..=100.0).contains(&p) {
            f.error(
                format!("{at}.randomSamplingPercentage"),
                format!("{p} is not a percentage in [0.0, 100.0]"),
            );
        }
    }
    for (name, tag) in &t.custom_tags {
        let at = format!("{at}.customTags.{name}");
        if name.is_empty() {
            f.error(&at, "empty tag name");
        }
        let count = [
            tag.literal.is_some(),
            tag.environment.is_some(),
            tag.header.is_some(),
        ]
        .into_iter()
        .filter(|x| *x)
        .count();
        if count != 1 {
            f.error(
                &at,
                "a custom tag needs exactly one of literal, environment or header",
            );
        }
        if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
            f.error(
                format!("{at}.literal.value"),
                "a literal tag's value may not be empty",
            );
        }
        for (field, set) in [
            ("environment", tag.environment.is_some()),
            ("header", tag.header.is_some()),
        ] {
            if set {
                f.warning(
                    format!("{at}.{field}"),
                    format!(
                        "unsupported field '{field}': anymesh adds only literal custom tags to \
                         spans; this tag is ignored"
                    ),
                );
            }
        }
    }
}

fn access_logging(l: &AccessLogging, at: &str, f: &mut Findings) {
    providers(&l.providers, at, f);
    if let Some(filter) = &l.filter {
        let at = format!("{at}.filter.expression");
        if filter.expression.trim().is_empty() {
            f.error(&at, "a filter needs an expression");
        } else if cel_bool_literal(&filter.expression).is_none() {
            f.warning(
                &at,
                format!(
                    "unsupported: anymesh evaluates no CEL; only the filters `true` and `false` \
                     are applied, {:?} is ignored and every request is logged",
                    filter.expression
                ),
            );
        }
    }
}

/// Across resources: a second Telemetry without a selector in one
/// namespace never applies (Istio calls this invalid and takes the oldest;
/// anymesh takes the first in load order).
pub(crate) fn shadowed(telemetries: &[Resource<Telemetry>]) -> Vec<Diagnostic> {
    let mut first: BTreeMap<&str, &Resource<Telemetry>> = BTreeMap::new();
    let mut out = Vec::new();
    for t in telemetries.iter().filter(|t| !t.spec.has_selector()) {
        match first.get(t.namespace.as_str()) {
            Some(winner) => out.push(t.diagnostic(
                Severity::Warning,
                "spec",
                format!(
                    "namespace '{}' already has Telemetry {} without a selector ({}); only that \
                     one applies",
                    t.namespace,
                    winner.id(),
                    winner.origin.file
                ),
            )),
            None => {
                first.insert(&t.namespace, t);
            }
        }
    }
    out
}
