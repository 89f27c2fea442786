//! The file registry passes the adapter contract (`anymesh_testkit::contract`).
//!
//! The registry is a YAML file that the harness rewrites on every change
//! (atomically: a temporary file renamed over it, as editors and ConfigMap
//! updates do). An outage is a broken edit: the file stays in place but holds
//! a key the format rejects. Edits made during the outage stay broken, each
//! with its own rejected key, so each is reported: the adapter re-reads what
//! changed and never goes quiet while the file is unusable. It does not
//! repeat an identical error, by design (see its module docs); recovery is the
//! next valid edit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_file::FileRegistry;
use anymesh_core::{Labels, Registry, SourceId};
use anymesh_testkit::contract::{self, ContractHarness};
use tokio::sync::Mutex;

/// An endpoint as the harness writes it: address, port, labels.
type Entry = (String, u16, Labels);

#[derive(Default)]
struct Model {
    /// service → endpoint id → entry.
    services: BTreeMap<String, BTreeMap<String, Entry>>,
    /// During an outage, the number of broken edits written so far.
    broken: Option<u32>,
}

impl Model {
    fn yaml(&self) -> String {
        let mut out = String::from("services:\n");
        let mut any = false;
        for (service, endpoints) in &self.services {
            if endpoints.is_empty() {
                continue;
            }
            any = true;
            let _ = writeln!(out, "  - name: {service}\n    endpoints:");
            for (id, (address, port, labels)) in endpoints {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {v:?}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "      - {{address: {address}, port: {port}, id: {service}-{id}, labels: {{{}}}}}",
                    labels.join(", ")
                );
            }
        }
        if !any {
            out = String::from("services: []\n");
        }
        if let Some(n) = self.broken {
            // Not a key of the format: the whole file is rejected.
            let _ = writeln!(out, "outage-{n}: true");
        }
        out
    }
}

struct FileHarness {
    dir: tempfile::TempDir,
    path: PathBuf,
    model: Mutex<Model>,
}

impl FileHarness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("services.yaml");
        let h = Self {
            dir,
            path,
            model: Mutex::new(Model::default()),
        };
        h.write(&Model::default()).await;
        h
    }

    /// Replaces the file atomically with `model`'s YAML.
    async fn write(&self, model: &Model) {
        let tmp = self.dir.path().join(".services.yaml.tmp");
        tokio::fs::write(&tmp, model.yaml())
            .await
            .expect("write the temporary file");
        tokio::fs::rename(&tmp, &self.path)
            .await
            .expect("rename it over the registry file");
    }

    /// Applies `change` to the model and writes the file; during an outage
    /// the written file is broken again, with a new rejected key.
    async fn edit(&self, change: impl FnOnce(&mut Model)) {
        let mut model = self.model.lock().await;
        change(&mut model);
        if let Some(n) = model.broken.as_mut() {
            *n += 1;
        }
        self.write(&model).await;
    }
}

impl ContractHarness for FileHarness {
    async fn start_registry(&self) -> Arc<dyn Registry> {
        let registry = FileRegistry::new(SourceId::new("file"), self.path.clone())
            .with_poll_interval(Duration::from_millis(50));
        Arc::new(registry)
    }

    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels) {
        let entry = (address.to_string(), port, labels.clone());
        self.edit(|m| {
            m.services
                .entry(service.to_string())
                .or_default()
                .insert(id.to_string(), entry);
        })
        .await;
    }

    async fn remove(&self, service: &str, id: &str) {
        self.edit(|m| {
            if let Some(endpoints) = m.services.get_mut(service) {
                endpoints.remove(id);
            }
        })
        .await;
    }

    async fn outage(&self) {
        self.edit(|m| m.broken = Some(0)).await;
    }

    async fn recover(&self) {
        let mut model = self.model.lock().await;
        model.broken = None;
        self.write(&model).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_adapter_contract() {
    contract::run(&FileHarness::new().await).await;
}
