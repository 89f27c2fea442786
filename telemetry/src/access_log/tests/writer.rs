//! The writer: lines reach the sink, a stuck sink makes the queue drop and
//! count, errors are counted and retried, the file reopens and rotates.

use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc;

use super::{full, start, wait_until, Captured, TempDir};
use crate::access_log::{
    AccessLog, AccessLogConfig, AccessLogFilter, AccessLogFormat, AccessRecord, LogOutcome,
    StatusClass,
};

fn config(format: AccessLogFormat) -> AccessLogConfig {
    AccessLogConfig {
        format,
        ..AccessLogConfig::default()
    }
}

/// A record whose line is as long as any other's: the request id tells
/// them apart (`r1` … `r9`).
fn numbered(ids: &[String], i: usize) -> AccessRecord<'_> {
    let mut r = AccessRecord::new(start());
    r.response_code = 200;
    r.request_id = Some(&ids[i]);
    r
}

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("r{i}")).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The request ids of the lines of `text`, in order.
fn ids_in(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split('"')
                .nth(9)
                .expect("the request id field")
                .to_string()
        })
        .collect()
}

#[test]
fn lines_reach_the_writer_in_order() {
    let out = Captured::default();
    let (log, handle) =
        AccessLog::with_writer(config(AccessLogFormat::Json), Box::new(out.clone()))
            .expect("start");
    let ids = ids(50);
    for i in 0..50 {
        assert_eq!(log.log(&numbered(&ids, i)), LogOutcome::Queued);
    }
    let stats = handle.shutdown();
    assert_eq!(
        (stats.written, stats.dropped, stats.write_errors),
        (50, 0, 0)
    );
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50);
    for (i, line) in lines.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(
            value["request_id"],
            serde_json::Value::from(format!("r{}", i + 1))
        );
    }
    // After the shutdown nothing is queued any more.
    assert_eq!(log.log(&full()), LogOutcome::Dropped);
    assert_eq!(log.stats().dropped, 1);
}

#[test]
fn the_filter_applies_before_anything_is_queued() {
    let out = Captured::default();
    let config = AccessLogConfig {
        filter: AccessLogFilter {
            status: vec![StatusClass::ServerError],
            sample_percent: 50.0,
        },
        ..config(AccessLogFormat::Envoy)
    };
    let (log, handle) = AccessLog::with_writer(config, Box::new(out.clone())).expect("start");
    let mut ok = full();
    ok.response_code = 200;
    assert_eq!(log.log_with_random(&ok, 0), LogOutcome::Filtered);
    assert_eq!(log.log_with_random(&full(), 999_999), LogOutcome::Filtered);
    assert_eq!(log.log_with_random(&full(), 0), LogOutcome::Queued);
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.dropped), (1, 0));
    assert_eq!(out.text().lines().count(), 1);
}

/// A writer that blocks in its first write until the test releases it.
struct Stuck {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
    released: bool,
    out: Captured,
}

impl Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.released {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            self.released = true;
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stuck_writer_makes_the_queue_drop_and_count() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let out = Captured::default();
    let writer = Stuck {
        entered: entered_tx,
        release: release_rx,
        released: false,
        out: out.clone(),
    };
    let config = AccessLogConfig {
        queue: 4,
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::with_writer(config, Box::new(writer)).expect("start");
    let ids = ids(9);
    assert_eq!(log.log(&numbered(&ids, 0)), LogOutcome::Queued);
    // The writer holds line 1 and is stuck writing it: the queue is empty.
    entered.recv().expect("the writer enters its first write");
    for i in 1..5 {
        assert_eq!(
            log.log(&numbered(&ids, i)),
            LogOutcome::Queued,
            "line {}",
            i + 1
        );
    }
    for i in 5..9 {
        assert_eq!(
            log.log(&numbered(&ids, i)),
            LogOutcome::Dropped,
            "line {}",
            i + 1
        );
    }
    let stats = log.stats();
    assert_eq!((stats.written, stats.dropped), (0, 4));

    release.send(()).expect("release the writer");
    wait_until("five lines written", || log.stats().written == 5);
    assert_eq!(ids_in(&out.text()), ["r1", "r2", "r3", "r4", "r5"]);
    // The queue has room again.
    assert_eq!(log.log(&numbered(&ids, 8)), LogOutcome::Queued);
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.dropped, stats.lost), (6, 4, 0));
}

