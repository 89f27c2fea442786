//! Lays out the release binary's code so that the functions run while starting
//! and serving requests sit together at the front of `.text`
//! (`link/symbol-order.txt`, written by `bench/order-symbols`).
//!
//! Linux maps a binary's code a page-cache folio at a time; scattered over 15 MB
//! of code, start-up alone used to map about 8 MB of it. Grouped, the same code
//! fits in a few folios (docs/performance.md, "Idle RSS").
//!
//! The ordering is an option of LLD, which rustc uses by default on
//! x86_64-unknown-linux-gnu since Rust 1.90. Anything else (another target, an
//! older rustc, a linker chosen by the user) builds without it, as does
//! `ANYMESH_SYMBOL_ORDER=0`. A listed function the binary no longer has is
//! skipped, so a stale list costs memory, never a build.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "link/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ANYMESH_SYMBOL_ORDER");
    if !wanted() {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let file = Path::new(&manifest).join(ORDER_FILE);
    if !file.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=anymesh=-Wl,--symbol-ordering-file={}",
        file.display()
    );
    println!("cargo:rustc-link-arg-bin=anymesh=-Wl,--no-warn-symbol-ordering");
}

/// Whether this build links with rustc's default LLD and wants the ordering.
fn wanted() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("ANYMESH_SYMBOL_ORDER") == "0"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
    {
        return false;
    }
    // A linker or linker flavour chosen by the user may not be LLD.
    if env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the compiler building this crate (`1.MINOR.patch`).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}
