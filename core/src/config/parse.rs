//! Reading multi-document YAML into typed resources.
//!
//! The text is split into documents at `---` / `...` marker lines (a marker at
//! column 0 always ends a YAML document, even inside a block scalar), so each
//! document is parsed on its own and its line numbers are mapped back to the
//! file. Each document is parsed twice: once as a plain value to learn its
//! `apiVersion` and `kind` (and to report syntax errors), then as the typed
//! resource with `serde_ignored` collecting every key serde did not use.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::diagnostic::{Diagnostic, Findings, Severity, Subject};
use super::schema::{self, Unused};
use super::security;
use super::telemetry;
use super::validate;
use super::{ConfigSet, Kind, Origin, Resource};

const GROUP: &str = "networking.istio.io";
const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
const SECURITY_GROUP: &str = "security.istio.io";
const SECURITY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
const TELEMETRY_GROUP: &str = "telemetry.istio.io";
const TELEMETRY_VERSIONS: [&str; 2] = ["v1", "v1alpha1"];
const SECURITY_KINDS: [&str; 3] = [
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
];

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Doc<'a> {
    /// 0-based document index in the file.
    index: usize,
    text: &'a str,
    /// 1-based file line of `text`'s first line.
    first_line: usize,
    /// 1-based file line of the first line with content.
    content_line: usize,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Whether a line (or the rest of a `---` line) carries YAML content.
fn has_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// Splits a YAML stream into documents; documents without content are skipped
/// but still counted.
fn split_documents(text: &str) -> Vec<Doc<'_>> {
    let mut docs = Vec::new();
    let mut index = 0;
    let (mut start, mut first_line) = (0, 1);
    let mut content_line = None;
    let mut explicit = false; // the current document began with `---`
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let lineno = i + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        let starts = is_marker(line, "---");
        let ends = is_marker(line, "...");
        if starts || ends {
            if let Some(content_line) = content_line.take() {
                docs.push(Doc {
                    index,
                    text: &text[start..offset],
                    first_line,
                    content_line,
                });
                index += 1;
            } else if explicit {
                index += 1; // an empty document
            }
            explicit = starts;
            (start, first_line) = if starts {
                (offset, lineno)
            } else {
                (offset + raw.len(), lineno + 1)
            };
            if starts && has_content(&line[3..]) {
                content_line = Some(lineno);
            }
        } else if content_line.is_none() && has_content(line) && !line.starts_with('%') {
            content_line = Some(lineno);
        }
        offset += raw.len();
    }
    if let Some(content_line) = content_line {
        docs.push(Doc {
            index,
            text: &text[start..],
            first_line,
            content_line,
        });
    }
    docs
}

/// Parses one file's text. Resources with errors are left out and reported;
/// cross-resource checks are not run (see [`ConfigSet::retain_valid`]).
pub fn parse_str(file: &str, text: &str) -> (ConfigSet, Vec<Diagnostic>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut set = ConfigSet::default();
    let mut diagnostics = Vec::new();
    for doc in split_documents(text) {
        parse_document(file, &doc, &mut set, &mut diagnostics);
    }
    (set, diagnostics)
}

/// What a document is, judged by `apiVersion` and `kind`.
enum Recognised {
    VirtualService,
    DestinationRule,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
}