#[test]
fn the_byte_bound_drops_too() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let writer = Stuck {
        entered: entered_tx,
        release: release_rx,
        released: false,
        out: Captured::default(),
    };
    let config = AccessLogConfig {
        queue_bytes: 64 << 10,
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::with_writer(config, Box::new(writer)).expect("start");
    let agent = "x".repeat(4000);
    let mut big = full();
    big.user_agent = Some(&agent);
    assert_eq!(log.log(&big), LogOutcome::Queued);
    entered.recv().expect("the writer is stuck");
    let mut line = Vec::new();
    AccessLogFormat::Text.write(&big, &mut line);
    let fit = (64 << 10) / line.len();
    for _ in 0..fit {
        assert_eq!(log.log(&big), LogOutcome::Queued);
    }
    assert_eq!(log.log(&big), LogOutcome::Dropped);
    release.send(()).expect("release");
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.dropped), (fit as u64 + 1, 1));
}

/// A writer whose first `fails` writes fail.
struct Flaky {
    fails: usize,
    out: Captured,
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fails > 0 {
            self.fails -= 1;
            return Err(io::Error::other("disk full"));
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_are_counted_and_the_next_line_is_tried() {
    let out = Captured::default();
    let writer = Flaky {
        fails: 2,
        out: out.clone(),
    };
    let (log, handle) =
        AccessLog::with_writer(config(AccessLogFormat::Text), Box::new(writer)).expect("start");
    let ids = ids(3);
    log.log(&numbered(&ids, 0));
    wait_until("the first error", || log.stats().write_errors == 1);
    log.log(&numbered(&ids, 1));
    wait_until("the second error", || log.stats().write_errors == 2);
    log.log(&numbered(&ids, 2));
    wait_until("a line written", || log.stats().written == 1);
    let stats = handle.shutdown();
    assert_eq!(
        (stats.written, stats.write_errors, stats.lost, stats.dropped),
        (1, 2, 2, 0)
    );
    assert_eq!(ids_in(&out.text()), ["r3"]);
}

#[test]
fn a_file_is_appended_to() {
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    std::fs::write(&path, "earlier line\n").expect("write");
    let config = AccessLogConfig {
        path: Some(path.clone()),
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    let ids = ids(2);
    log.log(&numbered(&ids, 0));
    log.log(&numbered(&ids, 1));
    handle.shutdown();
    let text = read(&path);
    assert!(text.starts_with("earlier line\n"));
    assert_eq!(text.lines().count(), 3);
    drop(log);
}

#[test]
fn a_bad_path_fails_at_start() {
    let dir = TempDir::new();
    let config = AccessLogConfig {
        path: Some(dir.path().join("missing-directory").join("access.log")),
        ..AccessLogConfig::default()
    };
    let error = AccessLog::new(config).err().expect("an error");
    assert!(error.to_string().contains("missing-directory"), "{error}");
}

#[test]
fn reopen_after_an_external_rename() {
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    let moved = dir.path().join("access.log.old");
    let config = AccessLogConfig {
        path: Some(path.clone()),
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    let ids = ids(3);
    log.log(&numbered(&ids, 0));
    wait_until("line 1 written", || log.stats().written == 1);
    std::fs::rename(&path, &moved).expect("rename, as logrotate does");
    // Without a reopen, lines follow the renamed file.
    log.log(&numbered(&ids, 1));
    wait_until("line 2 written", || log.stats().written == 2);
    log.reopen();
    log.log(&numbered(&ids, 2));
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.write_errors), (3, 0));
    assert_eq!(ids_in(&read(&moved)), ["r1", "r2"]);
    assert_eq!(ids_in(&read(&path)), ["r3"]);
}

#[test]
fn a_failed_reopen_is_counted_and_retried_with_the_next_line() {
    let dir = TempDir::new();
    let sub = dir.path().join("logs");
    std::fs::create_dir(&sub).expect("mkdir");
    let path = sub.join("access.log");
    let config = AccessLogConfig {
        path: Some(path.clone()),
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    std::fs::remove_dir_all(&sub).expect("remove the directory");
    log.reopen();
    wait_until("the failed reopen", || log.stats().write_errors == 1);
    let ids = ids(2);
    log.log(&numbered(&ids, 0));
    wait_until("the failed write", || log.stats().lost == 1);
    std::fs::create_dir(&sub).expect("mkdir again");
    log.log(&numbered(&ids, 1));
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.write_errors, stats.lost), (1, 2, 1));
    assert_eq!(ids_in(&read(&path)), ["r2"]);
}

/// SIGHUP to this test process: safe once `reopen_on_sighup` returned, since
/// tokio's handler is then installed (process-wide, for good), and nothing
/// else in this test binary reacts to SIGHUP.
#[tokio::test]
async fn sighup_reopens() {
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    let moved = dir.path().join("access.log.1");
    let config = AccessLogConfig {
        path: Some(path.clone()),
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    let reopener = tokio::spawn(log.reopen_on_sighup().expect("register for SIGHUP"));
    let ids = ids(2);
    log.log(&numbered(&ids, 0));
    wait_until("line 1 written", || log.stats().written == 1);
    std::fs::rename(&path, &moved).expect("rename");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reopen after SIGHUP"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    log.log(&numbered(&ids, 1));
    reopener.abort();
    drop(log);
    handle.shutdown();
    assert_eq!(ids_in(&read(&moved)), ["r1"]);
    assert_eq!(ids_in(&read(&path)), ["r2"]);
}

#[test]
fn size_rotation_keeps_n_files() {
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    let ids = ids(7);
    let mut one = Vec::new();
    AccessLogFormat::Text.write(&numbered(&ids, 0), &mut one);
    let config = AccessLogConfig {
        path: Some(path.clone()),
        // Two lines fit, a third does not.
        max_size: Some(one.len() as u64 * 5 / 2),
        keep: 2,
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    // Logged one by one and all at once: rotation is between lines either way.
    for i in 0..3 {
        log.log(&numbered(&ids, i));
        wait_until("written", || log.stats().written == i as u64 + 1);
    }
    for i in 3..7 {
        log.log(&numbered(&ids, i));
    }
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.write_errors), (7, 0));
    let rotated = |i: u32| dir.path().join(format!("access.log.{i}"));
    assert_eq!(ids_in(&read(&path)), ["r7"]);
    assert_eq!(ids_in(&read(&rotated(1))), ["r5", "r6"]);
    assert_eq!(ids_in(&read(&rotated(2))), ["r3", "r4"]);
    assert!(!rotated(3).exists(), "only two rotated files are kept");
}

#[test]
fn rotation_counts_what_the_file_had_and_keep_zero_starts_over() {
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    let ids = ids(3);
    let mut one = Vec::new();
    AccessLogFormat::Text.write(&numbered(&ids, 0), &mut one);
    std::fs::write(&path, &one).expect("an earlier line");
    let config = AccessLogConfig {
        path: Some(path.clone()),
        max_size: Some(one.len() as u64 * 2),
        keep: 0,
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    for i in 1..3 {
        log.log(&numbered(&ids, i));
    }
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.write_errors), (2, 0));
    // The earlier line and r2 filled the file; r3 started a new one.
    assert_eq!(ids_in(&read(&path)), ["r3"]);
    assert!(!dir.path().join("access.log.1").exists());
}

