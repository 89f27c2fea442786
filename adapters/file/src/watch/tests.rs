use std::path::Path;
use std::time::Duration;

use anymesh_core::{
    Change, ChangeSink, Registry, SourceId, SourceStatus, SourceView, SourcedChange,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{FileRegistry, State};

// ---- the state machine -------------------------------------------------------

fn view(n: usize) -> SourceView {
    crate::parse(
        Path::new("t.yaml"),
        &format!("services:\n  - name: s\n    endpoints: [{{address: h, port: {n}}}]\n"),
        &SourceId::new("file"),
    )
    .unwrap()
}

fn healthy() -> Change {
    Change::Status(SourceStatus::Healthy)
}

fn error(m: &str) -> Change {
    Change::Status(SourceStatus::Error { message: m.into() })
}

#[test]
fn step_sends_reset_only_for_new_content() {
    let (s, out) = State::Starting.step(Ok(view(1)));
    assert_eq!(out, vec![Change::Reset(view(1)), healthy()]);
    let (s, out) = s.step(Ok(view(1)));
    assert_eq!(out, vec![]);
    let (s, out) = s.step(Ok(view(2)));
    assert_eq!(out, vec![Change::Reset(view(2)), healthy()]);
    assert_eq!(s, State::Serving(view(2)));
}

#[test]
fn step_keeps_last_good_view_through_errors() {
    let (s, out) = State::Serving(view(1)).step(Err("broken".into()));
    assert_eq!(out, vec![error("broken")]);
    // The same error again is not repeated; a different one is.
    let (s, out) = s.step(Err("broken".into()));
    assert_eq!(out, vec![]);
    let (s, out) = s.step(Err("missing".into()));
    assert_eq!(out, vec![error("missing")]);
    assert_eq!(s, State::Stale(view(1), "missing".into()));
    // Fixed back to the last good content: healthy again, nothing to reset.
    let (s, out) = s.clone().step(Ok(view(1)));
    assert_eq!(out, vec![healthy()]);
    assert_eq!(s, State::Serving(view(1)));
    // Fixed to new content: a reset.
    let (_, out) = State::Stale(view(1), "x".into()).step(Ok(view(2)));
    assert_eq!(out, vec![Change::Reset(view(2)), healthy()]);
}

#[test]
fn step_from_a_failed_start() {
    let (s, out) = State::Starting.step(Err("missing".into()));
    assert_eq!(out, vec![error("missing")]);
    let (s, out) = s.step(Err("missing".into()));
    assert_eq!(out, vec![]);
    let (_, out) = s.step(Ok(view(1)));
    assert_eq!(out, vec![Change::Reset(view(1)), healthy()]);
}

// ---- against a real directory ------------------------------------------------

/// How long any one expected change may take to arrive.
const DEADLINE: Duration = Duration::from_secs(10);

/// A poll interval long enough that only `notify` can explain a change.
const NO_POLL: Duration = Duration::from_secs(3600);

fn services(port: u16) -> String {
    format!("services:\n  - name: reviews\n    endpoints:\n      - address: 127.0.0.1\n        port: {port}\n")
}

struct Running {
    rx: mpsc::Receiver<SourcedChange>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(registry: FileRegistry) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let sink = ChangeSink::new(registry.source().clone(), tx);
        let task = tokio::spawn(async move { registry.run(sink).await });
        Self { rx, task }
    }

    async fn next(&mut self) -> Change {
        match timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(c)) => c.change,
            Ok(None) => panic!("the registry stopped"),
            Err(_) => panic!("no change within {DEADLINE:?}"),
        }
    }

    /// The next change must be a Reset (followed by Healthy); returns the
    /// endpoint ports it holds.
    async fn expect_reset(&mut self) -> Vec<u16> {
        let ports = match self.next().await {
            Change::Reset(view) => view
                .endpoints
                .iter()
                .flat_map(|e| e.ports.iter().map(|p| p.number))
                .collect(),
            other => panic!("want a Reset, got {other:?}"),
        };
        assert_eq!(self.next().await, healthy());
        ports
    }

    async fn expect_error(&mut self) -> String {
        match self.next().await {
            Change::Status(SourceStatus::Error { message }) => message,
            other => panic!("want an Error status, got {other:?}"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn registry(path: &Path) -> FileRegistry {
    FileRegistry::new(SourceId::new("file"), path.to_path_buf()).with_poll_interval(NO_POLL)
}

/// Replaces `path` the way editors do: write a temporary file, rename it over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn follows_edits_errors_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, services(1001)).unwrap();
    let mut run = Running::start(registry(&path));
    assert_eq!(run.expect_reset().await, vec![1001]);

    // In-place write.
    std::fs::write(&path, services(1002)).unwrap();
    assert_eq!(run.expect_reset().await, vec![1002]);

    // Write a temporary file and rename it over.
    replace(&path, &services(1003));
    assert_eq!(run.expect_reset().await, vec![1003]);

    // Rewriting the same content sends nothing: the next change is the
    // one after it.
    std::fs::write(&path, services(1003)).unwrap();
    replace(&path, &services(1004));
    assert_eq!(run.expect_reset().await, vec![1004]);

    // A broken file: an error naming file, position and field; no Reset.
    std::fs::write(&path, services(0)).unwrap();
    let message = run.expect_error().await;
    assert_eq!(
        message,
        format!(
            "{}:5:15: services[0].endpoints[0].port: must be 1..=65535, got 0",
            path.display()
        )
    );
    // Fixed: Reset and Healthy again.
    std::fs::write(&path, services(1005)).unwrap();
    assert_eq!(run.expect_reset().await, vec![1005]);

    // Deleted: an error, and no empty Reset (the next change after
    // re-creating the file is its Reset).
    std::fs::remove_file(&path).unwrap();
    let message = run.expect_error().await;
    assert!(message.contains("cannot read"), "{message}");
    replace(&path, &services(1006));
    assert_eq!(run.expect_reset().await, vec![1006]);
}

#[tokio::test]
async fn broken_then_restored_to_last_good_sends_only_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, services(2001)).unwrap();
    let mut run = Running::start(registry(&path));
    assert_eq!(run.expect_reset().await, vec![2001]);
    replace(&path, "services: [\n");
    let message = run.expect_error().await;
    assert!(
        message.contains(":2:1: did not find expected node content"),
        "{message}"
    );
    replace(&path, &services(2001));
    assert_eq!(run.next().await, healthy());
}

