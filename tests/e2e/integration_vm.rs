//! `integration/vm/`: the example configuration passes `anymesh check`, and
//! the systemd unit is hardened and passes `systemd-analyze verify` (where
//! systemd is installed).

use std::path::{Path, PathBuf};
use std::process::Command;

fn vm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/vm")
}

#[test]
fn vm_example_configuration_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_anymesh"))
        .arg("check")
        .arg("-c")
        .arg(vm_dir().join("anymesh.yaml"))
        .output()
        .expect("run anymesh check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("\n0 errors"), "{stdout}");
    assert!(
        stdout.contains("registry consul (consul http://127.0.0.1:8500"),
        "{stdout}"
    );
    assert!(
        stdout.contains("registry static (file") && stdout.contains("1 services, 1 endpoints"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 VirtualServices, 1 DestinationRules"),
        "{stdout}"
    );
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(vm_dir().join("anymesh.service")).expect("unit file");
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=anymesh",
        "ExecStartPre=/usr/local/bin/anymesh check -c /etc/anymesh/anymesh.yaml",
        "ExecStart=/usr/local/bin/anymesh proxy -c /etc/anymesh/anymesh.yaml",
        "Restart=always",
        "CapabilityBoundingSet=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive:?}");
    }
    // The example's state_dir is the unit's StateDirectory.
    let config = std::fs::read_to_string(vm_dir().join("anymesh.yaml")).expect("config");
    assert!(config.contains("state_dir: /var/lib/anymesh"));

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed here: unit verification skipped");
        return;
    }
    // verify checks that the executables exist: point the unit at the built binary.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("anymesh.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/anymesh", env!("CARGO_BIN_EXE_anymesh")),
    )
    .expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("anymesh.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
