//! The file credential source: loads at start with errors naming the file,
//! reloads on change (in place, atomic rename, Kubernetes-style symlink
//! swap), keeps the credentials in force when the new files are bad.

mod tls_pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anymesh_identity::files::{FileError, FileSource};
use anymesh_identity::{Identity, SpiffeId};
use tls_pki::{Ca, Leaf};
use tokio::sync::watch;
use tokio::time::Instant;

const TD: &str = "cluster.local";

fn id(sa: &str) -> SpiffeId {
    SpiffeId::for_account(TD, "shop", sa).expect("id")
}

/// Writes `data` to `path` by a rename, as a careful PKI agent does.
fn put(path: &Path, data: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn write_set(dir: &Path, leaf: &Leaf, ca: &Ca) -> FileSource {
    let source = FileSource::new(
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    put(&source.cert, &leaf.pem);
    put(&source.key, &leaf.key_pem);
    put(&source.bundle, &ca.pem);
    source
}

/// Polls `check` until it holds, for at most five seconds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn load_errors_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(TD);
    let source = write_set(dir.path(), &ca.svid("shop", "a"), &ca);
    assert_eq!(source.load().expect("loads").id, id("a"));

    std::fs::remove_file(&source.bundle).expect("rm");
    let err = source.load().expect_err("missing bundle");
    assert!(
        matches!(&err, FileError::Read { path, .. } if *path == source.bundle),
        "{err}"
    );
    assert!(err.to_string().contains("ca.pem: cannot read"), "{err}");

    put(&source.bundle, &ca.pem);
    put(&source.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let err = source.load().expect_err("garbage cert");
    assert!(
        matches!(&err, FileError::Invalid { path, .. } if *path == source.cert),
        "{err}"
    );

    // A certificate and the key of another.
    put(&source.cert, &ca.svid("shop", "b").pem);
    let err = source.load().expect_err("key mismatch");
    assert!(
        matches!(&err, FileError::Invalid { path, .. } if *path == source.key),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");

    let identity = Identity::new();
    assert!(source.start(&identity).is_err());
    assert!(identity.current().is_none());
}

#[tokio::test]
async fn a_watched_file_set_reloads_and_a_bad_one_is_kept_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(TD);
    let source = write_set(dir.path(), &ca.svid("shop", "a"), &ca);
    let identity = Arc::new(Identity::new());
    source.start(&identity).expect("start");
    let mut versions = identity.subscribe();
    versions.mark_unchanged();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(source.clone().watch(
        identity.clone(),
        Duration::from_millis(20),
        stop,
    ));

    // A rotation by atomic renames.
    write_set(dir.path(), &ca.svid("shop", "b"), &ca);
    until("b in force", || {
        identity.current().is_some_and(|c| c.id == id("b"))
    })
    .await;
    assert!(identity.last_error().is_none());

    // Garbage in place of the certificate: b stays, the error is visible.
    std::fs::write(&source.cert, "half a certificate").expect("write");
    until("the error", || identity.last_error().is_some()).await;
    let err = identity.last_error().expect("error");
    assert!(err.contains("cert.pem"), "{err}");
    assert_eq!(identity.current().expect("creds").id, id("b"));

    // A certificate with another's key: kept out too, the key named.
    let c = ca.svid("shop", "c");
    put(&source.cert, &c.pem);
    until("the mismatch", || {
        identity
            .last_error()
            .is_some_and(|e| e.contains("key.pem") && e.contains("does not match"))
    })
    .await;
    assert_eq!(identity.current().expect("creds").id, id("b"));

    // The matching key arrives: c is installed and the error cleared.
    put(&source.key, &c.key_pem);
    until("c in force", || {
        identity.current().is_some_and(|k| k.id == id("c"))
    })
    .await;
    assert!(identity.last_error().is_none());

    // A bad write undone: the error goes, c stays, nothing reinstalled.
    let installs = *versions.borrow_and_update();
    std::fs::write(&source.cert, "").expect("truncate");
    until("the error", || identity.last_error().is_some()).await;
    put(&source.cert, &c.pem);
    until("the error cleared", || identity.last_error().is_none()).await;
    assert_eq!(identity.current().expect("creds").id, id("c"));
    assert_eq!(*versions.borrow_and_update(), installs);

    // Stopping ends the task.
    stop_tx.send(true).expect("send");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watch stops")
        .expect("no panic");
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_is_seen() {
    // The files are symlinks through `..data`, itself a symlink to a
    // timestamped directory that the kubelet swaps whole.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let ca = Ca::new(TD);
    let version = |name: &str, leaf: &Leaf| -> PathBuf {
        let v = root.join(name);
        std::fs::create_dir(&v).expect("mkdir");
        write_set(&v, leaf, &ca);
        v
    };
    let first = version("..2026_01_01", &ca.svid("shop", "a"));
    std::os::unix::fs::symlink(&first, root.join("..data")).expect("symlink");
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::os::unix::fs::symlink(Path::new("..data").join(f), root.join(f)).expect("symlink");
    }
    let source = FileSource::new(
        root.join("cert.pem"),
        root.join("key.pem"),
        root.join("ca.pem"),
    );
    let identity = Arc::new(Identity::new());
    source.start(&identity).expect("start");
    let (_stop_tx, stop) = watch::channel(false);
    tokio::spawn(source.watch(identity.clone(), Duration::from_millis(20), stop));

    let second = version("..2026_01_02", &ca.svid("shop", "b"));
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(&second, &tmp).expect("symlink");
    std::fs::rename(&tmp, root.join("..data")).expect("swap");
    std::fs::remove_dir_all(&first).expect("rm old");
    until("b in force", || {
        identity.current().is_some_and(|c| c.id == id("b"))
    })
    .await;
    assert!(identity.last_error().is_none());
}

#[tokio::test]
async fn each_new_set_is_installed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(TD);
    let source = write_set(dir.path(), &ca.svid("shop", "a"), &ca);
    let identity = Arc::new(Identity::new());
    source.start(&identity).expect("start");
    let mut versions = identity.subscribe();
    let start = *versions.borrow_and_update();
    let (_stop_tx, stop) = watch::channel(false);
    tokio::spawn(
        source
            .clone()
            .watch(identity.clone(), Duration::from_millis(10), stop),
    );
    // The watch's first look finds the set start installed: not again. Each
    // new set is installed once, however often its files are rewritten.
    for (n, sa) in ["b", "c", "d"].into_iter().enumerate() {
        let leaf = ca.svid("shop", sa);
        write_set(dir.path(), &leaf, &ca);
        put(&source.cert, &leaf.pem);
        until(sa, || identity.current().is_some_and(|c| c.id == id(sa))).await;
        assert_eq!(*versions.borrow_and_update(), start + n as u64 + 1, "{sa}");
    }
}
