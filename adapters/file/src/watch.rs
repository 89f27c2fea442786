//! [`FileRegistry`]: serves a registry file and follows its changes.
//!
//! What the adapter has told the catalog is a [`State`]; every (re)load feeds
//! the result to [`State::step`], which says what to send:
//!
//! ```text
//!              ok: Reset + Healthy
//!   Starting ─────────────────────────► Serving(view) ◄──┐ ok, same view: nothing
//!      │                                  │  ▲    └───────┘ ok, new view: Reset + Healthy
//!      │ err: Error                 err:  │  │ ok, same view: Healthy
//!      ▼                            Error ▼  │ ok, new view: Reset + Healthy
//!   Failing(error) ──ok: Reset──►    Stale(view, error)
//!      ▲  │          + Healthy        │   ▲
//!      └──┘ err: Error if new         └───┘ err: Error if the message is new
//! ```
//!
//! A failed load never sends a `Reset`, so the catalog keeps the last good
//! view (marked stale) while the file is broken, missing or unreadable.
//!
//! Reloads are triggered by `notify` events on the file's *directory* (so
//! editors' write-then-rename and Kubernetes ConfigMap `..data` symlink swaps
//! are seen), coalesced for [`DEBOUNCE`], and by a poll as a safety net: each
//! poll compares the file's resolved path, modification time and length with
//! those it had when last read, and while the file is failing, re-reads it
//! anyway. Nothing runs between events and polls: a broken file costs one read
//! per poll interval plus one per burst of events, never a busy loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anymesh_core::registry::CatalogClosed;
use anymesh_core::{Change, ChangeSink, Registry, SourceId, SourceStatus, SourceView};
use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::parse::load;

/// How long to wait after the first event of a burst before re-reading.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The default interval of the modification-time poll.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest poll interval accepted; shorter ones are raised to this.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A registry backed by one YAML file (see the crate docs for the format).
#[derive(Debug, Clone)]
pub struct FileRegistry {
    source: SourceId,
    path: PathBuf,
    poll_interval: Duration,
    use_notify: bool,
}

impl FileRegistry {
    /// A registry reading `path`, reporting as `source`. Polls every
    /// [`DEFAULT_POLL_INTERVAL`] besides watching for events.
    pub fn new(source: SourceId, path: PathBuf) -> Self {
        Self {
            source,
            path,
            poll_interval: DEFAULT_POLL_INTERVAL,
            use_notify: true,
        }
    }

    /// Sets how often the file's modification time and length are checked, for
    /// filesystems that deliver no events. At least [`MIN_POLL_INTERVAL`].
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(MIN_POLL_INTERVAL);
        self
    }

    /// Disables `notify` so only polling sees changes (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn without_notify(mut self) -> Self {
        self.use_notify = false;
        self
    }

    /// The file this registry reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn watch(&self, sink: &ChangeSink) -> Result<(), CatalogClosed> {
        let (tx, rx) = mpsc::channel(1);
        let file_touched = Arc::new(AtomicBool::new(false));
        // Created before the first load, so no change in between is missed.
        let watcher = match self.use_notify {
            true => start_watcher(&self.path, tx, file_touched.clone()),
            false => None,
        };
        let mut events = watcher.as_ref().map(|_| rx);

        let mut state = State::Starting;
        let mut seen = self.reload(&mut state, sink).await?;
        let mut poll = tokio::time::interval_at(
            tokio::time::Instant::now() + self.poll_interval,
            self.poll_interval,
        );
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                woke = next_event(&mut events) => {
                    if woke.is_none() {
                        tracing::warn!("file watcher stopped; relying on polling");
                        events = None;
                        continue;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    if let Some(rx) = events.as_mut() {
                        while rx.try_recv().is_ok() {}
                    }
                    // An event on the file itself forces a re-read even if its
                    // stamp looks unchanged (coarse mtime, same length).
                    file_touched.swap(false, Ordering::AcqRel)
                }
                _ = poll.tick() => false,
                () = sink.closed() => return Err(CatalogClosed),
            };
            // While failing, every poll re-reads: a fix that leaves the stamp
            // alone (chmod, a remount, a transient EIO) must still be seen.
            let failing = matches!(state, State::Failing(_) | State::Stale(..));
            if force || failing || self.probe().await != seen {
                seen = self.reload(&mut state, sink).await?;
            }
        }
    }

    /// Stats the file (off the async threads: network filesystems can block).
    async fn probe(&self) -> Option<Stamp> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Stamp::of(&path))
            .await
            .ok()
            .flatten()
    }

    /// Re-reads the file, sends what the state machine says, and returns the
    /// stamp the file had just before it was read.
    async fn reload(
        &self,
        state: &mut State,
        sink: &ChangeSink,
    ) -> Result<Option<Stamp>, CatalogClosed> {
        let (path, source) = (self.path.clone(), self.source.clone());
        let (stamp, loaded) = tokio::task::spawn_blocking(move || {
            let stamp = Stamp::of(&path);
            (stamp, load(&path, &source).map_err(|e| e.to_string()))
        })
        .await
        .unwrap_or_else(|e| (None, Err(format!("reading the file failed: {e}"))));
        let was_failing = matches!(state, State::Failing(_) | State::Stale(..));
        let (next, changes) = std::mem::take(state).step(loaded);
        *state = next;
        for change in changes {
            match &change {
                Change::Reset(view) => tracing::debug!(
                    services = view.services.len(),
                    endpoints = view.endpoints.len(),
                    "file registry loaded"
                ),
                Change::Status(SourceStatus::Error { message }) => {
                    tracing::warn!(error = %message, "file registry unusable; keeping the last good view")
                }
                Change::Status(SourceStatus::Healthy) if was_failing => {
                    tracing::info!("file registry usable again")
                }
                _ => {}
            }
            sink.send(change).await?;
        }
        Ok(stamp)
    }
}

