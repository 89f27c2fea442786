//! The two small languages inside mapping rules: `{placeholder}` templates
//! and regular expressions. Both keep their source text and any parse error,
//! so a bad rule deserialises and [`super::Mapping::validate`] reports it
//! with its field path instead of a bare serde error.

use regex::Regex;
use serde::Deserialize;

use crate::model::Labels;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Service,
    Label(String),
}

/// A hostname template: literal text with `{service}` (the registry's service
/// name) and `{<label key>}` placeholders, e.g. `{service}.{namespace}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct Template {
    source: String,
    parts: Result<Vec<Part>, String>,
}

impl Template {
    pub fn new(source: impl Into<String>) -> Self {
        let source = source.into();
        let parts = parse(&source);
        Self { source, parts }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Why the template does not parse, if it does not.
    pub fn error(&self) -> Option<&str> {
        self.parts.as_ref().err().map(String::as_str)
    }

    /// The label keys the template needs (`{service}` excluded).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().flatten().filter_map(|p| match p {
            Part::Label(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// Fills the placeholders; an absent label is an error naming it.
    pub fn render(&self, service: &str, labels: &Labels) -> Result<String, String> {
        let parts = self
            .parts
            .as_ref()
            .map_err(|e| format!("template {:?} is invalid: {e}", self.source))?;
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Service => out.push_str(service),
                Part::Label(k) => match labels.get(k) {
                    Some(v) => out.push_str(v),
                    None => {
                        return Err(format!(
                            "template {:?} needs label `{k}`, which is absent",
                            self.source
                        ))
                    }
                },
            }
        }
        Ok(out)
    }
}

impl From<String> for Template {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

fn parse(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => {
                parts.push(Part::Lit(rest.to_string()));
                break;
            }
            (Some(o), Some(c)) if o < c => {
                if o > 0 {
                    parts.push(Part::Lit(rest[..o].to_string()));
                }
                let name = &rest[o + 1..c];
                if name.is_empty() {
                    return Err("empty placeholder `{}`".into());
                }
                if name.contains('{') {
                    return Err(format!("placeholder {:?} is not closed", &rest[o..]));
                }
                parts.push(match name {
                    "service" => Part::Service,
                    key => Part::Label(key.to_string()),
                });
                rest = &rest[c + 1..];
            }
            (Some(o), _) if close.is_none() => {
                return Err(format!("placeholder {:?} is not closed", &rest[o..]))
            }
            _ => return Err("`}` without a matching `{`".into()),
        }
    }
    Ok(parts)
}

/// A regular expression from the config (unanchored unless it says `^…$`).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "String")]
pub struct Pattern {
    source: String,
    regex: Result<Regex, String>,
}

impl Pattern {
    pub fn new(source: impl Into<String>) -> Self {
        let source = source.into();
        let regex = Regex::new(&source).map_err(|e| e.to_string());
        Self { source, regex }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn error(&self) -> Option<&str> {
        self.regex.as_ref().err().map(String::as_str)
    }

    /// An invalid pattern matches nothing (`validate` reports it).
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.as_ref().is_ok_and(|r| r.is_match(s))
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}