#[test]
fn a_line_longer_than_max_size_gets_a_file_of_its_own() {
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    let config = AccessLogConfig {
        path: Some(path.clone()),
        max_size: Some(10),
        keep: 3,
        ..config(AccessLogFormat::Text)
    };
    let (log, handle) = AccessLog::new(config).expect("start");
    let ids = ids(3);
    for i in 0..3 {
        log.log(&numbered(&ids, i));
    }
    let stats = handle.shutdown();
    assert_eq!((stats.written, stats.write_errors), (3, 0));
    assert_eq!(ids_in(&read(&path)), ["r3"]);
    assert_eq!(ids_in(&read(&dir.path().join("access.log.1"))), ["r2"]);
    assert_eq!(ids_in(&read(&dir.path().join("access.log.2"))), ["r1"]);
}

#[test]
fn the_writer_stops_when_the_last_clone_is_dropped() {
    let out = Captured::default();
    let (log, handle) =
        AccessLog::with_writer(config(AccessLogFormat::Text), Box::new(out.clone()))
            .expect("start");
    let clone = log.clone();
    clone.log(&full());
    drop(log);
    drop(clone);
    // shutdown would stop it anyway; what matters is that the queued line
    // was written and the thread ended.
    let stats = handle.shutdown();
    assert_eq!(stats.written, 1);
    assert_eq!(out.text().lines().count(), 1);
}

/// With a flush interval far longer than the test, lines are written once
/// [`FLUSH_BYTES`](crate::access_log::FLUSH_BYTES) of them wait (one wake
/// of the writer for many lines), and the rest at shutdown.
#[test]
fn a_full_enough_queue_is_written_before_the_flush_interval() {
    let out = Captured::default();
    let config = AccessLogConfig {
        flush_interval: std::time::Duration::from_secs(60),
        ..config(AccessLogFormat::Json)
    };
    let (log, handle) = AccessLog::with_writer(config, Box::new(out.clone())).expect("start");
    let line_len = {
        let mut probe = Vec::new();
        AccessLogFormat::Json.write(&full(), &mut probe);
        probe.len()
    };
    let n = crate::access_log::FLUSH_BYTES / line_len + 1;
    for _ in 0..n {
        assert_eq!(log.log(&full()), LogOutcome::Queued);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.stats().written < n as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} lines past FLUSH_BYTES were not written within 20 s (flush interval 60 s): {:?}",
            log.stats()
        );
        std::thread::yield_now();
    }
    // One more line waits for the interval; the shutdown writes it.
    assert_eq!(log.log(&full()), LogOutcome::Queued);
    let stats = handle.shutdown();
    assert_eq!(stats.written, n as u64 + 1);
    assert_eq!(out.text().lines().count(), n + 1);
}
