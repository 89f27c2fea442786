//! Findings about config files: errors (the resource is not applied) and
//! warnings (it is applied, but something in it is ignored or suspicious).

use std::fmt;

use serde::Serialize;

/// How bad a finding is.
///
/// When config is loaded, an error means the resource is dropped. The route
/// compiler has nothing to drop: its errors mark a part of a resource that
/// cannot serve (a subset no rule defines, a rule it cannot build), and each
/// message ends with what the running proxy does about it ("requests sent to
/// this destination get 503"), so the proxy's log and `anymesh check`, which
/// fails on them, tell the same story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource still applies; something in it is ignored or suspicious.
    Warning,
    /// At load time the resource (or the whole document) is not applied; at
    /// compile time the part named cannot serve, as the message says.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding, precise enough to act on.
///
/// `Display` renders one line without the severity (print it yourself, e.g.
/// `eprintln!("{}: {d}", d.severity)`):
///
/// ```text
/// routes.yaml: VirtualService default/reviews: spec.http[0].route: weights sum to 90, must sum to 100
/// routes.yaml:14:9: VirtualService default/reviews: spec.http[0].timeout: invalid duration "10": missing unit ...
/// routes.yaml:3:1: mapping values are not allowed in this context
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as it was given (or a label such as `<stdin>`).
    pub file: String,
    /// 0-based index of the YAML document in the file, when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// 1-based line and column, when the YAML parser pinpointed the problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// `VirtualService`, `DestinationRule`, or the kind of a skipped document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `namespace/name` of the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Field path such as `spec.http[1].route[0].weight`; empty for the whole document.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        match (&self.kind, &self.resource) {
            (Some(kind), Some(res)) => write!(f, "{kind} {res}: ")?,
            (Some(kind), None) => write!(f, "{kind}: ")?,
            _ => {}
        }
        if self.resource.is_none() && self.line.is_none() {
            if let Some(doc) = self.document {
                write!(f, "document {}: ", doc + 1)?;
            }
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Whether any finding is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// What a diagnostic is about: file, document and (once known) resource.
/// Collects findings for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subject {
    pub file: String,
    pub document: Option<usize>,
    pub kind: Option<String>,
    pub resource: Option<String>,
}

impl Subject {
    pub(crate) fn diagnostic(
        &self,
        severity: Severity,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.clone(),
            document: self.document,
            line: None,
            column: None,
            kind: self.kind.clone(),
            resource: self.resource.clone(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Findings about one resource, before the resource's context is attached.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub items: Vec<(Severity, String, String)>,
}

impl Findings {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items
            .push((Severity::Error, path.into(), message.into()));
    }

    pub(super) fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items
            .push((Severity::Warning, path.into(), message.into()));
    }

    pub(super) fn into_diagnostics(self, subject: &Subject) -> Vec<Diagnostic> {
        self.items
            .into_iter()
            .map(|(sev, path, msg)| subject.diagnostic(sev, path, msg))
            .collect()
    }
}