#[tokio::test]
async fn missing_at_start_then_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    let mut run = Running::start(registry(&path));
    let message = run.expect_error().await;
    assert!(
        message.starts_with(&format!("{}: cannot read", path.display())),
        "{message}"
    );
    replace(&path, &services(3001));
    assert_eq!(run.expect_reset().await, vec![3001]);
}

/// A Kubernetes ConfigMap volume: `services.yaml -> ..data/services.yaml`,
/// `..data -> ..v1`, updated by renaming a new `..data` symlink over the old.
#[cfg(unix)]
#[tokio::test]
async fn follows_configmap_symlink_swaps() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (v, port) in [("..v1", 4001), ("..v2", 4002)] {
        std::fs::create_dir(d.join(v)).unwrap();
        std::fs::write(d.join(v).join("services.yaml"), services(port)).unwrap();
    }
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/services.yaml", d.join("services.yaml")).unwrap();
    let mut run = Running::start(registry(&d.join("services.yaml")));
    assert_eq!(run.expect_reset().await, vec![4001]);
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert_eq!(run.expect_reset().await, vec![4002]);
}

#[tokio::test]
async fn polling_alone_sees_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, services(5001)).unwrap();
    let registry = registry(&path)
        .without_notify()
        .with_poll_interval(Duration::from_millis(20));
    let mut run = Running::start(registry);
    assert_eq!(run.expect_reset().await, vec![5001]);
    // Longer content, so the stamp differs even on coarse-mtime filesystems.
    std::fs::write(&path, services(50002)).unwrap();
    assert_eq!(run.expect_reset().await, vec![50002]);
    std::fs::remove_file(&path).unwrap();
    run.expect_error().await;
}

#[tokio::test]
async fn returns_when_the_catalog_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, services(6001)).unwrap();
    let (tx, rx) = mpsc::channel(16);
    drop(rx);
    let registry = registry(&path);
    let sink = ChangeSink::new(registry.source().clone(), tx);
    timeout(DEADLINE, registry.run(sink))
        .await
        .expect("run returns once the sink is closed");
}

/// A fix that leaves modification time and length as they were is still seen
/// by polling, because a failing file is re-read at every poll.
#[tokio::test]
async fn polling_rereads_a_failing_file_even_with_an_unchanged_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, services(50001)).unwrap();
    let registry = registry(&path)
        .without_notify()
        .with_poll_interval(Duration::from_millis(20));
    let mut run = Running::start(registry);
    assert_eq!(run.expect_reset().await, vec![50001]);

    // Same length, not a number: broken.
    let broken = services(50001).replace("50001", "5000x");
    std::fs::write(&path, &broken).unwrap();
    run.expect_error().await;

    // Fixed with the broken file's length and modification time.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, services(50002)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(super::Stamp::of(&path).unwrap().modified, Some(mtime));
    assert_eq!(run.expect_reset().await, vec![50002]);
}
