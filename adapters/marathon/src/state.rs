//! What the adapter has told the catalog: the last app list read and what it
//! means ([`View`]), the changes that turn one view into the next
//! ([`View::diff`]), and the status to report.

use std::collections::BTreeMap;

use anymesh_core::{Change, Endpoint, Hostname, Service, SourceStatus, SourceView, ViewMaps};

use crate::decode::{App, AppList};
use crate::translate::Translator;

/// How many skipped apps or tasks a status message names.
const NAMED_INVALID: usize = 3;

/// The apps as last read, and what they mean for the catalog.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct View {
    /// Apps by id.
    pub apps: BTreeMap<String, App>,
    /// Apps of the last list that could not be read.
    unreadable: Vec<String>,
    services: BTreeMap<Hostname, Service>,
    /// Endpoints by task id.
    endpoints: BTreeMap<String, Endpoint>,
    /// Apps or tasks without an endpoint, with why.
    invalid: BTreeMap<String, String>,
}

impl View {
    /// The view of one app list.
    pub(crate) fn new(list: AppList, tr: &Translator) -> Self {
        let apps = list.apps.into_iter().map(|a| (a.id.clone(), a)).collect();
        Self::derive(apps, list.problems, tr)
    }

    fn derive(apps: BTreeMap<String, App>, unreadable: Vec<String>, tr: &Translator) -> Self {
        let mut v = View {
            apps,
            unreadable,
            ..View::default()
        };
        for app in v.apps.values() {
            let svc = match tr.service(app) {
                Ok(s) => s,
                Err(e) => {
                    v.invalid.insert(app.id.clone(), e);
                    continue;
                }
            };
            if v.services.contains_key(&svc.hostname) {
                // Two apps whose ids give one hostname: the first (in id order) keeps it.
                v.invalid.insert(
                    app.id.clone(),
                    format!(
                        "app {} gives hostname {}, already taken by another app",
                        app.id, svc.hostname
                    ),
                );
                continue;
            }
            v.services.insert(svc.hostname.clone(), svc);
            for task in &app.tasks {
                match tr.endpoint(app, task) {
                    Ok(ep) => {
                        v.endpoints.insert(task.id.clone(), ep);
                    }
                    Err(e) => {
                        v.invalid.insert(task.id.clone(), e);
                    }
                }
            }
        }
        v
    }

    /// This view with a task removed (a terminal status update).
    pub(crate) fn without_task(
        &self,
        app_id: &str,
        task_id: &str,
        tr: &Translator,
    ) -> Option<Self> {
        let mut apps = self.apps.clone();
        let app = apps.get_mut(app_id)?;
        let before = app.tasks.len();
        app.tasks.retain(|t| t.id != task_id);
        if app.tasks.len() == before {
            return None;
        }
        Some(Self::derive(apps, self.unreadable.clone(), tr))
    }

    /// This view without an app (`app_terminated_event`).
    pub(crate) fn without_app(&self, app_id: &str, tr: &Translator) -> Option<Self> {
        let mut apps = self.apps.clone();
        apps.remove(app_id)?;
        Some(Self::derive(apps, self.unreadable.clone(), tr))
    }

    /// The whole view, for a `Reset`.
    pub(crate) fn source_view(&self) -> SourceView {
        SourceView {
            services: self.services.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
        }
    }

    /// How many endpoints (tasks) the view has, eligible or not.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    fn maps(&self) -> ViewMaps<'_> {
        ViewMaps {
            services: &self.services,
            endpoints: &self.endpoints,
        }
    }

    /// The changes that turn `self` into `new` ([`ViewMaps::diff`]), and the
    /// status too when the skipped entries changed.
    pub(crate) fn diff(&self, new: &View) -> Vec<Change> {
        let mut out = self.maps().diff(&new.maps());
        if new.invalid != self.invalid || new.unreadable != self.unreadable {
            out.push(new.status());
        }
        out
    }

    /// `Healthy`, or `Degraded` naming the first few apps or tasks skipped.
    pub(crate) fn status(&self) -> Change {
        let all: Vec<&str> = self
            .unreadable
            .iter()
            .chain(self.invalid.values())
            .map(String::as_str)
            .collect();
        if all.is_empty() {
            return Change::Status(SourceStatus::Healthy);
        }
        let n = all.len();
        let more = match n.saturating_sub(NAMED_INVALID) {
            0 => String::new(),
            rest => format!("; and {rest} more"),
        };
        let named = all[..n.min(NAMED_INVALID)].join("; ");
        Change::Status(SourceStatus::Degraded {
            message: format!("{n} marathon app(s) or task(s) skipped: {named}{more}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MarathonConfig;
    use crate::decode::decode_apps;
    use anymesh_core::SourceId;

    fn tr() -> Translator {
        Translator::new(SourceId::new("m"), &MarathonConfig::new(["http://m:8080"]))
    }

    fn list(json: &str) -> AppList {
        decode_apps(json.as_bytes()).unwrap()
    }

    #[test]
    fn diffs_remove_killed_tasks_and_report_skipped_ones() {
        let t = tr();
        let a = View::new(
            list(
                r#"{"apps":[{"id":"/web","ports":[10000],"tasks":[
                {"id":"web.1","host":"10.0.0.1","ports":[31000],"state":"TASK_RUNNING"},
                {"id":"web.2","host":"10.0.0.2","ports":[31001],"state":"TASK_RUNNING"}]}]}"#,
            ),
            &t,
        );
        assert_eq!(a.status(), Change::Status(SourceStatus::Healthy));
        let b = a.without_task("/web", "web.2", &t).unwrap();
        let changes = a.diff(&b);
        assert!(
            matches!(changes.as_slice(), [Change::RemoveEndpoint(k)] if &*k.native_id == "web.2"),
            "{changes:?}"
        );
        assert!(a.without_task("/web", "web.9", &t).is_none());
        let c = a.without_app("/web", &t).unwrap();
        let changes = a.diff(&c);
        assert!(matches!(changes.last(), Some(Change::RemoveService(h)) if h.as_str() == "web"));

        // A running task without a port is skipped and named; the other stays.
        let d = View::new(
            list(
                r#"{"apps":[{"id":"/web","tasks":[
                {"id":"web.1","host":"10.0.0.1","ports":[31000],"state":"TASK_RUNNING"},
                {"id":"web.3","host":"10.0.0.3","ports":[],"state":"TASK_RUNNING"}]},
                {"id":"/bad","tasks":"nope"}]}"#,
            ),
            &t,
        );
        assert_eq!(d.endpoint_count(), 1);
        let Change::Status(SourceStatus::Degraded { message }) = d.status() else {
            panic!("degraded expected");
        };
        assert!(
            message.contains("web.3") && message.contains("no port"),
            "{message}"
        );
        assert!(message.contains("apps[1] (\"/bad\")"), "{message}");
        assert!(a.diff(&d).iter().any(|c| matches!(c, Change::Status(_))));
    }
}
