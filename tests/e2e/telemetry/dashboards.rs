//! The PromQL of Istio's Grafana dashboards, as data.
//!
//! `istio_dashboards.json` holds every panel query of the Mesh (grafana.com
//! 7639), Service (7636) and Workload (7630) dashboards, copied from
//! istio/istio `manifests/addons/dashboards` by `extract_dashboards.py` (the
//! commit is in its `origin`), and the meaning of each Grafana template
//! variable the queries use. [`dashboard_queries`] returns the queries with
//! the variables replaced by concrete values.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

const DATA: &str = include_str!("istio_dashboards.json");

#[derive(Debug, Deserialize)]
struct Data {
    origin: Origin,
    variables: Vec<Variable>,
    dashboards: Vec<Dashboard>,
}

/// Where the queries were copied from.
#[derive(Debug, Deserialize)]
pub(crate) struct Origin {
    pub(crate) repository: String,
    pub(crate) commit: String,
    pub(crate) path: String,
}

/// A Grafana template variable the queries use, and what it means.
#[derive(Debug, Deserialize)]
pub(crate) struct Variable {
    pub(crate) name: String,
    pub(crate) meaning: String,
}

#[derive(Debug, Deserialize)]
struct Dashboard {
    title: String,
    grafana_com_id: u32,
    queries: Vec<Query>,
}

#[derive(Debug, Deserialize)]
struct Query {
    row: Option<String>,
    panel: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    expr: String,
}

/// One panel query, its variables substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DashboardQuery {
    pub(crate) dashboard: String,
    pub(crate) grafana_com_id: u32,
    pub(crate) row: Option<String>,
    pub(crate) panel: String,
    /// The panel target's refId (`A`, `B`, `p50`...), when it has one.
    pub(crate) reference: Option<String>,
    pub(crate) expr: String,
}

impl fmt::Display for DashboardQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.dashboard, self.grafana_com_id)?;
        if let Some(row) = &self.row {
            write!(f, " / {row}")?;
        }
        write!(f, " / {}", self.panel)?;
        if let Some(r) = &self.reference {
            write!(f, " [{r}]")?;
        }
        Ok(())
    }
}

/// Concrete values for the dashboards' template variables, by name without
/// the `$`. Values are inserted verbatim: where a dashboard matches with
/// `=~`, the value is a regex (`.*` is Grafana's "All").
#[derive(Debug, Clone, Default)]
pub(crate) struct Substitutions(BTreeMap<String, String>);

impl Substitutions {
    /// Sets `$name` to `value`.
    pub(crate) fn set(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Every variable of the dashboards set: `service`, `workload` and
    /// `namespace` as given, the reporter `qrep` as given (`source`,
    /// `destination`, or both as the regex `source|destination`),
    /// `$__rate_interval` to `1m` and every multi-value filter to All (`.*`).
    pub(crate) fn for_dashboards(
        service: &str,
        namespace: &str,
        workload: &str,
        qrep: &str,
    ) -> Self {
        let all = ".*";
        Self::default()
            .set("__rate_interval", "1m")
            .set("qrep", qrep)
            .set("service", service)
            .set("namespace", namespace)
            .set("workload", workload)
            .set("srcns", all)
            .set("srcwl", all)
            .set("dstns", all)
            .set("dstwl", all)
            .set("dstsvc", all)
    }
}

fn data() -> Data {
    // The file is ours and compiled in: failing to parse it is a broken test.
    serde_json::from_str(DATA).expect("istio_dashboards.json parses")
}

/// Where the queries were copied from (repository, commit, path).
pub(crate) fn origin() -> Origin {
    data().origin
}

/// The template variables the data file documents.
pub(crate) fn variables() -> Vec<Variable> {
    data().variables
}

/// Every panel query of the three dashboards, in dashboard order, with its
/// variables replaced from `subs`; panics naming the query and the variable
/// when one is not in `subs`.
pub(crate) fn dashboard_queries(subs: &Substitutions) -> Vec<DashboardQuery> {
    let mut out = Vec::new();
    for d in data().dashboards {
        for q in d.queries {
            let expr = substitute(&q.expr, subs)
                .unwrap_or_else(|e| panic!("{} / {}: {e}", d.title, q.panel));
            out.push(DashboardQuery {
                dashboard: d.title.clone(),
                grafana_com_id: d.grafana_com_id,
                row: q.row,
                panel: q.panel,
                reference: q.reference,
                expr,
            });
        }
    }
    out
}

/// The names of the variables `expr` uses (`$name` or `${name}`).
pub(crate) fn variables_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let _ = replace_variables(expr, |name| {
        names.push(name.to_owned());
        Some(String::new())
    });
    names
}

/// `expr` with each `$name` / `${name}` replaced from `subs`.
pub(crate) fn substitute(expr: &str, subs: &Substitutions) -> Result<String, String> {
    replace_variables(expr, |name| subs.0.get(name).cloned())
}

fn replace_variables(
    expr: &str,
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err(format!("unclosed ${{ in {expr:?}")),
            },
            None => {
                let end = after.find(|c| !is_name(c)).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() {
            return Err(format!("a lone $ in {expr:?}"));
        }
        match value(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("no value for the variable ${name}")),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}