fn parse_document(file: &str, doc: &Doc<'_>, set: &mut ConfigSet, out: &mut Vec<Diagnostic>) {
    let mut subject = Subject {
        file: file.to_string(),
        document: Some(doc.index),
        ..Subject::default()
    };
    let value: Value = match serde_yaml_ng::from_str(doc.text) {
        Ok(v) => v,
        Err(e) => return out.push(yaml_error(&subject, &e, doc)),
    };
    let map = match value {
        Value::Null => return,
        Value::Mapping(m) => m,
        _ => {
            return out.push(subject.diagnostic(
                Severity::Error,
                "",
                "expected a resource (a mapping with apiVersion, kind, metadata and spec)",
            ))
        }
    };
    let text_field = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
    let api_version = text_field("apiVersion").unwrap_or_default();
    let Some(kind) = text_field("kind") else {
        return out.push(subject.diagnostic(Severity::Error, "kind", "missing field `kind`"));
    };
    subject.kind = Some(kind.clone());
    if let Some(meta) = map.get("metadata") {
        let get = |k| meta.get(k).and_then(Value::as_str);
        if let Some(name) = get("name") {
            subject.resource = Some(format!("{}/{name}", get("namespace").unwrap_or("default")));
        }
    }
    let security = SECURITY_KINDS.contains(&kind.as_str());
    let telemetry = kind == "Telemetry";
    let (expected_group, versions, names): (_, &[&str], _) = if security {
        (SECURITY_GROUP, &SECURITY_VERSIONS, "v1 or v1beta1")
    } else if telemetry {
        (TELEMETRY_GROUP, &TELEMETRY_VERSIONS, "v1 or v1alpha1")
    } else {
        (GROUP, &VERSIONS, "v1, v1beta1 or v1alpha3")
    };
    let ours = security || telemetry || kind == "VirtualService" || kind == "DestinationRule";
    if ours && api_version.is_empty() {
        return out.push(subject.diagnostic(
            Severity::Error,
            "apiVersion",
            format!("missing field `apiVersion` (use {expected_group}/v1)"),
        ));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let recognised = match kind.as_str() {
        "VirtualService" if group == GROUP => Recognised::VirtualService,
        "DestinationRule" if group == GROUP => Recognised::DestinationRule,
        "PeerAuthentication" if group == SECURITY_GROUP => Recognised::PeerAuthentication,
        "AuthorizationPolicy" if group == SECURITY_GROUP => Recognised::AuthorizationPolicy,
        "RequestAuthentication" if group == SECURITY_GROUP => Recognised::RequestAuthentication,
        "Telemetry" if group == TELEMETRY_GROUP => Recognised::Telemetry,
        _ => {
            let what = if api_version.is_empty() {
                kind.clone()
            } else {
                format!("{kind} ({api_version})")
            };
            return out.push(subject.diagnostic(
                Severity::Warning,
                "",
                format!("{what} is not read by anymesh; skipped"),
            ));
        }
    };
    if !versions.contains(&version) {
        return out.push(subject.diagnostic(
            Severity::Error,
            "apiVersion",
            format!("unsupported apiVersion {api_version:?} (use {expected_group}/{names})"),
        ));
    }
    let origin = Origin {
        file: file.to_string(),
        document: doc.index,
        line: doc.content_line,
    };
    match recognised {
        Recognised::VirtualService => {
            let root = schema::VIRTUAL_SERVICE_DOC;
            match typed(
                &subject,
                doc,
                origin,
                root,
                validate::virtual_service_resource,
                out,
            ) {
                Some((r, true)) => set.virtual_services.push(r),
                Some((r, false)) => set.rejected.virtual_services.push(r),
                None => {}
            }
        }
        Recognised::DestinationRule => {
            let root = schema::DESTINATION_RULE_DOC;
            match typed(
                &subject,
                doc,
                origin,
                root,
                validate::destination_rule_resource,
                out,
            ) {
                Some((r, true)) => set.destination_rules.push(r),
                Some((r, false)) => set.rejected.destination_rules.push(r),
                None => {}
            }
        }
        Recognised::PeerAuthentication => {
            let root = schema::PEER_AUTHENTICATION_DOC;
            let check = security::validate::peer_authentication;
            match typed(&subject, doc, origin, root, check, out) {
                Some((r, true)) => set.peer_authentications.push(r),
                Some((r, false)) => set.rejected.peer_authentications.push(r),
                None => {}
            }
        }
        Recognised::AuthorizationPolicy => {
            let root = schema::AUTHORIZATION_POLICY_DOC;
            let check = security::validate::authorization_policy;
            match typed(&subject, doc, origin, root, check, out) {
                Some((r, true)) => set.authorization_policies.push(r),
                Some((r, false)) => set.rejected.authorization_policies.push(r),
                None => {}
            }
        }
        Recognised::RequestAuthentication => {
            let root = schema::REQUEST_AUTHENTICATION_DOC;
            let check = security::validate::request_authentication;
            match typed(&subject, doc, origin, root, check, out) {
                Some((r, true)) => set.request_authentications.push(r),
                Some((r, false)) => set.rejected.request_authentications.push(r),
                None => {}
            }
        }
        Recognised::Telemetry => {
            let root = schema::TELEMETRY_DOC;
            match typed(
                &subject,
                doc,
                origin,
                root,
                telemetry::validate::telemetry,
                out,
            ) {
                Some((r, true)) => set.telemetries.push(r),
                Some((r, false)) => set.rejected.telemetries.push(r),
                None => {}
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<S> {
    #[serde(default)]
    #[allow(dead_code)] // consumed so it is not reported as unknown
    api_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    spec: S,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Parses the typed resource, reports unused fields and runs the per-resource
/// checks. Returns the resource (if it deserialised) and whether it passed.
fn typed<S: DeserializeOwned + Kind>(
    subject: &Subject,
    doc: &Doc<'_>,
    origin: Origin,
    root: &'static str,
    check: fn(&S, &BTreeMap<String, String>, &mut Findings),
    out: &mut Vec<Diagnostic>,
) -> Option<(Resource<S>, bool)> {
    let mut unused = Vec::new();
    let de = serde_yaml_ng::Deserializer::from_str(doc.text);
    let parsed: Result<Envelope<S>, _> =
        serde_ignored::deserialize(de, |path| unused.push(schema::segments(&path)));
    let mut findings = Findings::default();
    for path in &unused {
        let Some(schema::Seg::Key(field)) = path.last() else {
            continue;
        };
        let at = schema::render(path);
        match schema::classify(root, path) {
            Unused::Silent => {}
            Unused::Unsupported => findings.warning(
                at,
                format!("unsupported field '{field}': not implemented by anymesh, ignored"),
            ),
            Unused::Narrows => findings.error(
                at,
                format!(
                    "unsupported field '{field}': anymesh cannot honour it, and ignoring it \
                     would apply the rule to traffic it does not select"
                ),
            ),
            Unused::Unknown { suggestion } => findings.error(
                at,
                match suggestion {
                    Some(s) => format!("unknown field '{field}' (did you mean '{s}'?)"),
                    None => format!("unknown field '{field}'"),
                },
            ),
        }
    }
    let envelope = match parsed {
        Ok(e) => e,
        Err(e) => {
            out.push(yaml_error(subject, &e, doc));
            out.extend(findings.into_diagnostics(subject));
            return None;
        }
    };
    let name = envelope.metadata.name.unwrap_or_default();
    if name.is_empty() {
        findings.error("metadata.name", "a name is required");
    }
    check(
        &envelope.spec,
        &envelope.metadata.annotations,
        &mut findings,
    );
    let failed = findings.items.iter().any(|(s, _, _)| *s == Severity::Error);
    out.extend(findings.into_diagnostics(subject));
    let resource = Resource {
        origin,
        namespace: envelope
            .metadata
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        name,
        annotations: envelope.metadata.annotations,
        spec: envelope.spec,
    };
    Some((resource, !failed))
}

/// A YAML or type error, with its line mapped from the document to the file
/// and the field path split out of the message.
fn yaml_error(subject: &Subject, err: &serde_yaml_ng::Error, doc: &Doc<'_>) -> Diagnostic {
    static LINE: OnceLock<Option<Regex>> = OnceLock::new();
    let shift = doc.first_line - 1;
    let mut message = err.to_string();
    if let Some(re) = LINE.get_or_init(|| Regex::new(r"line (\d+) column (\d+)").ok()) {
        message = re
            .replace_all(&message, |c: &regex::Captures<'_>| {
                let line = c[1].parse::<usize>().map_or(0, |l| l + shift);
                format!("line {line} column {}", &c[2])
            })
            .into_owned();
    }
    let location = err.location().map(|l| (l.line() + shift, l.column()));
    if let Some((line, column)) = location {
        let at = format!(" at line {line} column {column}");
        if let Some(pos) = message.find(&at) {
            message.replace_range(pos..pos + at.len(), "");
        }
    }
    let mut path = String::new();
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.is_empty() && !head.contains(char::is_whitespace) {
            path = head.to_string();
            message = rest.to_string();
        }
    }
    let mut d = subject.diagnostic(Severity::Error, path, message);
    d.line = location.map(|(l, _)| l);
    d.column = location.map(|(_, c)| c);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_lines() {
        let text =
            "# leading comment\n---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n...\nc: 3\n";
        let docs = split_documents(text);
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.index, d.first_line, d.content_line, d.text))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 2, 3, "---\na: 1\n"),
                (3, 7, 8, "---\nb: 2\n"),
                (4, 10, 10, "c: 3\n"),
            ]
        );
        let bare = split_documents("x: 1\n--- {y: 2}\n");
        assert_eq!(bare.len(), 2);
        assert_eq!((bare[1].index, bare[1].content_line), (1, 2));
        assert!(split_documents("  \n# nothing\n").is_empty());
    }
}
