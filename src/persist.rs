//! Fail-static state: the last good view of each registry source, saved to a
//! state directory so a proxy that restarts while a registry is down still
//! serves.
//!
//! One JSON file per source (`<dir>/<source>.json`), written to a temporary
//! file, synced, then renamed over the old one: a crash mid-write leaves the
//! previous file intact. A file that cannot be read or parsed is reported and
//! ignored; it never stops the proxy.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use anymesh_core::{Endpoint, Service, SourceId, SourceView};
use serde::{Deserialize, Serialize};

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
