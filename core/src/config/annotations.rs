//! anymesh's own annotations on Istio resources (extensions Istio does not
//! define, so the YAML stays valid for Istio).
//!
//! - [`MIRROR_COMPARE`] on a VirtualService: compare mirrored responses with
//!   the primary's, for every rule of it that mirrors. Syntax in
//!   [`MirrorCompare::parse`].

use std::collections::BTreeMap;

use super::diagnostic::Findings;
use super::VirtualService;
use crate::routes::policy::MirrorCompare;

/// `mirror.anymesh.io/compare`: see [`MirrorCompare::parse`].
pub const MIRROR_COMPARE: &str = "mirror.anymesh.io/compare";

/// The annotations anymesh reads.
const KNOWN: [&str; 1] = [MIRROR_COMPARE];

/// The field path of an annotation.
pub(crate) fn path(key: &str) -> String {
    format!("metadata.annotations.{key}")
}

/// The mirror comparison a VirtualService asks for, if any and valid.
pub fn mirror_compare(annotations: &BTreeMap<String, String>) -> Option<MirrorCompare> {
    annotations
        .get(MIRROR_COMPARE)
        .and_then(|v| MirrorCompare::parse(v).ok())
}

/// Checks a VirtualService's anymesh annotations.
pub(crate) fn virtual_service(
    vs: &VirtualService,
    annotations: &BTreeMap<String, String>,
    f: &mut Findings,
) {
    unknown(annotations, f);
    let Some(value) = annotations.get(MIRROR_COMPARE) else {
        return;
    };
    let at = path(MIRROR_COMPARE);
    if let Err(why) = MirrorCompare::parse(value) {
        return f.error(at, format!("invalid mirror comparison {value:?}: {why}"));
    }
    let mirrors = vs
        .http
        .iter()
        .any(|r| r.mirror.is_some() || !r.mirrors.is_empty());
    if !mirrors {
        f.warning(
            at,
            "no rule of this VirtualService mirrors requests; the comparison has no effect",
        );
    }
}

/// Checks a DestinationRule's anymesh annotations.
pub(crate) fn destination_rule(annotations: &BTreeMap<String, String>, f: &mut Findings) {
    unknown(annotations, f);
    if annotations.contains_key(MIRROR_COMPARE) {
        f.warning(
            path(MIRROR_COMPARE),
            "mirror comparison is set on the VirtualService that mirrors; ignored here",
        );
    }
}

/// A misspelt anymesh annotation would silently do nothing: warn.
fn unknown(annotations: &BTreeMap<String, String>, f: &mut Findings) {
    for key in annotations.keys() {
        let ours = key
            .split_once('/')
            .is_some_and(|(prefix, _)| prefix == "anymesh.io" || prefix.ends_with(".anymesh.io"));
        if ours && !KNOWN.contains(&key.as_str()) {
            f.warning(
                path(key),
                format!(
                    "unknown anymesh annotation '{key}' (known: {}); ignored",
                    KNOWN.join(", ")
                ),
            );
        }
    }
}
