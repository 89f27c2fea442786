//! HTTP/2 conformance in h2spec's classes (frame sizes, SETTINGS, flow
//! control, stream states, HPACK, CONTINUATION, RST_STREAM, GOAWAY,
//! PRIORITY, PING, malformed requests), driven by an independent
//! implementation: the Python `h2` package and its `hyperframe` and `hpack`
//! (tests/h2spec/conformance.py), installed when missing into a virtual
//! environment under target/ (never the system's site-packages).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// A Python with the packages of tests/h2spec/requirements.txt, in a
/// virtual environment under target/, made on first use.
fn python_with_h2() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("h2spec-venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import h2, hpack, hyperframe"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    // Made aside and moved into place: a test run that stops halfway, or
    // another one running at the same time, leaves no half-made environment.
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .status()
        .expect("python3 runs (the conformance cases need Python 3 with venv)");
    assert!(made.success(), "python3 -m venv failed");
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2spec/requirements.txt");
    let installed = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("pip runs");
    assert!(
        installed.success(),
        "pip install -r {requirements:?} failed"
    );
    if std::fs::rename(&building, &venv).is_err() {
        // Another run made it first.
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(ready(&python), "h2 importable from {venv:?}");
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_http2_implementation_finds_the_answers_rfc_9113_asks_for() {
    let ups = upstreams(&["a"]).await;
    let mesh = TestMesh::start(&services("web", "http", &[endpoint(&ups[0], "")]), "").await;
    let addr = mesh.proxy().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let python = python_with_h2();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2spec/conformance.py");
        Command::new(python)
            .arg(script)
            .arg(addr)
            .output()
            .expect("the conformance script runs")
    })
    .await
    .expect("no panic");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conformance.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert!(cases.len() > 60, "only {} cases ran", cases.len());
    // The whole table first, so one run shows every answer.
    for c in &cases {
        eprintln!(
            "{} {:<75} expected {} got {}",
            if c["ok"].as_bool() == Some(true) {
                "ok  "
            } else {
                "FAIL"
            },
            c["case"].as_str().unwrap_or("?"),
            c["expected"],
            c["got"]
        );
    }
    for c in &cases {
        assert!(
            c["ok"].as_bool() == Some(true),
            "case {}: expected one of {}, got {}",
            c["case"],
            c["expected"],
            c["got"]
        );
    }
}