#[async_trait]
impl Registry for FileRegistry {
    fn source(&self) -> &SourceId {
        &self.source
    }

    /// Loads the file, then follows it until the task is cancelled or the
    /// catalog closes. Never returns on a file error: see the module docs.
    async fn run(&self, sink: ChangeSink) {
        let span =
            tracing::info_span!("registry", source = %self.source, path = %self.path.display());
        async {
            tracing::info!("file registry started");
            if self.watch(&sink).await.is_err() {
                tracing::info!("catalog closed; file registry stopping");
            }
        }
        .instrument(span)
        .await
    }
}

/// Waits for the next watcher wake-up; pending forever when there is no watcher.
async fn next_event(events: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Watches the directory of `path`. Each relevant event sets `file_touched`
/// when it names the file, then wakes the loop through `tx` (a full channel
/// already means "wake up", so extra events are dropped).
fn start_watcher(
    path: &Path,
    tx: mpsc::Sender<()>,
    file_touched: Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
        tracing::warn!("path names no file; relying on polling");
        return None;
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        let touches_file = match &res {
            Ok(event) if !is_change(&event.kind) => return,
            Ok(event) => event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str())),
            // The watcher lost track (overflow, ...): look at the file.
            Err(_) => true,
        };
        if touches_file {
            file_touched.store(true, Ordering::Release);
        }
        let _ = tx.try_send(());
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a file watcher; relying on polling");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the directory; relying on polling");
        return None;
    }
    Some(watcher)
}

/// Whether an event kind can mean the file changed. Opening or reading (our
/// own reads included) cannot; closing after a write can.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// What the poll compares: the resolved path (changes on a symlink swap), the
/// modification time and the length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    target: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    /// `None` when the file cannot be stat'ed (missing, no permission).
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            target: std::fs::canonicalize(path).ok()?,
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// What the catalog has been told (see the module docs for the diagram).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) enum State {
    /// Nothing loaded yet.
    #[default]
    Starting,
    /// Never loaded successfully; the last error sent.
    Failing(String),
    /// The last view sent; all good.
    Serving(SourceView),
    /// The last view sent is stale; the last error sent.
    Stale(SourceView, String),
}

impl State {
    /// The next state and the changes to send, given a load's outcome.
    pub(crate) fn step(self, loaded: Result<SourceView, String>) -> (State, Vec<Change>) {
        let healthy = Change::Status(SourceStatus::Healthy);
        match (self, loaded) {
            (State::Serving(old), Ok(view)) if old == view => (State::Serving(old), vec![]),
            (State::Stale(old, _), Ok(view)) if old == view => (State::Serving(old), vec![healthy]),
            (_, Ok(view)) => (
                State::Serving(view.clone()),
                vec![Change::Reset(view), healthy],
            ),
            (State::Failing(old), Err(e)) if old == e => (State::Failing(old), vec![]),
            (State::Stale(view, old), Err(e)) if old == e => (State::Stale(view, old), vec![]),
            (State::Starting | State::Failing(_), Err(e)) => {
                (State::Failing(e.clone()), vec![error(e)])
            }
            (State::Serving(view) | State::Stale(view, _), Err(e)) => {
                (State::Stale(view, e.clone()), vec![error(e)])
            }
        }
    }
}

fn error(message: String) -> Change {
    Change::Status(SourceStatus::Error { message })
}

#[cfg(test)]
mod tests;
