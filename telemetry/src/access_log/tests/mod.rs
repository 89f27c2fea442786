//! Tests of the access log: formats against golden lines, escaping, the
//! filter and configuration, the writer (queue, errors, reopen, SIGHUP,
//! rotation).

mod filter;
mod format;
mod writer;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::AccessRecord;

/// 2024-01-02T03:04:05.678Z
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_704_164_645_678)
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().expect("a test address"))
}

/// Every field set, with the values of a real outbound failure.
fn full() -> AccessRecord<'static> {
    AccessRecord {
        start_time: start(),
        method: Some("GET"),
        path: Some("/api/orders?id=7"),
        protocol: Some("HTTP/1.1"),
        response_code: 503,
        response_flags: "UF,URX",
        response_code_details: Some("upstream_reset_before_response_started{connection_failure}"),
        connection_termination_details: Some("downstream_closed"),
        upstream_transport_failure_reason: Some("connection refused"),
        bytes_received: 12,
        bytes_sent: 91,
        duration_ms: 30_004,
        upstream_service_time_ms: Some(30_001),
        x_forwarded_for: Some("10.0.0.1, 10.0.0.2"),
        user_agent: Some("curl/8.5.0"),
        request_id: Some("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
        authority: Some("orders.prod.svc.cluster.local:8080"),
        upstream_host: addr("10.244.3.12:8080"),
        upstream_cluster: Some("outbound|8080||orders.prod.svc.cluster.local"),
        upstream_local_address: addr("10.244.1.5:54321"),
        downstream_local_address: addr("10.96.45.67:8080"),
        downstream_remote_address: addr("[fd00::5]:33210"),
        requested_server_name: Some("outbound_.8080_._.orders.prod.svc.cluster.local"),
        route_name: Some("default"),
    }
}

/// A `Write` the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).expect("the log is UTF-8")
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Polls `done` until it holds, failing the test after ten seconds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "anymesh-access-log-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
