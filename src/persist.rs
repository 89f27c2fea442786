//! Fail-static state: the last good view of each registry source, saved to a
//! state directory so a proxy that restarts while a registry is down still
//! serves.
//!
//! One JSON file per source (`<dir>/<source>.json`), written to a temporary
//! file, synced, then renamed over the old one: a crash mid-write leaves the
//! previous file intact. A file that cannot be read or parsed is reported and
//! ignored; it never stops the proxy.
//!
//! At start the catalog is seeded with each source's saved view (`restore`);
//! after each catalog batch the changed views are saved (`saver`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use anymesh_core::catalog::CatalogState;
use anymesh_core::{Endpoint, Service, SourceId, SourceView};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    source: String,
    /// Seconds since the Unix epoch.
    saved_at: f64,
    services: Vec<Service>,
    endpoints: Vec<Endpoint>,
}

/// A source's view as last saved.
pub struct Restored {
    pub view: SourceView,
    pub saved_at: SystemTime,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates the directory if needed.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, source: &SourceId) -> PathBuf {
        // Source names may contain '/', e.g. consul/dc1.
        let name: String = source
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The saved view of `source`, if there is a usable one.
    pub fn load(&self, source: &SourceId) -> anyhow::Result<Option<Restored>> {
        let path = self.path(source);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let saved: Saved = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a usable saved view", path.display()))?;
        anyhow::ensure!(
            saved.format == FORMAT && saved.source == source.as_str(),
            "{}: saved for source {:?} in format {}, expected {:?} in format {FORMAT}",
            path.display(),
            saved.source,
            saved.format,
            source.as_str()
        );
        let saved_at = UNIX_EPOCH + std::time::Duration::from_secs_f64(saved.saved_at.max(0.0));
        Ok(Some(Restored {
            view: SourceView {
                services: saved.services,
                endpoints: saved.endpoints,
            },
            saved_at,
        }))
    }

    /// Saves `view` as the last good view of `source` (atomically).
    pub fn save(&self, source: &SourceId, view: &SourceView) -> anyhow::Result<()> {
        use std::io::Write;
        let saved = Saved {
            format: FORMAT,
            source: source.as_str().to_string(),
            saved_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            services: view.services.clone(),
            endpoints: view.endpoints.clone(),
        };
        let path = self.path(source);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            serde_json::to_writer(&mut f, &saved)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("cannot save {}", path.display()))
    }
}

/// Seeds the catalog with each source's saved view (served, marked stale,
/// until the registry answers).
pub(crate) fn restore(dir: &StateDir, state: &mut CatalogState) {
    let sources: Vec<SourceId> = state.sources().cloned().collect();
    for source in sources {
        match dir.load(&source) {
            Ok(Some(saved)) => {
                let endpoints = saved.view.endpoints.len();
                let saved_secs = saved
                    .saved_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                state.restore(&source, saved.view, saved.saved_at, SystemTime::now());
                tracing::warn!(
                    source = %source,
                    endpoints,
                    saved_at = saved_secs,
                    "registry not read yet: serving its last saved view (fail-static) until it answers"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(source = %source, error = %format!("{e:#}"), "ignoring the saved view")
            }
        }
    }
}

/// After each catalog batch: saves the view of every connected source whose
/// data changed. Writes happen off the catalog task, newest view wins.
pub(crate) fn saver(dir: StateDir, sources: Vec<SourceId>) -> impl FnMut(&CatalogState) + Send {
    let (tx, mut rx) = mpsc::channel::<(SourceId, SourceView)>(64);
    tokio::spawn(async move {
        while let Some((source, view)) = rx.recv().await {
            let dir = dir.clone();
            let result = tokio::task::spawn_blocking(move || dir.save(&source, &view)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot save a registry's view")
                }
                Err(e) => tracing::warn!(error = %e, "saving a registry's view failed"),
            }
        }
    });
    let mut saved_at_change: HashMap<SourceId, u64> = Default::default();
    move |state: &CatalogState| {
        for source in &sources {
            let Some(info) = state.source_info(source) else {
                continue;
            };
            // Only a view the registry itself confirmed is worth keeping.
            if !(info.synced && info.connected)
                || saved_at_change.get(source) == Some(&info.change_count)
            {
                continue;
            }
            if let Some(view) = state.source_view(source) {
                if tx.try_send((source.clone(), view)).is_ok() {
                    saved_at_change.insert(source.clone(), info.change_count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anymesh_core::{EndpointPort, Health, Hostname, Labels, Locality, Provenance};

    fn view() -> SourceView {
        SourceView {
            services: vec![],
            endpoints: vec![Endpoint {
                service: Hostname::new("web").unwrap(),
                address: "10.0.0.1".into(),
                ports: vec![EndpointPort {
                    name: String::new(),
                    number: 80,
                }],
                labels: Labels::from([("version".into(), "v1".into())]),
                health: Health::Healthy,
                weight: 1,
                locality: Locality::default(),
                mesh: None,
                provenance: Provenance {
                    source: SourceId::new("consul/dc1"),
                    native_id: "web-1".into(),
                    raw_labels: Labels::new(),
                },
            }],
        }
    }

    #[test]
    fn saves_and_restores_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let src = SourceId::new("consul/dc1");
        assert!(state.load(&src).unwrap().is_none());
        state.save(&src, &view()).unwrap();
        let restored = state.load(&src).unwrap().unwrap();
        assert_eq!(restored.view, view());
        assert!(restored.saved_at <= SystemTime::now());
        assert!(dir.path().join("state/consul_dc1.json").exists());
        assert!(!dir.path().join("state/consul_dc1.json.tmp").exists());
    }

    #[test]
    fn a_broken_or_foreign_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let src = SourceId::new("file");
        std::fs::write(dir.path().join("file.json"), "{not json").unwrap();
        let e = state.load(&src).err().unwrap().to_string();
        assert!(e.contains("file.json"), "{e}");
        state.save(&SourceId::new("other"), &view()).unwrap();
        std::fs::rename(dir.path().join("other.json"), dir.path().join("file.json")).unwrap();
        let e = format!("{:#}", state.load(&src).err().unwrap());
        assert!(e.contains("\"other\""), "{e}");
    }
}
